"""The fault corpus: bad inputs and faults, each one row, through the real entry point (`python -m tweetlm`).

Every row runs in its own copy of a populated TWEETLM_HOME (a store with posts, and a finished tiny run)
and asserts the exit code, the first line of stderr (one line, no traceback) and, for a failure, that
every file under TWEETLM_HOME is byte-for-byte what it was (the store, its -wal, runs/, sweeps).
Rows marked `unprivileged` run without root's permission override (`setpriv --bounding-set
-dac_override,-dac_read_search`), so file permissions apply even to root.

Issue 17 lists the defects D1..D14 that the first corpus found; the rows after them extend it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import sample_posts

# ---------------------------------------------------------------------------------------- helpers

ROWS = [
    "Just finished a long walk in the park today",
    "Coffee tastes better when the sun is out",
    "Reading a great book about old sailing ships",
    "The train was late again this morning sadly",
    "Cooking pasta for friends tonight at home",
]
FIVE_CSV = "id,text,created_at\n" + "".join(f"{i},{t},2023-01-0{i}T10:00:00Z\n" for i, t in enumerate(ROWS, 1))
SETPRIV = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


def home_digest(home: Path) -> dict[str, str]:
    """Every file and folder under `home`, with a hash of each file's bytes and its mode."""
    digest: dict[str, str] = {}
    for path in sorted(home.rglob("*")):
        rel = str(path.relative_to(home))
        if path.is_symlink():
            digest[rel] = "link:" + os.readlink(path)
        elif path.is_dir():
            digest[rel + "/"] = oct(path.stat().st_mode)
        else:
            digest[rel] = hashlib.sha256(path.read_bytes()).hexdigest() + oct(path.stat().st_mode)
    return digest


def run_cli(
    args: list[str], home: Path, env: dict[str, str] | None = None, unprivileged: bool = False, timeout: float = 300
) -> tuple[subprocess.CompletedProcess[str], float]:
    full_env = {
        **os.environ,
        "TWEETLM_HOME": str(home),
        "COLUMNS": "200",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        **(env or {}),
    }
    full_env = {k: v for k, v in full_env.items() if v is not None and v != "<unset>"}
    command = [sys.executable, "-m", "tweetlm", *args]
    if unprivileged and os.geteuid() == 0:
        command = SETPRIV + command
    started = time.monotonic()
    out = subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=timeout)
    return out, time.monotonic() - started


def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


@dataclass(frozen=True)
class Fixture:
    """What a row's arguments may name: {tmp} (a scratch folder), {home}, {tiny} (a tiny base model),
    {run} (a finished run folder in {home}/runs)."""

    tmp: Path
    home: Path
    tiny: Path
    run: Path

    def fill(self, arg: str) -> str:
        return arg.format(tmp=self.tmp, home=self.home, tiny=self.tiny, run=self.run)


Setup = Callable[[Fixture], Callable[[], None] | None]


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    first: str  # regex that the first line of stderr must match (re.search); "" for none
    code: int = 1
    setup: Setup | None = None
    env: dict[str, str] = field(default_factory=dict)
    unchanged: bool = True  # every file under TWEETLM_HOME byte-for-byte the same
    unprivileged: bool = False
    max_seconds: float = 240.0
    stdout: str = ""  # regex that stdout must match, when given
    not_in_stderr: tuple[str, ...] = ()  # words a message must not use (misleading advice)
    one_line: bool = True  # a failure's stderr is exactly one line


# ---------------------------------------------------------------------------------------- setups


def write(name: str, content: str | bytes) -> Setup:
    def setup(f: Fixture) -> None:
        path = f.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")

    return setup


def archive_files(tweets_js: str | bytes) -> dict[str, bytes]:
    data = tweets_js.encode() if isinstance(tweets_js, str) else tweets_js
    account = b'window.YTD.account.part0 = [{"account": {"username": "someone", "accountId": "1"}}]'
    return {"data/tweets.js": data, "data/account.js": account}


def archive_dir(name: str, tweets_js: str | bytes, mode: int | None = None) -> Setup:
    def setup(f: Fixture) -> None:
        for member, data in archive_files(tweets_js).items():
            path = f.tmp / name / member
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        if mode is not None:
            (f.tmp / name / "data" / "tweets.js").chmod(mode)

    return setup


def archive_zip(name: str, tweets_js: str | bytes) -> Setup:
    def setup(f: Fixture) -> None:
        with zipfile.ZipFile(f.tmp / name, "w", zipfile.ZIP_DEFLATED) as archive:
            for member, data in archive_files(tweets_js).items():
                archive.writestr(member, data)

    return setup


def whitespace_bomb(f: Fixture) -> None:
    """tweets.js: the usual prefix, then 256 MiB of spaces (about 250 KB deflated)."""
    with zipfile.ZipFile(f.tmp / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in archive_files("").items():
            if member != "data/tweets.js":
                archive.writestr(member, data)
        with archive.open("data/tweets.js", "w", force_zip64=True) as fh:
            fh.write(b"window.YTD.tweets.part0 = ")
            block = b" " * (1 << 20)
            for _ in range(256):
                fh.write(block)


def big_csv_field(f: Fixture) -> None:
    """A CSV whose third line opens a quoted field of 50 MB (with line breaks)."""
    with (f.tmp / "big.csv").open("w", encoding="utf-8") as fh:
        fh.write('id,text\n1,a normal post here\n2,"')
        line = "x" * 99 + "\n"
        for _ in range(500_000):
            fh.write(line)
        fh.write('"\n')


def big_jsonl_line(f: Fixture) -> None:
    with (f.tmp / "big.jsonl").open("w", encoding="utf-8") as fh:
        fh.write('{"text": "a normal post here"}\n{"text": "')
        chunk = "y" * (1 << 20)
        for _ in range(100):
            fh.write(chunk)
        fh.write('"}\n')


def fifo(name: str) -> Setup:
    def setup(f: Fixture) -> None:
        (f.tmp / name).unlink(missing_ok=True)
        os.mkfifo(f.tmp / name)

    return setup


def folder(name: str, mode: int = 0o755) -> Setup:
    def setup(f: Fixture) -> None:
        (f.tmp / name).mkdir(mode=mode)

    return setup


def chmod(name: str, mode: int) -> Setup:
    def setup(f: Fixture) -> None:
        (f.tmp / name).chmod(mode)

    return setup


def symlink(name: str, target: str) -> Setup:
    def setup(f: Fixture) -> None:
        (f.tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (f.tmp / name).symlink_to(target)

    return setup


def chmod_home(mode: int) -> Setup:
    def setup(f: Fixture) -> Callable[[], None]:
        f.home.chmod(mode)
        return lambda: f.home.chmod(0o755)

    return setup


def chmod_store(mode: int) -> Setup:
    def setup(f: Fixture) -> Callable[[], None]:
        store = f.home / "tweetlm.sqlite"
        store.chmod(mode)
        return lambda: store.chmod(0o644)

    return setup


def lock_store(f: Fixture) -> Callable[[], None]:
    """Another process holds the store's write lock until stopped."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "db.execute('BEGIN IMMEDIATE')\n"
            "print('locked', flush=True)\n"
            "time.sleep(120)\n",
            str(f.home / "tweetlm.sqlite"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"

    def release() -> None:
        holder.kill()
        holder.wait()

    return release


def run_json(content: str, name: str = "broken-run") -> Setup:
    def setup(f: Fixture) -> None:
        folder = f.home / "runs" / name
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(content, encoding="utf-8")

    return setup


def run_without_weights(f: Fixture) -> None:
    folder = f.home / "runs" / "no-weights"
    shutil.copytree(f.run, folder)
    for weights in folder.glob("model*.safetensors"):
        weights.unlink()


def run_garbage_json(f: Fixture) -> None:
    (f.run / "run.json").write_text("{not json", encoding="utf-8")


def garbage_store(f: Fixture) -> None:
    (f.home / "tweetlm.sqlite").write_bytes(b"this is no database, " * 100)


def home_file(f: Fixture) -> None:
    (f.tmp / "home-file").write_text("not a folder", encoding="utf-8")


def several(*setups: Setup) -> Setup:
    def setup(f: Fixture) -> Callable[[], None]:
        undo = [u for s in setups if (u := s(f)) is not None]
        return lambda: [u() for u in reversed(undo)] and None

    return setup


OFFLINE_HUB = {"HF_HUB_OFFLINE": "<unset>", "TRANSFORMERS_OFFLINE": "<unset>", "HF_ENDPOINT": "http://127.0.0.1:9"}
NUL_CSV = "id,text\n1,hello there friend\x00\n"
LONG_PROMPT = " ".join(["word"] * 260)[:270]

# ------------------------------------------------------------------------------------------ corpus

CASES = [
    # D1: zero posts is an error that says what was found, and the store is untouched
    Case(
        "d1-header-only-csv",
        ("import", "{tmp}/h.csv"),
        r"h\.csv has a header row .* and no rows",
        setup=write("h.csv", "id,text\n"),
    ),
    Case("d1-empty-txt", ("import", "{tmp}/e.txt"), r"e\.txt is empty: no posts", setup=write("e.txt", "")),
    Case("d1-empty-jsonl", ("import", "{tmp}/e.jsonl"), r"e\.jsonl is empty: no posts", setup=write("e.jsonl", "")),
    Case("d1-zero-byte-csv", ("import", "{tmp}/z.csv"), r"z\.csv is empty", setup=write("z.csv", "")),
    Case(
        "d1-archive-folder-empty-tweets",
        ("import", "{tmp}/arch"),
        r"tweets\.js holds an empty list of tweets",
        setup=archive_dir("arch", "window.YTD.tweets.part0 = []"),
    ),
    Case(
        "d1-archive-zip-empty-tweets",
        ("import", "{tmp}/a.zip"),
        r"tweets\.js holds an empty list of tweets",
        setup=archive_zip("a.zip", "window.YTD.tweets.part0 = []"),
    ),
    # D2: a whitespace bomb is refused at once, in bounded time and memory
    Case(
        "d2-whitespace-bomb-zip",
        ("import", "{tmp}/bomb.zip"),
        r"bomb\.zip: data/tweets\.js inflates from .* refusing it",
        setup=whitespace_bomb,
        max_seconds=30,
    ),
    # D3: a semicolon CSV imports (sniffed), --text-column works on it, and --delimiter is there
    Case(
        "d3-semicolon-csv-sniffed",
        ("import", "{tmp}/semi.csv", "--account", "semi"),
        "",
        code=0,
        setup=write("semi.csv", FIVE_CSV.replace(",", ";")),
        unchanged=False,
        stdout=r"imported 5 posts of semi",
    ),
    Case(
        "d3-semicolon-csv-text-column",
        ("import", "{tmp}/semi.csv", "--text-column", "text", "--account", "semi"),
        "",
        code=0,
        setup=write("semi.csv", FIVE_CSV.replace(",", ";")),
        unchanged=False,
        stdout=r"imported 5 posts of semi",
    ),
    Case(
        "d3-explicit-delimiter",
        ("import", "{tmp}/pipe.csv", "--delimiter", "|", "--account", "pipe"),
        "",
        code=0,
        setup=write("pipe.csv", FIVE_CSV.replace(",", "|")),
        unchanged=False,
        stdout=r"imported 5 posts of pipe",
    ),
    Case(
        "d3-wrong-delimiter-says-so",
        ("import", "{tmp}/semi.csv", "--delimiter", ","),
        r"no text column \(columns: 'id;text;created_at'; .* pass --delimiter",
        setup=write("semi.csv", FIVE_CSV.replace(",", ";")),
    ),
    # D4: an unterminated quote is reported with its line
    Case(
        "d4-unterminated-quote-warns",
        ("import", "{tmp}/q.csv", "--account", "q"),
        r"^warning: .*q\.csv line 2: a quoted field runs to line 5 .* closing quote missing",
        code=0,
        setup=write("q.csv", 'id,text\n1,"open quote,1\n2,second row here\n3,third row here\n4,fourth row\n'),
        unchanged=False,
        one_line=False,
    ),
    # D5: one-line errors, not tracebacks
    Case(
        "d5-utf16-on-utf8",
        ("import", "{tmp}/five.csv", "--encoding", "utf-16"),
        r"five\.csv is not a valid utf-16 text CSV .* pass the right --encoding",
        setup=write("five.csv", FIVE_CSV),
    ),
    Case(
        "d5-format-csv-on-a-folder",
        ("import", "{tmp}", "--format", "csv"),
        r"is a folder: --format csv reads a file",
    ),
    Case(
        "d5-unreadable-tweets-js",
        ("import", "{tmp}/arch"),
        r"tweets\.js cannot be read \(Permission denied\)",
        setup=archive_dir("arch", "window.YTD.tweets.part0 = []", mode=0o000),
        unprivileged=True,
    ),
    Case(
        "d5-train-output-in-proc",
        ("train", "many", "--base-model", "{tiny}", "--output", "/proc/x"),
        r"--output /proc/x: cannot create a folder in /proc",
        max_seconds=20,
    ),
    Case(
        "d5-malformed-run-json-is-skipped",
        ("generate", "many", "hello", "-n", "1", "--seed", "1"),
        r"^warning: skipping .*broken-run/run\.json",
        code=0,
        setup=run_json("[]"),
        one_line=False,
        stdout=r"\[generated\]",
    ),
    Case(
        "d5-compare-output-in-proc",
        ("compare", "many", "-o", "/proc/x.png"),
        r"cannot write /proc/x\.png",
    ),
    Case(
        "d5-home-is-a-file",
        ("accounts",),
        r"TWEETLM_HOME .*home-file is a file, not a folder",
        setup=home_file,
        env={"TWEETLM_HOME": "{tmp}/home-file"},
    ),
    Case(
        "d5-home-unwritable",
        ("import", "{tmp}/five.csv", "--account", "x"),
        r"cannot write in .*: the store needs a folder it can write to",
        setup=several(write("five.csv", FIVE_CSV), chmod_home(0o555)),
        unprivileged=True,
        not_in_stderr=("move it away",),
    ),
    Case(
        "d5-home-under-proc",
        ("accounts",),
        r"cannot create TWEETLM_HOME /proc/tweetlm",
        env={"TWEETLM_HOME": "/proc/tweetlm"},
    ),
    Case(
        "d5-read-only-store",
        ("import", "{tmp}/five.csv", "--account", "x"),
        r"the store .*tweetlm\.sqlite cannot be written \(Permission denied\)",
        setup=several(write("five.csv", FIVE_CSV), chmod_store(0o444)),
        unprivileged=True,
    ),
    Case(
        "d5-locked-store",
        ("import", "{tmp}/five.csv", "--account", "x"),
        r"the store .* is locked, held by pid \d+ .* for over 1 s: wait for it",
        setup=several(write("five.csv", FIVE_CSV), lock_store),
        env={"TWEETLM_STORE_TIMEOUT": "1"},
        max_seconds=30,
    ),
    # D6: no hangs on devices and FIFOs
    Case(
        "d6-dev-zero",
        ("import", "/dev/zero", "--format", "text"),
        r"/dev/zero is a device, not a regular file",
        max_seconds=20,
    ),
    Case(
        "d6-fifo-with-format",
        ("import", "{tmp}/f.csv", "--format", "csv"),
        r"f\.csv is a FIFO, not a regular file",
        setup=fifo("f.csv"),
        max_seconds=20,
    ),
    Case(
        "d6-fifo",
        ("import", "{tmp}/f.csv"),
        r"f\.csv is a FIFO, not a regular file",
        setup=fifo("f.csv"),
        max_seconds=20,
    ),
    # D7: an empty account name is refused
    Case(
        "d7-empty-account",
        ("import", "{tmp}/five.csv", "--account", ""),
        r"--account '' is empty",
        setup=write("five.csv", FIVE_CSV),
    ),
    Case(
        "d7-at-account",
        ("import", "{tmp}/five.csv", "--account", "@"),
        r"--account '@' is empty",
        setup=write("five.csv", FIVE_CSV),
    ),
    # D8: a failed command changes nothing
    Case(
        "d8-train-too-few-posts",
        ("train", "five", "--base-model", "{tiny}"),
        r"only 5 curated posts: at least 20",
        max_seconds=30,
    ),
    Case("d8-sweep-report-nostudy", ("sweep-report", "nostudy"), r"no sweep study 'nostudy' .* no studies there yet"),
    Case("d8-params-from-nostudy", ("train", "many", "--params-from", "nostudy"), r"no sweep study 'nostudy'"),
    # D9: messages that do not mislead
    Case(
        "d9-generate-run-json-list",
        ("generate", "{home}/runs/broken-run"),
        r"is not a tweetlm run \(run\.json holds no run description\)",
        setup=run_json("[]"),
        not_in_stderr=("base model", "--base-model"),
    ),
    Case(
        "d9-generate-run-json-empty",
        ("generate", "{home}/runs/broken-run"),
        r"is not a tweetlm run",
        setup=run_json("{}"),
        not_in_stderr=("base model", "--base-model"),
    ),
    Case(
        "d9-generate-no-weights",
        ("generate", "{home}/runs/no-weights"),
        r"is an incomplete tweetlm run \(its model files are missing\)",
        setup=run_without_weights,
        not_in_stderr=("base model", "--base-model"),
    ),
    Case(
        "d9-serve-unknown-host",
        ("serve", "--host", "nosuchhost.invalid", "--public"),
        r"--host nosuchhost\.invalid is not a name or address of this machine",
        not_in_stderr=("--port",),
    ),
    Case(
        "d9-base-model-hub-unreachable",
        ("train", "many", "--base-model", "gpt2"),
        r"cannot load base model 'gpt2': it is not in the HF cache and http://127\.0\.0\.1:9 cannot be reached",
        env={**OFFLINE_HUB, "HF_HOME": "{tmp}/hf"},
        max_seconds=20,
    ),
    # D12: checked before the model loads
    Case(
        "d12-generate-long-prompt",
        ("generate", "many", LONG_PROMPT, "--max-chars", "100"),
        r"the prompt has \d+ characters: a post has at most 100",
        max_seconds=120,
    ),
    # D13: error positions
    Case(
        "d13-tweets-js-missing-prefix",
        ("import", "{tmp}/arch"),
        r"tweets\.js:1:1: not an X archive file: expected 'window\.YTD\.tweets\.part0 = '",
        setup=archive_dir("arch", '[\n {"tweet": {"id_str": "1", "full_text": "a = b"}}\n]'),
    ),
    Case(
        "d13-tweets-js-wrong-prefix",
        ("import", "{tmp}/arch"),
        r"tweets\.js:2:1: not an X archive file: .* found 'var tweets = \['",
        setup=archive_dir("arch", '\nvar tweets = [\n {"tweet": {"id_str": "1", "full_text": "x = y"}}\n]'),
    ),
    Case(
        "d13-50mb-csv-field",
        ("import", "{tmp}/big.csv"),
        r"big\.csv line 3: malformed CSV \(field larger than field limit",
        setup=big_csv_field,
        max_seconds=30,
    ),
    # D14: the per-post size limit holds for JSONL
    Case(
        "d14-100mb-jsonl-line",
        ("import", "{tmp}/big.jsonl"),
        r"big\.jsonl line 2: a line of over 16 MB",
        setup=big_jsonl_line,
        max_seconds=30,
    ),
    # ---- beyond the listed corpus: the same families, other formats and commands ----------------
    Case(
        "x-jsonl-long-post",
        ("import", "{tmp}/p.jsonl"),
        r"p\.jsonl line 1: a post of 200,000 characters, more than the 131,072",
        setup=write("p.jsonl", json.dumps({"text": "z" * 200_000}) + "\n"),
    ),
    Case(
        "x-text-long-line",
        ("import", "{tmp}/long.txt"),
        r"long\.txt line 2: a post of over 131,072 characters",
        setup=write("long.txt", "fine post\n" + "w" * 300_000 + "\n"),
    ),
    Case(
        "x-text-all-blank",
        ("import", "{tmp}/b.txt"),
        r"b\.txt has 3 lines, all blank",
        setup=write("b.txt", "\n  \n\t\n"),
    ),
    Case(
        "x-jsonl-blank-lines",
        ("import", "{tmp}/b.jsonl"),
        r"b\.jsonl has 2 lines and no post",
        setup=write("b.jsonl", "\n \n"),
    ),
    Case(
        "x-jsonl-empty-texts",
        ("import", "{tmp}/t.jsonl"),
        r"t\.jsonl has 2 lines and no post",
        setup=write("t.jsonl", '{"text": ""}\n{"text": null}\n'),
    ),
    Case(
        "x-jsonl-array-line",
        ("import", "{tmp}/a.jsonl"),
        r"a\.jsonl line 1: expected a JSON object, found list",
        setup=write("a.jsonl", "[]\n"),
    ),
    Case(
        "x-jsonl-deep-nesting",
        ("import", "{tmp}/d.jsonl"),
        r"d\.jsonl line 1: (JSON nested too deeply|malformed JSON)",
        setup=write("d.jsonl", "[" * 200_000 + "\n"),
    ),
    Case(
        "x-jsonl-not-utf8",
        ("import", "{tmp}/l.jsonl"),
        r"l\.jsonl line 1: not UTF-8",
        setup=write("l.jsonl", b'{"text": "caf\xe9"}\n'),
    ),
    Case(
        "x-csv-rows-without-text",
        ("import", "{tmp}/n.csv"),
        r"n\.csv has 2 rows and none has text in column 'text'",
        setup=write("n.csv", "id,text\n1,\n2,   \n"),
    ),
    Case(
        "x-csv-nul-byte",
        ("import", "{tmp}/nul.csv"),
        r"nul\.csv is not a UTF-8 text CSV \(byte 0x00 at line 2\)",
        setup=write("nul.csv", NUL_CSV),
    ),
    Case(
        "x-csv-binary",
        ("import", "{tmp}/bin.csv"),
        r"bin\.csv is not a UTF-8 text CSV",
        setup=write("bin.csv", bytes(range(256)) * 4),
    ),
    Case(
        "x-csv-unknown-encoding",
        ("import", "{tmp}/five.csv", "--encoding", "klingon"),
        r"unknown encoding 'klingon'",
        setup=write("five.csv", FIVE_CSV),
    ),
    Case(
        "x-csv-bad-delimiter",
        ("import", "{tmp}/five.csv", "--delimiter", "ab"),
        r"--delimiter 'ab': give one character",
        setup=write("five.csv", FIVE_CSV),
    ),
    Case(
        "x-csv-unreadable",
        ("import", "{tmp}/five.csv"),
        r"five\.csv cannot be read \(Permission denied\)",
        setup=several(write("five.csv", FIVE_CSV), chmod("five.csv", 0)),
        unprivileged=True,
    ),
    Case(
        "x-csv-over-max-size",
        ("import", "{tmp}/five.csv", "--max-size", "0.0001"),
        r"five\.csv is \d+ bytes, over the limit of 104: raise --max-size",
        setup=write("five.csv", FIVE_CSV),
    ),
    Case(
        "x-csv-bad-date",
        ("import", "{tmp}/d.csv"),
        r"d\.csv line 3: cannot read the date 'yesterday'",
        setup=write("d.csv", "text,date\nfine post,2020-01-01\nother post,yesterday\n"),
    ),
    Case(
        "x-txt-symlink-to-dev-zero",
        ("import", "{tmp}/z.txt"),
        r"z\.txt is a device, not a regular file",
        setup=symlink("z.txt", "/dev/zero"),
        max_seconds=20,
    ),
    Case(
        "x-unknown-format",
        ("import", "{tmp}/five.csv", "--format", "xml"),
        r"unknown format 'xml'",
        setup=write("five.csv", FIVE_CSV),
    ),
    Case("x-unknown-format-on-folder", ("import", "{tmp}", "--format", "xml"), r"unknown format 'xml'"),
    Case("x-missing-file", ("import", "{tmp}/nope.csv"), r"nope\.csv does not exist"),
    Case(
        "x-format-jsonl-on-folder",
        ("import", "{tmp}", "--format", "jsonl"),
        r"is a folder: --format jsonl reads a file",
    ),
    Case(
        "x-archive-tweets-js-fifo",
        ("import", "{tmp}/arch"),
        r"cannot tell what .*arch is",
        setup=several(
            archive_dir("arch", "window.YTD.tweets.part0 = []"),
            fifo("arch/data/tweets.js"),
        ),
        max_seconds=20,
    ),
    Case(
        "x-archive-tweets-js-dev-zero",
        ("import", "{tmp}/tweets.js"),
        r"tweets\.js is a device, not a regular file",
        setup=symlink("tweets.js", "/dev/zero"),
        max_seconds=20,
    ),
    Case(
        "x-archive-prefix-only",
        ("import", "{tmp}/arch"),
        r"tweets\.js: not an X archive file: nothing after the '=' assignment",
        setup=archive_dir("arch", "window.YTD.tweets.part0 = "),
    ),
    Case(
        "x-archive-text-after-json",
        ("import", "{tmp}/arch"),
        r"tweets\.js:1:\d+: unexpected text after the JSON",
        setup=archive_dir("arch", "window.YTD.tweets.part0 = [] junk"),
    ),
    Case(
        "x-archive-not-an-array",
        ("import", "{tmp}/arch"),
        r"tweets\.js does not hold a JSON array",
        setup=archive_dir("arch", 'window.YTD.tweets.part0 = {"a": 1}'),
    ),
    Case(
        "x-archive-zip-missing-prefix",
        ("import", "{tmp}/a.zip"),
        r"a\.zip:data/tweets\.js:1:1: not an X archive file",
        setup=archive_zip("a.zip", "[]"),
    ),
    Case(
        "x-archive-zip-not-a-zip",
        ("import", "{tmp}/a.zip"),
        r"a\.zip is not a readable zip",
        setup=write("a.zip", b"PK\x03\x04 broken"),
    ),
    Case(
        "x-archive-account-empty",
        ("import", "{tmp}/arch", "--account", " @ "),
        r"--account ' @ ' is empty",
        setup=archive_dir("arch", "window.YTD.tweets.part0 = []"),
    ),
    Case("x-store-not-sqlite", ("accounts",), r"tweetlm\.sqlite is not a tweetlm SQLite file", setup=garbage_store),
    Case(
        "x-store-locked-curate",
        ("curate", "many"),
        r"the store .* is locked, held by pid \d+",
        setup=lock_store,
        env={"TWEETLM_STORE_TIMEOUT": "1"},
        max_seconds=30,
    ),
    Case(
        "x-home-unwritable-accounts",
        ("accounts",),
        r"cannot write in .*: the store needs a folder",
        setup=chmod_home(0o555),
        unprivileged=True,
        not_in_stderr=("move it away",),
    ),
    Case(
        "x-home-file-generate",
        ("generate", "many"),
        r"TWEETLM_HOME .* is a file, not a folder",
        setup=home_file,
        env={"TWEETLM_HOME": "{tmp}/home-file"},
    ),
    Case("x-curate-unknown-account", ("curate", "nobody"), r"no posts for account 'nobody'"),
    Case(
        "x-curate-nothing-left",
        ("curate", "five", "--min-words", "100"),
        r"nothing left of five's 5 posts after curation",
    ),
    Case("x-show-not-curated", ("show", "five", "--curated"), r"five has not been curated yet"),
    Case("x-show-unknown-account", ("show", "nobody"), r"no posts for account 'nobody'"),
    Case("x-train-unknown-account", ("train", "nobody", "--base-model", "{tiny}"), r"no posts for account 'nobody'"),
    Case(
        "x-train-output-exists",
        ("train", "many", "--base-model", "{tiny}", "--output", "{run}"),
        r"already exists: choose another",
    ),
    Case(
        "x-train-output-under-a-file",
        ("train", "many", "--base-model", "{tiny}", "--output", "{tmp}/five.csv/run"),
        r"--output .*five\.csv/run: .*five\.csv is not a folder",
        setup=write("five.csv", FIVE_CSV),
    ),
    Case(
        "x-train-output-unwritable",
        ("train", "many", "--base-model", "{tiny}", "--output", "{tmp}/ro/run"),
        r"--output .*ro/run: cannot create a folder in .*ro \(Permission denied\)",
        setup=folder("ro", 0o555),
        unprivileged=True,
    ),
    Case("x-train-bad-epochs", ("train", "many", "--epochs", "0"), r"epochs=0\.0: must be > 0"),
    Case("x-train-bad-scheduler", ("train", "many", "--scheduler", "exotic"), r"scheduler='exotic'"),
    Case("x-train-bad-report-to", ("train", "many", "--report-to", "bogus"), r"bogus"),
    Case(
        "x-train-base-model-not-a-model-folder",
        ("train", "many", "--base-model", "{tmp}"),
        r"is not a model folder \(no config\.json\)",
    ),
    Case(
        "x-train-base-model-bad-id",
        ("train", "many", "--base-model", "no such/model/x"),
        r"--base-model 'no such/model/x' is neither a folder nor an HF model id",
        env={**OFFLINE_HUB, "HF_HOME": "{tmp}/hf"},
    ),
    Case(
        "x-train-base-model-offline-env",
        ("train", "many", "--base-model", "gpt2"),
        r"cannot load base model 'gpt2' \(offline, and it is not in the HF cache\)",
        env={"HF_HOME": "{tmp}/hf"},
        max_seconds=20,
    ),
    Case(
        "x-train-resume-nothing",
        ("train", "many", "--base-model", "{tiny}", "--resume"),
        r"no interrupted run of many to resume",
    ),
    Case("x-train-empty-account-name", ("train", ""), r"no posts for account ''"),
    Case("x-generate-zero-posts", ("generate", "many", "-n", "0"), r"n=0: generate between 1 and 500"),
    Case("x-generate-bad-temperature", ("generate", "many", "--temperature", "0"), r"temperature=0\.0: must be > 0"),
    Case("x-generate-bad-top-p", ("generate", "many", "--top-p", "2"), r"top_p=2\.0: must be in \(0, 1\]"),
    Case("x-generate-no-run", ("generate", "five"), r"no finished run for 'five'"),
    Case("x-generate-not-a-run", ("generate", "{tmp}"), r"is not a tweetlm run \(no run\.json\)"),
    Case(
        "x-generate-garbage-run-json",
        ("generate", "{run}"),
        r"is not a readable tweetlm run \(run\.json: ",
        setup=run_garbage_json,
        not_in_stderr=("base model",),
    ),
    Case(
        "x-generate-prompt-over-context",
        ("generate", "many", "ж" * 150),
        r"the prompt is \d+ tokens; with max_new_tokens=96 that exceeds the model's context of 256",
        max_seconds=20,
    ),
    Case("x-eval-no-run", ("eval", "nobody"), r"no finished run for 'nobody'"),
    Case(
        "x-eval-broken-run",
        ("eval", "{home}/runs/broken-run"),
        r"is not a tweetlm run",
        setup=run_json("{}"),
        not_in_stderr=("base model",),
    ),
    Case(
        "x-report-broken-run",
        ("report", "{home}/runs/broken-run"),
        r"is not a tweetlm run",
        setup=run_json('{"accounts": "x"}'),
    ),
    Case("x-compare-output-not-png", ("compare", "many", "-o", "{tmp}/plot.txt"), r"plot\.txt: the plot is a PNG"),
    Case(
        "x-compare-output-a-folder",
        ("compare", "many", "-o", "{tmp}/dir.png"),
        r"dir\.png is a folder",
        setup=folder("dir.png"),
    ),
    Case(
        "x-compare-output-unwritable",
        ("compare", "many", "-o", "{tmp}/ro/x.png"),
        r"cannot write .*x\.png \(Permission denied\)",
        setup=folder("ro", 0o555),
        unprivileged=True,
    ),
    Case("x-compare-twice", ("compare", "many", "many"), r"is named twice"),
    Case("x-compare-unknown", ("compare", "nobody"), r"no finished run for 'nobody'"),
    Case(
        "x-sweep-report-bad-storage",
        ("sweep-report", "s", "--storage", "nonsense"),
        r"--storage \S+ is not a database URL",
    ),
    Case(
        "x-sweep-report-missing-sqlite",
        ("sweep-report", "s", "--storage", "sqlite:////proc/nope/s.db"),
        r"cannot open the sweep database .* \(cannot create /proc/nope",
    ),
    Case(
        "x-serve-foreign-address",
        ("serve", "--host", "192.0.2.1", "--public"),
        r"--host 192\.0\.2\.1 is not an address of this machine",
        not_in_stderr=("--port",),
    ),
    Case("x-serve-needs-public", ("serve", "--host", "0.0.0.0"), r"add --public"),
    Case("x-fetch-unknown-platform", ("fetch", "myspace", "tom"), r"unknown platform 'myspace'"),
    Case("x-fetch-bluesky-empty-handle", ("fetch", "bluesky", ""), r"'' is not a Bluesky handle or DID"),
    Case("x-fetch-mastodon-bad-handle", ("fetch", "mastodon", "@@"), r"'@@' is not a Mastodon account"),
    Case("x-demo-output-in-proc", ("demo", "-o", "/proc/x"), r"--output /proc/x: cannot create a folder in /proc"),
    Case("x-demo-output-exists", ("demo", "-o", "{tmp}"), r"already exists: choose another"),
    Case("x-demo-zero-minutes", ("demo", "--minutes", "0"), r"--minutes 0: must be > 0"),
    Case("x-sweep-zero-trials", ("sweep", "many", "--trials", "0"), r"--trials 0: must be >= 1"),
    Case("x-sweep-space-missing", ("sweep", "many", "--space", "{tmp}/none.toml"), r"cannot read the space file"),
    Case("x-sweep-uncurated", ("sweep", "five", "--trials", "1"), r"five has no curated dataset"),
    Case("x-sweep-unknown-account", ("sweep", "nobody", "--trials", "1"), r"no posts for account 'nobody'"),
]


@pytest.fixture(scope="session")
def populated(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> tuple[Path, Path]:
    """A TWEETLM_HOME with `five` (5 posts) and `many` (60 posts, curated, one finished tiny run)."""
    home = tmp_path_factory.mktemp("corpus-home")
    inputs = tmp_path_factory.mktemp("corpus-inputs")
    (inputs / "five.csv").write_text(FIVE_CSV, encoding="utf-8")
    (inputs / "many.txt").write_text("\n".join(sample_posts(60)) + "\n", encoding="utf-8")
    for args in (
        ["import", str(inputs / "five.csv")],
        ["import", str(inputs / "many.txt")],
        ["train", "many", "--base-model", str(tiny_model), "--max-steps", "2", "--report-to", "none"],
    ):
        out, _ = run_cli(args, home, timeout=300)
        assert out.returncode == 0, out.stderr
    (run,) = (home / "runs").iterdir()
    return home, run


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault(case: Case, populated: tuple[Path, Path], tiny_model: Path, tmp_path: Path) -> None:
    if case.unprivileged and os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("needs setpriv to drop root's permission override")
    base, base_run = populated
    home = tmp_path / "home"
    shutil.copytree(base, home, symlinks=True)
    scratch = tmp_path / "in"
    scratch.mkdir()
    fixture = Fixture(scratch, home, tiny_model, home / "runs" / base_run.name)
    undo = case.setup(fixture) if case.setup else None
    try:
        env = {k: fixture.fill(v) for k, v in case.env.items()}
        target = Path(env.get("TWEETLM_HOME", str(home)))
        before = home_digest(home)
        out, seconds = run_cli([fixture.fill(a) for a in case.args], home, env, case.unprivileged, timeout=300)
        after = home_digest(home)
    finally:
        if undo is not None:
            undo()
    stderr = out.stderr
    assert "Traceback" not in stderr, stderr
    assert out.returncode == case.code, f"exit {out.returncode}\nstdout: {out.stdout[-2000:]}\nstderr: {stderr[-2000:]}"
    line = first_line(stderr)
    if case.first:
        assert re.search(case.first, line), line
    else:
        assert line == "", stderr
    if case.code != 0 and case.one_line:
        assert len([x for x in stderr.splitlines() if x.strip()]) == 1, stderr
        assert line.startswith("error: "), line
    for word in case.not_in_stderr:
        assert word not in stderr, stderr
    if case.stdout:
        assert re.search(case.stdout, out.stdout), out.stdout
    if case.unchanged:
        assert after == before, _difference(before, after)
        if target != home and target.is_dir():
            assert not any(target.iterdir())
    assert seconds < case.max_seconds, f"took {seconds:.1f} s"


def _difference(before: dict[str, str], after: dict[str, str]) -> str:
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return f"changed under TWEETLM_HOME: {changed}"


# ---------------------------------------------------------------------------- faults needing a run


def test_d5_a_500_character_account_trains_into_a_bounded_folder_name(tiny_model: Path, tmp_path: Path) -> None:
    name = "n" * 500
    posts = tmp_path / "posts.txt"
    posts.write_text("\n".join(sample_posts(40)) + "\n", encoding="utf-8")
    home = tmp_path / "home"
    out, _ = run_cli(["import", str(posts), "--account", name], home)
    assert out.returncode == 0, out.stderr
    out, _ = run_cli(["train", name, "--base-model", str(tiny_model), "--max-steps", "1", "--report-to", "none"], home)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    (run,) = (home / "runs").iterdir()
    assert len(run.name.encode()) < 140 and run.name.startswith("nnnn")
    out, _ = run_cli(["generate", name, "hello", "-n", "1", "--seed", "0"], home)
    assert out.returncode == 0, out.stderr


def test_d8_train_too_few_posts_leaves_no_dataset_and_no_runs_folder(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (tmp_path / "five.csv").write_text(FIVE_CSV, encoding="utf-8")
    assert run_cli(["import", str(tmp_path / "five.csv")], home)[0].returncode == 0
    before = home_digest(home)
    out, _ = run_cli(["train", "five"], home)
    assert out.returncode == 1 and first_line(out.stderr).startswith("error: only 5 curated posts")
    assert home_digest(home) == before and not (home / "runs").exists()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_d11_killed_trainings_partial_folders_are_tidied_or_offered(tiny_model: Path, tmp_path: Path) -> None:
    """A kill -9 leaves `.NAME.partial`: the next train removes one without a checkpoint, offers
    --resume for one with a checkpoint, and leaves alone one whose process is alive."""
    home = tmp_path / "home"
    (tmp_path / "many.txt").write_text("\n".join(sample_posts(60)) + "\n", encoding="utf-8")
    assert run_cli(["import", str(tmp_path / "many.txt")], home)[0].returncode == 0
    runs = home / "runs"
    config = {"config": {"accounts": ["many"]}, "final_dir": str(runs / "many-x"), "tweetlm": "0"}
    empty = runs / ".many-20200101-000000.partial"
    empty.mkdir(parents=True)
    (empty / "tweetlm_config.json").write_text(json.dumps({**config, "pid": _dead_pid()}), encoding="utf-8")
    kept = runs / ".many-20200101-000001.partial"
    (kept / "checkpoints" / "checkpoint-7").mkdir(parents=True)
    (kept / "tweetlm_config.json").write_text(json.dumps({**config, "pid": _dead_pid()}), encoding="utf-8")
    alive = runs / ".many-20200101-000002.partial"
    alive.mkdir()
    (alive / "tweetlm_config.json").write_text(json.dumps({**config, "pid": os.getpid()}), encoding="utf-8")
    other = runs / ".someone-20200101-000000.partial"  # another account's: not this training's business
    other.mkdir()

    out, _ = run_cli(
        ["train", "many", "--base-model", str(tiny_model), "--max-steps", "1", "--report-to", "none"], home
    )
    assert out.returncode == 0, out.stderr
    assert not empty.exists() and kept.exists() and alive.exists() and other.exists()
    assert f"removed {empty}" in " ".join(out.stderr.split())
    assert "checkpoint at step 7" in out.stderr and "--resume" in out.stderr


def test_d10_interrupted_during_the_final_evaluation_finishes_the_run(tiny_model: Path) -> None:
    """Ctrl-C (here: the stop event, which Ctrl-C sets) arriving after the last step, during the final
    evaluation, used to leave a checkpoint that `--resume` then trained past --max-steps. Now the run
    is complete: it is written, at exactly --max-steps."""
    import threading

    from transformers import TrainerCallback

    from tests.conftest import add_account, tiny_config
    from tweetlm.train import train

    add_account("obama", sample_posts(200))
    stop = threading.Event()

    class StopInFinalEval(TrainerCallback):  # type: ignore[misc]
        def on_prediction_step(self, args: object, state: object, control: object, **kw: object) -> None:
            if getattr(state, "global_step", 0) == 4:
                stop.set()

    result = train(tiny_config(tiny_model, max_steps=4), callbacks=[StopInFinalEval()], stop=stop)
    assert stop.is_set()
    assert result.run_dir is not None and result.metrics.steps == 4


def test_d10_time_left_reads_hours() -> None:
    from tweetlm.cli.model import clock

    assert clock(3580) == "59:40" and clock(3700) == "1:01:40" and clock(65) == "01:05"


def test_d2_a_whitespace_bomb_in_a_folder_is_read_in_c_speed(tmp_path: Path) -> None:
    """Outside a zip the member is a plain file: 64 MiB of spaces after the prefix are skipped at C
    speed (the old pure-Python loop took seconds per 10 MB) and reported as nothing to read."""
    from tweetlm.errors import SourceFormatError
    from tweetlm.sources.x_archive import load_js

    data = b"window.YTD.tweets.part0 = " + b" " * (64 << 20)
    started = time.monotonic()
    with pytest.raises(SourceFormatError, match="nothing after the '=' assignment"):
        load_js(data, "tweets.js")
    assert time.monotonic() - started < 5
