"""HTML for the web app's panels: plain functions from library objects to markup, no Gradio.

Every piece of text that came from a user, a file or a model goes through `esc`: posts are data,
never markup.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Sequence
from typing import Any

from tweetlm.curate import REPORT_LABELS as CURATION_LABELS
from tweetlm.curate import CurationReport
from tweetlm.generate import Generation
from tweetlm.runs import RunInfo
from tweetlm.store import CuratedPost
from tweetlm.web.jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Job

REPORT_LABELS = {**CURATION_LABELS, "downloaded": "posts read"}
STATE_LABELS = {QUEUED: "waiting", RUNNING: "running", DONE: "done", FAILED: "failed", CANCELLED: "cancelled"}


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def message(kind: str, text: str) -> str:
    """A status line: kind is "ok", "error" or "info"."""
    prefix = {"error": "<b>Error:</b> ", "ok": "", "info": ""}[kind]
    role = ' role="alert"' if kind == "error" else ""
    return f'<div class="tl-msg tl-{kind}"{role}>{prefix}{esc(text)}</div>'


def empty(text: str) -> str:
    return f'<div class="tl-empty">{esc(text)}</div>'


def duration(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "–"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


# ---- data ---------------------------------------------------------------------------------------


def report_table(account: str, report: CurationReport, dataset_hash: str) -> str:
    total = max(report.downloaded, 1)
    rows = []
    for key, count in report.rows():
        if key not in ("downloaded", "kept") and count == 0:
            continue
        kind = " class='tl-kept'" if key == "kept" else (" class='tl-total'" if key == "downloaded" else "")
        share = f"{100 * count / total:.1f}%"
        rows.append(f"<tr{kind}><td>{esc(REPORT_LABELS[key])}</td><td>{count}</td><td>{share}</td></tr>")
    return (
        f'<div class="tl-report" data-account="{esc(account)}">'
        f"<h3>Curation of @{esc(account)}</h3>"
        '<table class="tl-table"><thead><tr><th>rule</th><th>posts</th><th>share</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
        f'<p class="tl-note">dataset <code>{esc(dataset_hash)}</code>: {report.kept} posts ready to train on</p></div>'
    )


def examples(kept: Sequence[CuratedPost], report: CurationReport, show: int = 5) -> str:
    kept_items = "".join(f"<li>{esc(p.text)}</li>" for p in kept[:show]) or "<li>none</li>"
    dropped = []
    for rule, texts in report.examples.items():
        for text in texts[:2]:
            dropped.append(f'<li><span class="tl-rule">{esc(REPORT_LABELS[rule])}</span> {esc(text)}</li>')
    dropped_items = "".join(dropped[:show]) or "<li>none</li>"
    return (
        '<div class="tl-examples">'
        f"<div><h4>Kept (first {min(show, len(kept))} of {len(kept)})</h4>"
        f'<ul class="tl-kept-list">{kept_items}</ul></div>'
        f'<div><h4>Dropped, and why</h4><ul class="tl-dropped-list">{dropped_items}</ul></div></div>'
    )


# ---- training -----------------------------------------------------------------------------------


def progress(job: Job | None, now: float | None = None) -> str:
    if job is None:
        return empty("No training yet. Pick an account and a base model, then start training.")
    now = now or time.time()
    fraction = min(1.0, job.step / job.total_steps) if job.total_steps else 0.0
    if job.state == DONE:
        fraction = 1.0
    loss = f"{job.loss:.3f}" if job.loss is not None else "–"
    steps = f"{job.step} / {job.total_steps}" if job.total_steps else "–"
    left = duration(job.eta) if job.state == RUNNING and job.eta is not None else "–"
    detail = ""
    if job.state == FAILED:
        detail = message("error", job.message)
    elif job.state == CANCELLED:
        detail = message("info", job.message or job.phase)
    elif job.state == DONE and job.metrics:
        m = job.metrics
        detail = message(
            "ok",
            f"validation loss {m.eval_loss_before:.3f} → {m.eval_loss_after:.3f} "
            f"(perplexity {m.perplexity_before:.1f} → {m.perplexity_after:.1f}); "
            f"run {job.run_name} is ready in step 3",
        )
    return (
        f'<div class="tl-progress" data-state="{job.state}" data-job="{job.id}">'
        f'<div class="tl-progress-head"><span class="tl-state tl-state-{job.state}">{STATE_LABELS[job.state]}</span>'
        f"<b>Job {job.id}</b> · {esc(job.accounts)} · <span class='tl-phase'>{esc(job.phase)}</span></div>"
        f'<div class="tl-note tl-job-config">{esc(config_line(job))}</div>'
        f'<div class="tl-bar" role="progressbar" aria-valuemin="0" aria-valuemax="100" '
        f'aria-valuenow="{round(100 * fraction)}"><div style="width:{100 * fraction:.1f}%"></div></div>'
        '<div class="tl-stats">'
        f"<span>step <b class='tl-step'>{steps}</b></span><span>loss <b class='tl-loss'>{loss}</b></span>"
        f"<span>elapsed <b>{duration(job.elapsed(now))}</b></span><span>left <b>{left}</b></span></div>"
        f"{detail}</div>"
    )


def config_line(job: Job) -> str:
    c = job.config
    limits = [f"at most {c.max_steps} steps"] if c.max_steps else []
    limits += [f"at most {c.max_minutes:g} minutes"] if c.max_minutes else []
    return " · ".join(
        [
            f"base model {c.base_model}",
            f"epochs {c.epochs:g}",
            f"learning rate {c.learning_rate:g}",
            f"batch size {c.batch_size}",
            *limits,
        ]
    )


def loss_chart(job: Job | None, width: int = 640, height: int = 220) -> str:
    """An SVG chart of the training loss (line) and validation loss (dots) against the step."""
    if job is None or not (job.losses or job.evals):
        return empty("The loss chart appears with the first logged steps.")
    points = job.losses + job.evals
    max_step = max(max(s for s, _ in points), job.total_steps or 0, 1)
    values = [v for _, v in points if math.isfinite(v)]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high - low < 1e-6:
        low, high = low - 0.5, high + 0.5
    left, right, top, bottom = 48, 12, 14, 30
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(step: int) -> float:
        return left + plot_w * step / max_step

    def y(value: float) -> float:
        return top + plot_h * (high - value) / (high - low)

    decimals = max(2, min(4, 1 - math.floor(math.log10((high - low) / 4))))
    grid = []
    for i in range(5):
        value = low + (high - low) * i / 4
        grid.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(value):.1f}" y2="{y(value):.1f}" class="tl-grid"/>'
            f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:.{decimals}f}</text>'
        )
    grid.append(f'<text x="{left}" y="{height - 8}">0</text>')
    grid.append(f'<text x="{width - right}" y="{height - 8}" text-anchor="end">step {max_step}</text>')
    train_line = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in job.losses if math.isfinite(v))
    dots = "".join(
        f'<circle cx="{x(s):.1f}" cy="{y(v):.1f}" r="4" class="tl-eval"><title>step {s}: {v:.3f}</title></circle>'
        for s, v in job.evals
        if math.isfinite(v)
    )
    line = f'<polyline points="{train_line}" class="tl-train"/>' if train_line else ""
    return (
        '<div class="tl-chart">'
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="loss by step">{"".join(grid)}{line}{dots}</svg>'
        '<div class="tl-legend"><span class="tl-key-train"></span>training loss'
        '<span class="tl-key-eval"></span>validation loss</div></div>'
    )


def queue_table(jobs: Sequence[Job]) -> str:
    if not jobs:
        return empty("The queue is empty.")
    rows = []
    for job in reversed(jobs):
        when = time.strftime("%H:%M:%S", time.localtime(job.submitted))
        result = job.run_name or (job.message if job.state in (FAILED, CANCELLED) else job.phase)
        rows.append(
            f'<tr data-state="{job.state}"><td>{job.id}</td><td>{esc(job.accounts)}</td>'
            f'<td><span class="tl-state tl-state-{job.state}">{STATE_LABELS[job.state]}</span></td>'
            f"<td>{when}</td><td>{esc(result)}</td></tr>"
        )
    return (
        '<table class="tl-table tl-queue"><thead><tr><th>job</th><th>accounts</th><th>state</th>'
        f"<th>submitted</th><th>result</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


# ---- generation ---------------------------------------------------------------------------------


def run_summary(name: str, run: RunInfo) -> str:
    m = run.metrics
    loss = f" · validation loss {m.eval_loss_before:.3f} → {m.eval_loss_after:.3f}"
    accounts = ", ".join(f"@{a}" for a in run.accounts)
    return (
        f'<div class="tl-run"><b>{esc(name)}</b><br>writes like {esc(accounts)} · base model {esc(run.base_model.name)}'
        f" · trained {esc(run.created_at or '?')}{esc(loss)}</div>"
    )


def settings_line(gen: Generation) -> str:
    s = gen.settings
    top_k = s["top_k"] or "off"
    return (
        f"seed {gen.seed} · temperature {s['temperature']} · top-p {s['top_p']} · top-k {top_k}"
        f" · at most {s['max_chars']} characters"
    )


def cards(gen: Generation, accounts: Sequence[str]) -> str:
    who = " + ".join(f"@{a}" for a in accounts) or "?"
    initial = (accounts[0][:1] if accounts else "?").upper()
    settings = settings_line(gen)
    items = []
    for i, text in enumerate(gen.posts, 1):
        items.append(
            f'<article class="tl-card" data-index="{i}">'
            f'<header><span class="tl-avatar">{esc(initial)}</span><span class="tl-who">{esc(who)}'
            f'<small>in the style of, via tweetlm</small></span><span class="tl-badge">machine-generated</span>'
            f'</header><p class="tl-text">{esc(text)}</p>'
            f"<footer>{esc(gen.label)} · #{i} · seed {gen.seed}</footer></article>"
        )
    dropped = []
    if gen.dropped_copies:
        dropped.append(f"{gen.dropped_copies} that copied a training post")
    if gen.dropped_empty:
        dropped.append(f"{gen.dropped_empty} empty")
    note = f" · dropped {' and '.join(dropped)}" if dropped else ""
    body = "".join(items) or empty("Every sample was dropped: try a higher temperature or another prompt.")
    return (
        f'<div class="tl-cards" data-label="{esc(gen.label)}" data-seed="{gen.seed}">'
        f'<div class="tl-gen-meta"><span class="tl-badge">machine-generated</span> '
        f"{len(gen.posts)} posts · <span class='tl-settings'>{esc(settings)}</span>{esc(note)}</div>"
        f"{body}</div>"
    )


def eval_table(result: dict[str, Any]) -> str:
    """`tweetlm eval`'s result (eval.json): the fine-tuned model against the base model and real posts."""
    from tweetlm.evaluate import table_header, table_rows, voice_summary

    rows = "".join("<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in table_rows(result))
    header = "".join(f"<th>{esc(name)}</th>" for name in ["metric", *table_header(result)[1:]])
    notes = [voice_summary(result), *result.get("notes", [])]
    items = "".join(f"<li>{esc(note)}</li>" for note in notes if note)
    return (
        f'<div class="tl-evaluation"><p class="tl-note">evaluated {esc(result.get("created_at", "?"))}, '
        f"seed {esc(result.get('settings', {}).get('seed', '?'))}</p>"
        f'<table class="tl-table tl-eval"><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>'
        f'<ul class="tl-note">{items}</ul></div>'
    )


def model_card(text: str) -> str:
    """A run's README.md without its YAML front matter (the Hub's metadata block)."""
    if text.startswith("---\n"):
        end = text.find("\n---\n", 4)
        if end != -1:
            return text[end + 5 :].lstrip()
    return text
