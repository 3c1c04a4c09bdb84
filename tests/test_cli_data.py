"""The data commands through the real entry point (`python -m tweetlm`), in a temp TWEETLM_HOME."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.archives import (
    build_archive_zip,
    build_malformed_archive,
    build_not_archive_zip,
    build_zip_slip,
    sample_tweets,
)
from tests.conftest import OBAMA_CSV, store_digest, tweetlm
from tweetlm.curate import QUOTED_RE, CurateConfig, clean_text, word_count
from tweetlm.store import Store


@pytest.mark.shared
def test_obama_csv_import_curate_and_reimport() -> None:
    first = tweetlm("import", OBAMA_CSV, "--account", "BarackObama")
    assert first.returncode == 0, first.stderr
    assert "3207 new" in first.stdout
    curated = tweetlm("curate", "BarackObama")
    assert curated.returncode == 0, curated.stderr
    rows = {
        line.split("│")[1].strip(): int(line.split("│")[2])
        for line in curated.stdout.splitlines()
        if line.count("│") >= 4 and line.split("│")[2].strip().isdigit()
    }
    assert rows["posts downloaded"] == 3207
    # Retweets: "RT @x: ..." posts, and manual retweets with nothing of the person's own before "RT @x".
    manual = [t for t in _csv_texts() if not t.startswith("RT @") and QUOTED_RE.search(t)]
    bare = sum(1 for t in manual if not word_count(clean_text(t, CurateConfig())))
    assert len(manual) >= bare > 0
    assert rows["retweets"] == sum(1 for _ in _csv_texts() if _.startswith("RT @")) + bare
    dropped = sum(v for k, v in rows.items() if k not in ("posts downloaded", "kept for training"))
    assert rows["kept for training"] + dropped == 3207
    again = tweetlm("import", OBAMA_CSV, "--account", "BarackObama")
    assert "0 new, 3207 already in the store" in again.stdout
    listing = tweetlm("accounts")
    assert "BarackObama" in listing.stdout and "3207" in listing.stdout
    with Store() as store:
        dataset = store.dataset("BarackObama")
        assert dataset is not None and len(dataset.posts) == rows["kept for training"]
        assert not any("&amp;" in t or "‰Û" in t or "http" in t for t in dataset.texts)


def _csv_texts() -> list[str]:
    import csv
    import io

    raw = OBAMA_CSV.read_bytes().decode("mac_roman")
    return [row["text"] for row in csv.DictReader(io.StringIO(raw, newline=""))]


@pytest.mark.shared
def test_archive_zip_imports_28_posts_with_kinds(tmp_path: Path) -> None:
    archive = build_archive_zip(tmp_path)
    out = tweetlm("import", archive)
    assert out.returncode == 0, out.stderr
    assert "imported 28 posts of darkliquid" in out.stdout
    tweets = sample_tweets()
    with Store() as store:
        kinds = [p.kind.value for p in store.iter_posts("darkliquid")]
    assert kinds.count("retweet") == sum(t["full_text"].startswith("RT @") for t in tweets) == 1
    assert kinds.count("reply") == sum(bool(t.get("in_reply_to_status_id_str")) for t in tweets)
    show = tweetlm("show", "darkliquid", "-n", "3")
    assert show.returncode == 0 and "reply" in show.stdout


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str | Path], str]]:
    binary_csv = tmp / "binary.csv"
    binary_csv.write_bytes(b"text,id\n\x00\x01\xff\xfe garbage\n")
    no_text = tmp / "no_text.csv"
    no_text.write_text("when,who,body\n2020-01-01,me,hello there\n", encoding="utf-8")
    return {
        "missing path": (["import", tmp / "nope.zip"], "does not exist"),
        "not an X archive": (["import", build_not_archive_zip(tmp)], "not an X archive"),
        "zip slip": (["import", build_zip_slip(tmp)], ".."),
        "malformed JS": (["import", build_malformed_archive(tmp)], "tweets.js"),
        "member over the size limit": (["import", build_archive_zip(tmp / "big"), "--max-size", "0.01"], "bytes"),
        "file over the size limit": (["import", no_text, "--max-size", "0.00001"], "--max-size"),
        "non-UTF-8 CSV": (["import", binary_csv], "not a UTF-8 text CSV"),
        "CSV without a text column": (["import", no_text], "'when', 'who', 'body'"),
        "unknown account": (["curate", "nobody"], "no posts for account 'nobody'"),
    }


@pytest.mark.shared
@pytest.mark.parametrize(
    "case",
    [
        "missing path",
        "not an X archive",
        "zip slip",
        "malformed JS",
        "member over the size limit",
        "file over the size limit",
        "non-UTF-8 CSV",
        "CSV without a text column",
        "unknown account",
    ],
)
def test_bad_input_is_one_line_nonzero_and_leaves_the_store_untouched(case: str, tmp_path: Path) -> None:
    assert tweetlm("import", OBAMA_CSV, "--account", "BarackObama").returncode == 0
    before = store_digest()
    args, expected = _bad_inputs(tmp_path)[case]
    out = tweetlm(*args)
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert expected in lines[0]
    assert "Traceback" not in out.stderr
    assert store_digest() == before
    assert not list(tmp_path.parent.glob("evil*"))  # zip slip wrote nothing outside


def test_nothing_left_after_curation_names_the_rule(tmp_path: Path) -> None:
    posts = tmp_path / "short.txt"
    posts.write_text("ok then\nyes!\nno way\n", encoding="utf-8")
    assert tweetlm("import", posts, "--account", "terse").returncode == 0
    before = store_digest()
    out = tweetlm("curate", "terse")
    assert out.returncode == 1
    assert "rule 'short' removed 3" in out.stderr and "--min-words" not in out.stdout
    assert store_digest() == before
    assert tweetlm("curate", "terse", "--min-words", "1").returncode == 0


def test_help_lists_commands_with_examples() -> None:
    import typer

    from tweetlm.cli import app

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    expected = {"import", "accounts", "curate", "show", "fetch", "train", "generate", "demo", "eval", "compare"}
    expected |= {"report", "dashboard", "sweep", "sweep-report", "serve", "export", "push", "update", "map"}
    assert set(commands) == expected
    listed = tweetlm("--help").stdout.split("Quick start", 1)[1].split("Options", 1)[1]  # the command table
    for name, command in commands.items():
        assert f" {name} " in listed, name
        assert "Example" in (command.help or ""), f"{name} --help has no example"


def test_reading_commands_on_an_empty_home_say_so_and_leave_no_store_behind(
    tweetlm_home: Path, tiny_model: Path
) -> None:
    listing = tweetlm("accounts")
    assert listing.returncode == 0 and "the store is empty" in listing.stdout
    for args in (["show", "nobody"], ["curate", "nobody"], ["train", "nobody", "--base-model", tiny_model]):
        out = tweetlm(*args)
        assert out.returncode != 0
        assert "no posts for account 'nobody'" in out.stderr and "the store is empty" in out.stderr, out.stderr
    assert not list(tweetlm_home.rglob("*.sqlite*"))
    assert tweetlm("import", build_archive_zip(tweetlm_home.parent / "zip")).returncode == 0
    assert "darkliquid" in tweetlm("accounts").stdout
