"""Loss plots (matplotlib, Agg), the comparison of runs, and the self-contained HTML run report.

The report inlines its one image (the loss curves) as a base64 PNG and its CSS: no external assets,
so the single `report.html` file can be mailed or opened offline.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tweetlm import paths
from tweetlm.card import SHORT_LABEL
from tweetlm.curate import REPORT_LABELS, RULES, CurationReport
from tweetlm.errors import InputError
from tweetlm.evaluate import table_header, table_rows, voice_summary
from tweetlm.plots import CSS, figure, png
from tweetlm.runs import SAMPLES_FILE, RunFolder, RunInfo

if TYPE_CHECKING:
    from tweetlm.maps import Embed

REPORT_FILE = "report.html"
NOTICE = (
    "Machine-generated text: every generated post on this page was written by a language model fine-tuned on "
    "public posts. It was not written by, and does not speak for, the person it imitates."
)


# ---- loss curves ---------------------------------------------------------------------------


def validation_curve(run: RunInfo) -> list[tuple[float, float]]:
    """(epoch, validation loss) points of a run, the base model's at epoch 0 first."""
    return [(h.get("epoch") or 0.0, h["eval_loss"]) for h in run.metrics.history if "eval_loss" in h]


def train_curve(run: RunInfo) -> list[tuple[int, float]]:
    return [(h["step"], h["loss"]) for h in run.metrics.history if "loss" in h and "step" in h]


def plot_run_losses(run: RunInfo) -> bytes:
    """PNG: training loss by step and validation loss at each evaluation, of one run."""
    fig = figure()
    axes = fig.add_subplot()
    train = train_curve(run)
    if train:
        axes.plot(*zip(*train, strict=True), label="training loss", color="#7aa6d8", linewidth=1.2)
    evals = [(h["step"], h["eval_loss"]) for h in run.metrics.history if "eval_loss" in h]
    if evals:
        axes.plot(*zip(*evals, strict=True), "o-", label="validation loss", color="#c0392b", linewidth=2)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss (nats per token)")
    axes.set_title(f"Losses of {' + '.join('@' + a for a in run.accounts)}")
    axes.grid(alpha=0.3)
    if train or evals:
        axes.legend()
    return png(fig)


def plot_validation_losses(runs: Sequence[tuple[str, RunInfo]]) -> bytes:
    """PNG: the validation-loss curves of several runs by epoch (HuggingTweets' "comparing losses")."""
    fig = figure(8.0, 4.5)
    axes = fig.add_subplot()
    for label, run in runs:
        curve = validation_curve(run)
        axes.plot(*zip(*curve, strict=True), "o-", label=label, linewidth=1.8)
    axes.set_xlabel("epoch (0: the base model before training)")
    axes.set_ylabel("validation loss (nats per token)")
    axes.set_title("Validation loss by run")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return png(fig)


# ---- comparing runs ------------------------------------------------------------------------


def load_runs(run_dirs: Sequence[Path]) -> list[tuple[Path, RunInfo]]:
    """Read each run once, in order, refusing duplicates and runs without a validation curve."""
    runs: list[tuple[Path, RunInfo]] = []
    seen: set[Path] = set()
    for run_dir in run_dirs:
        if run_dir.resolve() in seen:
            raise InputError(f"{run_dir.name} is named twice: name each run once")
        seen.add(run_dir.resolve())
        run = RunFolder(run_dir).read()
        if not validation_curve(run):
            raise InputError(f"{run_dir.name} has no validation losses in its run.json: it cannot be compared")
        runs.append((run_dir, run))
    return runs


def comparison_rows(runs: Sequence[tuple[Path, RunInfo]]) -> list[dict[str, Any]]:
    """One row per run: what it trained on, its losses, and its eval figures when it was evaluated."""
    rows = []
    for run_dir, run in runs:
        m = run.metrics
        evaluation = RunFolder(run_dir).evaluation() or {}
        fine = evaluation.get("models", {}).get("fine_tuned", {})
        voice = evaluation.get("voice") or {}
        rows.append(
            {
                "run": run_dir.name,
                "accounts": run.accounts,
                "base_model": run.base_model.name,
                "base": "smollm2" if run.base_model.embedded else Path(run.base_model.name).name,
                "train_posts": m.train_posts,
                "steps": m.steps,
                "epochs": m.epochs_completed,
                "eval_loss_before": m.eval_loss_before,
                "eval_loss_after": m.eval_loss_after,
                "perplexity_after": m.perplexity_after,
                "copies": (fine.get("copying") or {}).get("long_run"),
                "distinct_2": (fine.get("diversity") or {}).get("distinct_2"),
                "voice": voice.get("generated_attributed"),
            }
        )
    return rows


def write_png(path: Path, png: bytes) -> Path:
    """Write atomically (a temporary file, then a rename)."""
    if path.suffix.lower() != ".png":
        raise InputError(f"{path}: the plot is a PNG, give a path ending in .png")
    if not path.parent.is_dir():
        raise InputError(f"{path.parent} does not exist: create it or choose another --output")
    if path.is_dir():
        raise InputError(f"{path} is a folder: give the path of a .png file for --output")
    try:
        return paths.atomic_write(path, png)
    except OSError as exc:
        raise InputError(f"cannot write {path} ({exc.strerror}): choose another --output") from None


# ---- the HTML report -----------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(header: Sequence[str] | None, rows: Sequence[Sequence[Any]], numeric_from: int = 1) -> str:
    head = "<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr></thead>" if header else ""
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_e(v)}</td>' if i >= numeric_from else f"<td>{_e(v)}</td>" for i, v in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table>{head}<tbody>{body}</tbody></table>"


def _generated(text: str) -> str:
    return f'<span class="generated">{_e(text)}</span> <span class="tag">[generated]</span>'


def _curation(run: RunInfo) -> str:
    datasets = run.data["datasets"]
    accounts = list(datasets)
    rows = []
    for key in ("downloaded", *RULES, "kept"):
        values = [
            datasets[a]["report"].get(key, datasets[a]["report"].get("dropped", {}).get(key, 0)) for a in accounts
        ]
        if key in ("downloaded", "kept") or any(values):
            rows.append((REPORT_LABELS.get(key, key), *values))
    rows.append(("languages kept", *(CurationReport.from_dict(datasets[a]["report"]).language_mix() for a in accounts)))
    rows.append(
        (
            "training / validation posts",
            *(f"{datasets[a]['train_posts']} / {datasets[a]['validation_posts']}" for a in accounts),
        )
    )
    hashes = ", ".join(f"@{a}: {datasets[a]['hash']}" for a in accounts)
    return (
        _table(["", *(f"@{a}" for a in accounts)], rows)
        + f'<p class="muted">dataset hashes {_e(hashes)}; training data hash {_e(run.data["hash"])}</p>'
    )


def _summary(run_dir: Path, run: RunInfo) -> str:
    m = run.metrics
    rows = [
        ("run folder", run_dir.name),
        ("created", run.created_at),
        ("base model", run.base_model.name),
        ("validation loss", f"{m.eval_loss_before:.3f} (base model) → {m.eval_loss_after:.3f}"),
        ("perplexity", f"{m.perplexity_before:.1f} (base model) → {m.perplexity_after:.1f}"),
        ("training", f"{m.steps} steps, {m.epochs_completed:.2f} epochs, {m.train_seconds:.0f} s"),
        ("posts", f"{m.train_posts} training, {m.validation_posts} validation"),
        ("precision", run.precision),
        ("versions", ", ".join(f"{k} {v}" for k, v in run.versions.items())),
    ]
    return _table(None, rows, numeric_from=2)


def _config(run: RunInfo) -> str:
    rows = [(k, "" if v is None else v) for k, v in run.config.items() if k not in ("accounts", "base_model")]
    return _table(["setting", "value"], rows, numeric_from=2)


def _evaluation(run_dir: Path) -> str:
    result = RunFolder(run_dir).evaluation()
    if result is None:
        command = f"tweetlm eval {run_dir.name}"
        return f'<p class="muted">Not evaluated yet: run <code>{_e(command)}</code>, then the report again.</p>'
    settings = result["settings"]
    parts = [
        _table(table_header(result), table_rows(result)),
        f'<p class="muted">{_e(settings["n"])} posts generated per model without a prompt, '
        f"seed {_e(settings['seed'])}, temperature {_e(settings['sampling']['temperature'])}, "
        f"top-p {_e(settings['sampling']['top_p'])}, "
        f"evaluated {_e(result['created_at'])}.</p>",
    ]
    if line := voice_summary(result):
        parts.append(f'<p class="muted">{_e(line)}</p>')
    parts += [f'<p class="muted">note: {_e(note)}</p>' for note in result["notes"]]
    copying = (result["models"].get("fine_tuned") or {}).get("copying")
    if copying and copying.get("longest_example"):
        parts.append(
            f"<p>Generated post with the longest run shared with a training post ({_e(copying['longest_run'])} "
            f"words): {_generated(copying['longest_example'])}</p>"
        )
    generated = result["generated"].get("fine_tuned", [])[:10]
    if generated:
        parts.append("<h3>Generated posts (fine-tuned model, first 10)</h3>")
        parts.append("<ol>" + "".join(f"<li>{_generated(t)}</li>" for t in generated) + "</ol>")
    return "\n".join(parts)


def _samples(run_dir: Path) -> str:
    path = run_dir / SAMPLES_FILE
    if not path.is_file():
        return '<p class="muted">This run has no sample table (it was trained before tweetlm recorded one).</p>'
    samples = json.loads(path.read_text(encoding="utf-8"))
    evaluations = samples["evaluations"]
    header = [
        "Input",
        *(f"epoch {e['epoch']:g} (step {e['step']})" for e in evaluations),
    ]
    rows = []
    for i, prompt in enumerate(samples["prompts"]):
        cells = "".join(f"<td>{_generated(e['rows'][i]['prediction'])}</td>" for e in evaluations)
        rows.append(f"<tr><td>{_e(prompt) or '<span class=muted>(no prompt)</span>'}</td>{cells}</tr>")
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    settings = samples["settings"]
    return (
        f'<p class="muted">One prediction per prompt after each evaluation, seed {_e(samples["seed"])}, temperature '
        f"{_e(settings['temperature'])}, top-p {_e(settings['top_p'])}, at most {_e(settings['max_new_tokens'])} "
        f"tokens. Predictions are {_e(samples['label'])}.</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _maps(run_dir: Path, run: RunInfo, embed: Embed | None) -> str:
    """Topics of the run's training posts and the style map of its accounts among the store's others,
    its evaluation's generated posts placed on it (a note instead where the embedder is missing)."""
    from tweetlm.errors import TweetlmError
    from tweetlm.evaluate import Embedder, contrast_posts
    from tweetlm.maps import account_maps, maps_html
    from tweetlm.store import Store

    folder = RunFolder(run_dir)
    real: dict[str, Sequence[str]] = dict(folder.posts().train)
    try:
        with Store(create=False) as store:
            real |= contrast_posts(store, run.accounts)
        result = folder.evaluation() or {}
        made = result.get("generated", {}).get("fine_tuned")
        generated = {run.accounts[0]: made} if made and len(run.accounts) == 1 else {}
        found = account_maps(real, generated, embed or Embedder(), [a for a in run.accounts if a in real])
    except TweetlmError as exc:
        return f'<p class="muted">No maps: {_e(exc)}</p>'
    return maps_html(*found)


def build_report(run_dir: Path, embed: Embed | None = None) -> str:
    run = RunFolder(run_dir).read()
    who = " + ".join(f"@{a}" for a in run.accounts)
    curves = base64.b64encode(plot_run_losses(run)).decode("ascii")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tweetlm report: {_e(who)} ({_e(run_dir.name)})</title>
<style>{CSS}</style>
</head>
<body>
<h1>tweetlm run report: {_e(who)}</h1>
<p class="muted">{_e(run_dir.name)}</p>
<div class="notice" role="note"><strong>{_e(NOTICE)}</strong> Posts marked [generated] are {_e(SHORT_LABEL)}.</div>
<h2>Summary</h2>
{_summary(run_dir, run)}
<h2>Loss curves</h2>
<img alt="training and validation loss of {_e(who)}" src="data:image/png;base64,{curves}">
<h2>Curation</h2>
{_curation(run)}
<h2>Evaluation</h2>
{_evaluation(run_dir)}
<h2>Maps: topics and styles</h2>
{_maps(run_dir, run, embed)}
<h2>Sample predictions</h2>
<div class="notice" role="note">{_e(NOTICE)}</div>
{_samples(run_dir)}
<h2>Training settings</h2>
{_config(run)}
<p class="muted">Written by tweetlm {_e(run.tweetlm)}.</p>
</body>
</html>
"""


def write_report(run_dir: Path, embed: Embed | None = None) -> Path:
    """Write `report.html` in the run folder (atomically) and return its path."""
    page = build_report(run_dir, embed)
    return paths.atomic_write(run_dir / REPORT_FILE, page)
