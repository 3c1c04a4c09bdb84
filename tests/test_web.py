"""The web app end to end: `tweetlm serve` in a real process, driven by Debian's chromium via Playwright.

Screenshots of every step go to artifacts/screenshots/ (printed at the end of each test). Needs
`pip install playwright` (no `playwright install`: the browser is /usr/bin/chromium from Debian).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.archives import build_archive_zip
from tests.conftest import REPO

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = REPO / "artifacts" / "screenshots"
LABEL = "machine-generated, not written by the person"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(tweetlm_home: Path, tmp_path: Path) -> Iterator[str]:
    """`tweetlm serve` on a free port, with this test's TWEETLM_HOME; stopped with Ctrl-C afterwards."""
    import httpx

    port = _free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "TWEETLM_HOME": str(tweetlm_home), "GRADIO_ANALYTICS_ENABLED": "False"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tweetlm", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            pytest.fail(f"tweetlm serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"tweetlm serve did not answer within 90 s:\n{log.read_text()}")
        time.sleep(0.3)
    yield url
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert "Traceback" not in log.read_text(), log.read_text()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, server: str) -> Iterator[Any]:
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, permissions=["clipboard-read", "clipboard-write"]
    )
    context.set_default_timeout(30_000)
    tab = context.new_page()
    tab.goto(server)
    tab.wait_for_selector("#upload")
    yield tab
    context.close()


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def upload(page: Any, path: Path) -> None:
    page.set_input_files("#upload input[type=file]", str(path))
    page.wait_for_selector(f"#upload:has-text('{path.stem}')")  # Gradio shows the name's stem and suffix apart
    page.click("#import")


def open_tab(page: Any, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def set_number(page: Any, selector: str, value: object) -> None:
    field = page.locator(f"{selector} input[type=number]")
    field.fill(str(value))
    field.press("Tab")


@pytest.mark.shared
def test_import_train_generate_in_a_browser(page: Any, tiny_model: Path, tweetlm_home: Path, tmp_path: Path) -> None:
    shot(page, "01-start")

    # 1. Data: the archive built from the real sample export, curated with the default rules.
    upload(page, build_archive_zip(tmp_path))
    page.wait_for_selector("#report table")
    assert "Imported 28 posts of @darkliquid" in page.inner_text("#data-status")
    rows = dict(
        (r.locator("td").nth(0).inner_text(), r.locator("td").nth(1).inner_text())
        for r in page.locator("#report tbody tr").all()
    )
    assert rows["posts read"] == "28" and rows["kept for training"] == "23" and rows["retweets"] == "1"
    assert "RT @boondaburrah" in page.inner_text("#examples")  # a dropped post, and why
    shot(page, "02-data-curated")

    # 2. Train: a long job, a short one queued behind it; reload; cancel the long one.
    open_tab(page, "2 · Train")
    assert "darkliquid" in page.inner_text("#train-accounts")  # picked up from the import
    page.fill("#base-model input, #base-model textarea", str(tiny_model))
    set_number(page, "#epochs", 300)
    page.click("#more-settings button")
    page.get_by_label("fp32").check()
    page.click("#start")
    page.wait_for_selector("#progress [data-state=running][data-job='1']")
    set_number(page, "#epochs", 1)
    set_number(page, "#max-steps", 3)
    page.click("#start")
    page.wait_for_selector("#train-status :text('Job 2')")
    page.wait_for_selector("#queue tr[data-state=queued]")
    page.wait_for_function(
        "() => parseInt(document.querySelector('#progress .tl-step')?.innerText || '0') >= 2", timeout=90_000
    )
    page.wait_for_selector("#chart polyline")
    shot(page, "03-training-with-queue")

    page.reload()
    open_tab(page, "2 · Train")
    page.wait_for_selector("#progress [data-state=running][data-job='1']")  # reattached to the running job
    page.wait_for_selector("#queue tr[data-state=queued]")
    shot(page, "04-reloaded-reattached")

    page.click("#cancel")
    page.wait_for_selector("#queue tr[data-state=cancelled]", timeout=60_000)
    assert "--resume" in page.inner_text("#queue")
    page.wait_for_selector("#progress [data-state=done][data-job='2']", timeout=120_000)
    assert "validation loss" in page.inner_text("#progress")
    shot(page, "05-trained")

    # 3. Generate: the new run is selected, newest first; cards carry the label, the seed and settings.
    open_tab(page, "3 · Generate")
    page.wait_for_selector("#run-summary :text('@darkliquid')")
    run_name = next(p.name for p in (tweetlm_home / "runs").iterdir() if not p.name.startswith("."))
    assert run_name in page.input_value("#run input")
    page.fill("#prompt input, #prompt textarea", "Today")
    set_number(page, "#n", 3)
    page.fill("#seed input, #seed textarea", "7")
    page.click("#generate")
    page.wait_for_selector("#cards .tl-card")
    cards = page.locator("#cards .tl-card")
    assert cards.count() == 3
    for i in range(3):
        card = cards.nth(i)
        assert card.locator(".tl-badge").inner_text() == "machine-generated"
        assert LABEL in card.locator("footer").inner_text()
        assert card.locator(".tl-text").inner_text().startswith("Today")
    settings = page.inner_text("#cards .tl-gen-meta")
    assert "seed 7" in settings and "temperature 1" in settings and "top-p 0.95" in settings
    shot(page, "06-generated")

    page.click("#regenerate")
    page.wait_for_function("() => document.querySelector('#cards .tl-cards')?.dataset.seed !== '7'")
    page.click("#copy")
    page.wait_for_selector("#cards .tl-copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith("1. Today") and LABEL in copied

    # The model card, and the evaluation table once `tweetlm eval` has written eval.json.
    evaluation = {
        "created_at": "2026-01-01T00:00:00+00:00",
        "accounts": ["darkliquid"],
        "settings": {"seed": 0},
        "models": {"fine_tuned": {"validation": {"loss": 3.25, "perplexity": 25.8}}, "base": {}},
        "real": {"shape": {}},
        "notes": ["no other account is imported"],
    }
    (tweetlm_home / "runs" / run_name / "eval.json").write_text(json.dumps(evaluation))
    page.click("#refresh-runs")
    page.click("#model-card-panel button")
    page.wait_for_selector("#model-card :text('a model that writes like @darkliquid')")
    page.click("#evaluation-panel button")
    page.wait_for_selector("#evaluation td:text('3.250')")
    shot(page, "07-model-card-and-evaluation")
    print(f"screenshots: {SCREENSHOTS}")


def test_bad_input_gets_a_readable_message_and_the_app_keeps_serving(page: Any, tmp_path: Path) -> None:
    garbage = tmp_path / "twitter-archive.zip"
    garbage.write_bytes(os.urandom(2048))
    upload(page, garbage)
    page.wait_for_selector("#data-status .tl-error")
    assert "not a readable zip" in page.inner_text("#data-status")
    shot(page, "10-garbage-upload")

    empty = tmp_path / "posts.csv"
    empty.write_bytes(b"")
    upload(page, empty)
    page.wait_for_selector("#data-status .tl-error:has-text('posts.csv is empty')")

    few = tmp_path / "fewposts.txt"
    few.write_text("\n".join(f"this is post number {i} of a very small account" for i in range(5)))
    upload(page, few)
    page.wait_for_selector("#data-status :text('Imported 5 posts of @fewposts')")

    open_tab(page, "2 · Train")
    page.click("#start")
    page.wait_for_selector("#progress [data-state=failed]", timeout=90_000)
    assert "at least 20 are needed" in page.inner_text("#progress")
    shot(page, "11-too-little-data")

    open_tab(page, "3 · Generate")
    page.click("#generate")
    page.wait_for_selector("#cards .tl-error:has-text('pick a run')")
    print(f"screenshots: {SCREENSHOTS}")
