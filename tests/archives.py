"""Build X archives for tests from the real sample export (`conftest.ARCHIVE_SAMPLE`).

Every builder starts from the sample's own `data/tweets.js` and `data/manifest.js`, so the tweets
are real; variants rearrange them the way real exports differ:

    build_archive_zip(tmp_path)                          # data/tweets.js + data/manifest.js
    build_archive_zip(tmp_path, top_folder="twitter-2023-07-02-abc")
    build_archive_dir(tmp_path, split=True)              # tweets-part1.js, tweets-part2.js
    build_archive_dir(tmp_path, old_names=True)          # tweet.js (older exports)
    build_archive_dir(tmp_path, account_js=True, manifest=False, note_tweet=True)

`archive_files(**variants)` gives the files themselves ({name: bytes}) for building anything else;
`build_zip_slip`, `build_not_archive_zip`, `build_malformed_archive` and `build_lying_zip` build the
broken ones.
"""

from __future__ import annotations

import json
import re
import struct
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.conftest import ARCHIVE_SAMPLE

SAMPLE_TWEETS_JS = ARCHIVE_SAMPLE / "data" / "tweets.js"
SAMPLE_MANIFEST_JS = ARCHIVE_SAMPLE / "data" / "manifest.js"
TRUNCATION_LINK = "https://t.co/NoTeTw33t1"  # the t.co link X appends to a truncated long post


def parse_js(data: bytes | str) -> Any:
    """The JSON value of an archive file: everything after the first `=`."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    return json.loads(text.split("=", 1)[1])


def to_js(global_name: str, value: Any) -> bytes:
    """An archive file as X writes it: `window.<global_name> = <JSON>`."""
    return f"window.{global_name} = {json.dumps(value, indent=2, ensure_ascii=False)}".encode()


def sample_entries() -> list[dict[str, Any]]:
    """The entries of the sample's tweets.js, `[{"tweet": {...}}, ...]`."""
    return parse_js(SAMPLE_TWEETS_JS.read_bytes())


def sample_tweets() -> list[dict[str, Any]]:
    return [entry["tweet"] for entry in sample_entries()]


def sample_user_name() -> str:
    return parse_js(SAMPLE_MANIFEST_JS.read_bytes())["userInfo"]["userName"]


@dataclass(frozen=True)
class NoteTweetCase:
    """The long post `note_tweet=True` makes: `tweet_id`'s tweets.js text is `truncated`, `full` is
    in note-tweet.js (with or without the reply's leading @mentions, per `note_mentions`)."""

    tweet_id: str
    full: str
    truncated: str
    note_text: str


def note_tweet_case(note_mentions: bool = True) -> NoteTweetCase:
    """The sample's longest reply, truncated as X truncates a post over 280 characters."""
    tweet = max(
        (t for t in sample_tweets() if t.get("in_reply_to_status_id_str") and t["full_text"].startswith("@")),
        key=lambda t: (len(t["full_text"]), t["id_str"]),
    )
    full: str = tweet["full_text"]
    cut = full[: len(full) // 2].rsplit(" ", 1)[0]
    rest = re.sub(r"^(?:@\w+\s+)+", "", full)  # without the leading @mentions
    return NoteTweetCase(
        tweet_id=tweet["id_str"],
        full=full,
        truncated=f"{cut}… {TRUNCATION_LINK}",
        note_text=full if note_mentions else rest,
    )


def _iso(created_at: str) -> str:
    stamp = datetime.strptime(created_at, "%a %b %d %H:%M:%S %z %Y")
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _with_note_tweet(entries: list[dict[str, Any]], case: NoteTweetCase) -> tuple[list[dict[str, Any]], bytes]:
    """tweets.js entries with `case`'s tweet truncated, and the note-tweet.js that completes it
    (plus a decoy note from the same second that must not match)."""
    out = json.loads(json.dumps(entries))
    tweet = next(e["tweet"] for e in out if e["tweet"]["id_str"] == case.tweet_id)
    start = len(case.truncated) - len(TRUNCATION_LINK)
    tweet["full_text"] = case.truncated
    tweet["display_text_range"] = ["0", str(start - 1)]  # the text up to the ellipsis
    tweet["entities"]["urls"].append(
        {
            "url": TRUNCATION_LINK,
            "expanded_url": f"https://twitter.com/i/web/status/{case.tweet_id}",
            "display_url": "twitter.com/i/web/status/1…",
            "indices": [str(start), str(len(case.truncated))],
        }
    )
    created = _iso(tweet["created_at"])
    notes = [
        {
            "noteTweet": {
                "noteTweetId": str(int(case.tweet_id) - 4242),
                "updatedAt": created,
                "core": {"styletags": [], "urls": [], "text": text, "mentions": [], "cashtags": [], "hashtags": []},
                "createdAt": created,
                "lifecycle": {"value": "1", "name": "Active", "originalName": "Active", "annotations": {}},
            }
        }
        for text in ("A different long post, written the same second. " * 8, case.note_text)
    ]
    return out, to_js("YTD.note_tweet.part0", notes)


def archive_files(
    *,
    split: bool = False,
    old_names: bool = False,
    manifest: bool = True,
    account_js: bool = False,
    note_tweet: bool = False,
    note_mentions: bool = True,
    top_folder: str | None = None,
) -> dict[str, bytes]:
    """The files of an archive built from the sample, by name inside the archive.

    split: the tweets divided into tweets-part1.js / tweets-part2.js (part1 and part2 globals);
    old_names: tweet.js (tweet-part1.js, ... when split) as older exports name them;
    manifest: include the sample's data/manifest.js; account_js: a data/account.js naming the
    manifest's userName; note_tweet: truncate one long reply and add note-tweet.js (see
    `note_tweet_case`); top_folder: put everything under that folder, as some zips do.
    """
    entries = sample_entries()
    files: dict[str, bytes] = {}
    stem = "tweet" if old_names else "tweets"
    if note_tweet:
        entries, files["data/note-tweet.js"] = _with_note_tweet(entries, note_tweet_case(note_mentions))
    if split:
        half = len(entries) // 2
        files[f"data/{stem}-part1.js"] = to_js(f"YTD.{stem}.part1", entries[:half])
        files[f"data/{stem}-part2.js"] = to_js(f"YTD.{stem}.part2", entries[half:])
    elif note_tweet or old_names:
        files[f"data/{stem}.js"] = to_js(f"YTD.{stem}.part0", entries)
    else:
        files["data/tweets.js"] = SAMPLE_TWEETS_JS.read_bytes()
    if manifest:
        files["data/manifest.js"] = SAMPLE_MANIFEST_JS.read_bytes()
    if account_js:
        user = parse_js(SAMPLE_MANIFEST_JS.read_bytes())["userInfo"]
        account = {
            "email": "someone@example.com",
            "createdVia": "web",
            "username": user["userName"],
            "accountId": user["accountId"],
            "createdAt": "2008-08-22T10:21:34.000Z",
            "accountDisplayName": user["displayName"],
        }
        files["data/account.js"] = to_js("YTD.account.part0", [{"account": account}])
    files["Your archive.html"] = b"<!DOCTYPE html><html><body>Your archive</body></html>"
    if top_folder:
        files = {f"{top_folder}/{name}": data for name, data in files.items()}
    return files


def write_zip(dest: Path, files: dict[str, bytes]) -> Path:
    """A zip at `dest` holding `files` as they are named (nothing is checked)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return dest


def write_folder(dest: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return dest


def build_archive_zip(dest: Path, name: str = "twitter-archive.zip", **variants: Any) -> Path:
    """A zip archive in the folder `dest`, built from the sample; `variants` as `archive_files`."""
    return write_zip(dest / name, archive_files(**variants))


def build_archive_dir(dest: Path, name: str = "twitter-archive", **variants: Any) -> Path:
    """An extracted archive folder (holding `data/`) in `dest`; `variants` as `archive_files`."""
    return write_folder(dest / name, archive_files(**variants))


def build_zip_slip(dest: Path) -> Path:
    """A real archive zip plus a member `../evil.js` that would land outside an extraction folder."""
    files = archive_files()
    files["../evil.js"] = b"window.evil = true"
    return write_zip(dest / "slip.zip", files)


def build_not_archive_zip(dest: Path) -> Path:
    """A zip of other things: no data/tweets.js in it."""
    files = {"notes.txt": b"hello\n", "photos/cat.jpg": b"\xff\xd8\xff\xe0 not really a jpeg", "tweets.js": b"[]"}
    return write_zip(dest / "not-an-archive.zip", files)


def build_malformed_archive(dest: Path) -> Path:
    """An extracted archive whose data/tweets.js lost a comma (the first one after `"retweeted": false`)."""
    text = SAMPLE_TWEETS_JS.read_text(encoding="utf-8")
    damaged = text.replace('"retweeted": false,', '"retweeted": false', 1)
    assert damaged != text, "the sample's tweets.js changed: pick another place to damage"
    files = archive_files()
    files["data/tweets.js"] = damaged.encode("utf-8")
    return write_folder(dest / "malformed-archive", files)


def build_lying_zip(dest: Path, member: str = "data/tweets.js", declared_size: int = 500) -> Path:
    """A real archive zip whose central directory says `member` unpacks to `declared_size` bytes
    (a zip bomb lies the same way about how big a member is)."""
    data = bytearray(build_archive_zip(dest, name="lying.zip").read_bytes())
    at = data.find(b"PK\x01\x02")  # central directory entries: size at +24, name length at +28
    while at >= 0:
        length = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46 : at + 46 + length] == member.encode():
            struct.pack_into("<I", data, at + 24, declared_size)
        at = data.find(b"PK\x01\x02", at + 4)
    path = dest / "lying.zip"
    path.write_bytes(bytes(data))
    return path
