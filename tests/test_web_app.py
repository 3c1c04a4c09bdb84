"""The web app's actions and its training queue, without a browser: real files, real training on the tiny model."""

from __future__ import annotations

import csv
import html
import io
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from tests.conftest import add_account, sample_posts, tiny_config
from tweetlm.curate import CurateConfig
from tweetlm.errors import InputError, TweetlmError
from tweetlm.train import TrainConfig, train
from tweetlm.web import views
from tweetlm.web.app import TRAIN_FIELDS, TrainForm, WebApp
from tweetlm.web.jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Job, TrainingQueue
from tweetlm.web.ui import check_host, check_port


@pytest.fixture
def webapp(tmp_path: Path) -> WebApp:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    return WebApp(uploads)


def uploaded(webapp: WebApp, name: str, data: bytes) -> Path:
    """A file where Gradio puts an upload: a folder of its own inside the upload folder."""
    folder = webapp.upload_dir / "0123abcd"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def csv_bytes(texts: list[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([["id", "text"], *([str(i), t] for i, t in enumerate(texts))])
    return buffer.getvalue().encode()


def quiet_config(tiny_model: Path, **overrides: object) -> TrainConfig:
    """The tiny model's training config, untracked: these tests are about the web app."""
    return tiny_config(tiny_model, report_to="none", **overrides)


def wait_for(condition: Callable[[], bool], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting after {seconds} s")
        time.sleep(0.05)


def job(queue: TrainingQueue, job_id: int) -> Job:
    return next(j for j in queue.jobs() if j.id == job_id)


def test_import_curates_shows_kept_and_dropped_and_deletes_the_upload(webapp: WebApp) -> None:
    texts = [*sample_posts(40), "RT @someone: a retweet of something", "too short"]
    path = uploaded(webapp, "obama.csv", csv_bytes(texts))
    view = webapp.import_upload(str(path), "auto-detect", "", "", "", CurateConfig())
    assert "Imported 42 posts of @obama from obama.csv: 42 new" in view.status
    assert view.account == "obama"
    assert "Curation of @obama" in view.report and "kept for training" in view.report
    assert "RT @someone" in view.examples and "Kept (first 5 of" in view.examples
    assert not path.parent.exists()  # read, then deleted
    choices, latest = webapp.account_choices()
    assert choices == [("obama (42 posts)", "obama")] and latest == "obama"
    assert "Curation of @obama" in webapp.show_account("obama").report

    # A warning on the way (a guessed encoding) reaches the page, with the file's name, not the server path.
    legacy = uploaded(
        webapp, "legacy.csv", csv_bytes([f"{t} café" for t in sample_posts(25)]).decode().encode("cp1252")
    )
    view = webapp.import_upload(str(legacy), "auto-detect", "", "", "", CurateConfig())
    assert "legacy.csv is not UTF-8" in view.status and str(webapp.upload_dir) not in view.status
    assert "Imported 25 posts of @legacy" in view.status


def test_bad_uploads_get_one_readable_line_without_server_paths(webapp: WebApp) -> None:
    cases = {
        "posts.csv": (b"", "posts.csv is empty"),
        "twitter-archive.zip": (b"PK\x03\x04 not really a zip", "twitter-archive.zip is not a readable zip"),
        "notes.bin": (b"\x00\x01\x02", "cannot tell what notes.bin is"),
    }
    for name, (data, expected) in cases.items():
        view = webapp.import_upload(str(uploaded(webapp, name, data)), "auto-detect", "", "", "", CurateConfig())
        assert 'class="tl-msg tl-error"' in view.status and expected in view.status, view.status
        assert str(webapp.upload_dir) not in view.status
    assert "choose a file" in webapp.import_upload(None, "auto-detect", "", "", "", CurateConfig()).status


def test_files_outside_the_upload_folder_are_never_opened(webapp: WebApp, tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_bytes(csv_bytes(sample_posts(30)))
    for path in (secret, webapp.upload_dir / ".." / "secret.csv", webapp.upload_dir):
        view = webapp.import_upload(str(path), "csv", "", "", "", CurateConfig())
        assert "not uploaded through this page" in view.status
    assert secret.is_file()
    assert webapp.account_choices() == ([], None)


def test_curation_that_keeps_nothing_names_the_rule(webapp: WebApp) -> None:
    path = uploaded(webapp, "terse.txt", b"yes\nno\nmaybe\n")
    view = webapp.import_upload(str(path), "auto-detect", "", "", "", CurateConfig())
    assert "Imported 3 posts of @terse" in view.status
    assert "nothing left of terse's 3 posts after curation: rule 'short' removed 3" in html.unescape(view.status)
    assert "pick an account" in webapp.curate(None, CurateConfig()).status


def test_runs_are_picked_by_name_and_generate_labelled_escaped_cards(webapp: WebApp, tiny_model: Path) -> None:
    add_account("obama", sample_posts(200))
    run_dir = train(quiet_config(tiny_model, max_steps=2)).run_dir
    assert run_dir is not None
    assert [name for _, name in webapp.runs()] == [run_dir.name]
    view = webapp.run_view(run_dir.name)
    assert "writes like @obama" in view.summary and view.card.startswith("# tweetlm: a model that writes like @obama")
    assert "No evaluation yet" in view.evaluation

    cards = webapp.generate(run_dir.name, "<b>We</b>", 3, 1.0, 0.95, "11", 280)
    assert cards.count('class="tl-card"') == 3 and 'data-seed="11"' in cards
    assert cards.count("<footer>machine-generated, not written by the person") == 3
    assert "&lt;b&gt;We&lt;/b&gt;" in cards and "<b>We</b>" not in cards  # model output is data, not markup

    for name in ("../../etc", str(run_dir), f"{run_dir.name}/../{run_dir.name}", None):
        assert 'class="tl-msg tl-error"' in webapp.generate(name, "", 1, 1.0, 0.95, None, 280)
        assert 'class="tl-msg tl-error"' in webapp.run_view(name or "x").summary
    assert "type a whole number" in webapp.generate(run_dir.name, "", 1, 1.0, 0.95, "1e3", 280)
    assert "n=0" in webapp.generate(run_dir.name, "", 0, 1.0, 0.95, None, 280)

    (run_dir / "eval.json").write_text("{not json")
    assert "not readable JSON" in webapp.run_view(run_dir.name).evaluation


def test_queue_runs_one_job_at_a_time_and_cancels(tiny_model: Path) -> None:
    add_account("obama", sample_posts(200))
    add_account("tiny", [f"this is post number {i} of a small account" for i in range(10)])
    queue = TrainingQueue()
    long = queue.submit(quiet_config(tiny_model, epochs=500))
    waiting = [queue.submit(quiet_config(tiny_model, max_steps=2)) for _ in range(2)]
    wait_for(lambda: job(queue, long.id).step >= 1)
    assert [job(queue, j.id).state for j in waiting] == [QUEUED, QUEUED]
    assert queue.cancel_waiting() == 2
    assert [job(queue, j.id).state for j in waiting] == [CANCELLED, CANCELLED]

    short = queue.submit(quiet_config(tiny_model, max_steps=2))
    failing = queue.submit(quiet_config(tiny_model, accounts=("tiny",)))
    stopped = queue.cancel_running()
    assert stopped is not None and stopped.id == long.id
    wait_for(lambda: job(queue, failing.id).state in (DONE, FAILED, CANCELLED))

    first = job(queue, long.id)
    assert first.state == CANCELLED and "tweetlm train obama --resume" in first.message
    assert first.evals and first.evals[0][0] == 0  # the base model's loss came in as an event
    done = job(queue, short.id)
    assert done.state == DONE and done.run_name and done.metrics and done.step == 2
    assert done.started is not None and first.finished is not None and done.started >= first.finished
    failed = job(queue, failing.id)
    assert failed.state == FAILED and "at least 20" in failed.message
    assert queue.cancel_running() is None
    assert queue.shutdown(timeout=10)
    with pytest.raises(TweetlmError, match="shutting down"):
        queue.submit(quiet_config(tiny_model))


def test_training_form_checks_fields_before_queueing(webapp: WebApp, tiny_model: Path) -> None:
    add_account("obama", sample_posts(30))
    values = {"base_model": str(tiny_model), "epochs": 1, "learning_rate": 3e-3, "batch_size": 16, "max_minutes": 0}
    values |= {"max_steps": 2, "max_length": 64, "seed": 42, "precision": "fp32"}
    assert set(values) == set(TRAIN_FIELDS)
    form = TrainForm(["obama"], values)
    public = WebApp(webapp.upload_dir, public=True)
    assert "cannot be chosen from a public page" in public.start_training(form)
    problems = {
        "pick at least one account": TrainForm([], values),
        "epochs: type a number": TrainForm(["obama"], {**values, "epochs": None}),
        "no posts for account 'nobody'": TrainForm(["nobody"], values),
        "not a model folder": TrainForm(["obama"], {**values, "base_model": str(tiny_model.parent)}),
        "precision": TrainForm(["obama"], {**values, "precision": "fp16"}),
    }
    for expected, changed in problems.items():
        status = webapp.start_training(changed)
        assert "tl-error" in status and expected in html.unescape(status), status
    assert "Job 1 (@obama) is queued and starts now" in webapp.start_training(form)
    assert webapp.queue.shutdown(timeout=120)


def test_views_render_progress_chart_and_queue() -> None:
    config = tiny_config(Path("m"), accounts=("a<b>",))
    running = Job(1, config, state=RUNNING, phase="training", started=100.0, step=5, total_steps=20, loss=2.5, eta=65)
    running.losses = [(1, 3.0), (5, 2.5)]
    running.evals = [(0, 3.2)]
    panel = views.progress(running, now=130.0)
    assert 'aria-valuenow="25"' in panel and "0:30" in panel and "1:05" in panel and "@a&lt;b&gt;" in panel
    chart = views.loss_chart(running)
    assert "<polyline" in chart and chart.count("<circle") == 1
    assert "queue is empty" in views.queue_table([])
    failed = Job(2, config, state=FAILED, message="only 5 curated posts")
    assert "tl-error" in views.progress(failed) and "only 5 curated posts" in views.queue_table([running, failed])
    assert views.model_card("---\nlicense: x\n---\n\n# Title\n") == "# Title\n"


def test_a_public_host_needs_the_flag() -> None:
    with pytest.raises(InputError, match="--public"):
        check_host("0.0.0.0", public=False)
    check_host("0.0.0.0", public=True)
    check_host("127.0.0.1", public=False)
    result = subprocess.run(
        [sys.executable, "-m", "tweetlm", "serve", "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1 and "error: --host 0.0.0.0 would serve the app" in result.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(InputError, match="pass another --port"):
            check_port("127.0.0.1", taken.getsockname()[1])


def test_a_public_page_cannot_spend_the_x_budget_or_fetch_from_this_machine(tmp_path: Path) -> None:
    public = WebApp(tmp_path, public=True)
    view = public.fetch("x", "@jack", 10, False, False, CurateConfig())
    assert "cannot fetch from X" in view.status
    view = public.fetch("mastodon", "@someone@localhost:8080", 10, False, False, CurateConfig())
    assert "its own addresses" in view.status
    assert "not a Mastodon account" in html.unescape(
        public.fetch("mastodon", "nobody", 1, False, False, CurateConfig()).status
    )


def test_fetch_panel_fetches_through_the_library_and_curates(
    webapp: WebApp, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import FEED, HANDLE, Replay

    httpserver.expect_request(FEED).respond_with_handler(Replay().feed)
    monkeypatch.setenv("TWEETLM_BLUESKY_URL", httpserver.url_for("/"))
    view = webapp.fetch("bluesky", HANDLE, 100, False, False, CurateConfig(min_words=1))
    assert f"Fetched 9 posts of {HANDLE} from bluesky" in view.status and "7 new" in view.status
    assert f"Curation of @{HANDLE}" in view.report and view.account == HANDLE
    assert "type the account" in webapp.fetch("bluesky", " ", 100, False, False, CurateConfig()).status
