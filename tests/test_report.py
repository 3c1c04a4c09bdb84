"""`tweetlm report` (one self-contained HTML page) and `tweetlm compare` (a table and a PNG plot)."""

from __future__ import annotations

import base64
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import add_account, sample_posts, tiny_config
from tweetlm.cli import app
from tweetlm.errors import InputError
from tweetlm.evaluate import EvalConfig, evaluate_run
from tweetlm.report import NOTICE, REPORT_FILE, build_report, comparison_rows, load_runs, write_report
from tweetlm.train import train

CHROMIUM = Path("/usr/bin/chromium")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny runs of the same posts with different learning rates, trained once for this module."""
    home = tmp_path_factory.mktemp("report_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TWEETLM_HOME", str(home))
        mp.setenv("HF_HUB_OFFLINE", "1")
        add_account("obama", sample_posts(120))
        made = []
        for lr in (3e-3, 3e-4):
            result = train(tiny_config(tiny_model, epochs=2, learning_rate=lr, report_to="none"))
            assert result.run_dir is not None
            made.append(result.run_dir)
    return made


class _Page(HTMLParser):
    """Collects tags, external references and text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.references: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href") and value:
                (self.images if tag == "img" else self.references).append(value)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


def test_the_report_is_one_self_contained_page(runs: list[Path], tmp_path: Path) -> None:
    run = Path(shutil.copytree(runs[0], tmp_path / runs[0].name))
    evaluate_run(run, EvalConfig(n=4, max_posts=40))
    path = write_report(run)
    assert path == run / REPORT_FILE and not list(run.glob("*.tmp"))
    page = path.read_text(encoding="utf-8")
    parsed = _parse(page)
    assert "script" not in parsed.tags and "link" not in parsed.tags and not parsed.references
    # The loss curves, then the maps (the topics of the run's account; the style map needs a second one).
    assert len(parsed.images) >= 2 and all(i.startswith("data:image/png;base64,") for i in parsed.images)
    assert all(base64.b64decode(i.split(",", 1)[1]).startswith(PNG_MAGIC) for i in parsed.images)
    text = " ".join(" ".join(parsed.text).split())
    assert NOTICE in text and "machine-generated, not written by the person" in text
    # The curation table, the eval table and the sample table.
    assert "posts downloaded 120" in text and "kept for training" in text
    assert "fine-tuned base model real posts validation loss" in text and "distinct-2" in text
    assert "Input epoch 0.5 (step" in text and "epoch 2 (step" in text and "My dream is" in text  # every half epoch
    assert text.count("[generated]") >= 4 * 2  # every prediction of the sample table is tagged


def test_without_an_evaluation_the_report_says_how_to_add_one(runs: list[Path], tmp_path: Path) -> None:
    run = Path(shutil.copytree(runs[1], tmp_path / runs[1].name))
    (run / "eval.json").unlink(missing_ok=True)
    text = " ".join(_parse(build_report(run)).text)
    assert f"tweetlm eval {run.name}" in text


def test_generated_text_is_escaped(runs: list[Path], tmp_path: Path) -> None:
    import json

    run = Path(shutil.copytree(runs[1], tmp_path / "escaped"))
    samples = json.loads((run / "samples.json").read_text())
    samples["evaluations"][0]["rows"][0]["prediction"] = "<script>alert(1)</script> & <b>bold</b>"
    (run / "samples.json").write_text(json.dumps(samples))
    page = build_report(run)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;" in page


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed (Debian package chromium)")
def test_the_report_renders_in_headless_chromium(runs: list[Path], tmp_path: Path) -> None:
    import numpy as np
    from matplotlib.image import imread

    path = write_report(Path(shutil.copytree(runs[0], tmp_path / "rendered")))
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1100,1800"]
    dom = subprocess.run(
        [str(CHROMIUM), *flags, "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "tweetlm run report" in dom.stdout and "Loss curves" in dom.stdout
    done = subprocess.run(
        [str(CHROMIUM), *flags, f"--screenshot={shot}", path.as_uri()], capture_output=True, timeout=120
    )
    assert done.returncode == 0 and shot.is_file()
    pixels = imread(shot)
    assert pixels.shape[:2] == (1800, 1100) and float(np.std(pixels)) > 0.05  # a page, not a blank screen


def test_compare_writes_a_plot_that_opens_and_a_table(runs: list[Path], tmp_path: Path) -> None:
    from matplotlib.image import imread

    plot = tmp_path / "losses.png"
    out = CliRunner().invoke(app, ["compare", *map(str, runs), "-o", str(plot)])
    assert out.exit_code == 0, out.output
    assert "validation loss by run" in out.output and str(plot) in out.output.replace("\n", "")
    image = imread(plot)
    assert image.shape[0] > 200 and image.shape[1] > 300 and float(image.std()) > 0.05

    rows = comparison_rows(load_runs(runs))
    assert [r["run"] for r in rows] == [r.name for r in runs]
    assert all(r["eval_loss_after"] < r["eval_loss_before"] for r in rows)
    assert rows[0]["eval_loss_after"] < rows[1]["eval_loss_after"]  # the larger learning rate learned more
    assert rows[0]["copies"] is None  # not evaluated: the table says so

    twice = CliRunner().invoke(app, ["compare", str(runs[0]), str(runs[0])])
    assert isinstance(twice.exception, InputError) and "twice" in str(twice.exception)
    not_png = CliRunner().invoke(app, ["compare", str(runs[0]), "-o", str(tmp_path / "plot.jpg")])
    assert isinstance(not_png.exception, InputError) and ".png" in str(not_png.exception)
    assert not list(tmp_path.glob(".*.tmp"))
