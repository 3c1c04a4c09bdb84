"""The Gradio page (three steps: data, train, generate) and the server that serves it.

Gradio is imported inside functions: `tweetlm --help` must not pay for it, and `serve` sets
GRADIO_TEMP_DIR (where uploads land) before Gradio reads it.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import tempfile
import typing
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from tweetlm import paths
from tweetlm.errors import InputError
from tweetlm.options import option_fields
from tweetlm.sampling import MAX_CHARS, TEMPERATURE, TOP_P
from tweetlm.train import TrainConfig
from tweetlm.web.app import AUTO, TRAIN_FIELDS, TrainForm, WebApp, curate_config
from tweetlm.web.jobs import RUNNING

if TYPE_CHECKING:
    import gradio as gr

FORMATS = [AUTO, "x-archive", "csv", "jsonl", "text"]
PLATFORMS = ["bluesky", "mastodon", "x"]
LOOPBACK = ("127.0.0.1", "localhost", "::1")
POLL_SECONDS = 1.0
SHUTDOWN_SECONDS = 120.0  # how long a running job gets to save its checkpoint when the server stops

HEADER = """
<div class="tl-header">
  <div class="tl-logo">t</div>
  <div><h1>tweetlm</h1><p>Learn to write like one person: import their posts, fine-tune a small language
  model on this machine, and generate new posts in that voice.</p></div>
</div>
<div class="tl-notice"><span class="tl-badge">machine-generated</span> Everything this app generates is written by
a language model fine-tuned on public posts, not by the person it imitates. For research and fun, not for
impersonation: label the posts as generated wherever you share them.</div>
"""

COPY_JS = """
async () => {
  const root = document.querySelector('#cards .tl-cards');
  if (!root) return;
  const posts = [...root.querySelectorAll('.tl-text')].map((p, i) => `${i + 1}. ${p.innerText}`);
  const text = posts.join('\\n\\n') + `\\n\\n(${root.dataset.label}; ${root.querySelector('.tl-settings').innerText})`;
  try {
    await navigator.clipboard.writeText(text);
  } catch (e) {
    const area = document.createElement('textarea');
    area.value = text;
    document.body.appendChild(area);
    area.select();
    document.execCommand('copy');
    area.remove();
  }
  const meta = root.querySelector('.tl-gen-meta');
  if (!meta.querySelector('.tl-copied')) meta.insertAdjacentHTML('beforeend', ' <span class="tl-copied">copied</span>');
}
"""

CSS = """
.gradio-container { max-width: 1180px !important; margin: 0 auto !important; }
.tl-refresh { align-self: end; max-height: 42px; margin-bottom: 8px; }
.tl-header { display: flex; gap: 14px; align-items: center; margin: 6px 0 4px; }
.tl-header h1 { margin: 0; font-size: 1.7rem; letter-spacing: -0.02em; }
.tl-header p { margin: 2px 0 0; color: var(--body-text-color-subdued); }
.tl-logo { width: 44px; height: 44px; border-radius: 12px; background: linear-gradient(135deg, #1d9bf0, #7856ff);
  color: #fff; font-weight: 800; font-size: 26px; display: flex; align-items: center; justify-content: center; }
.tl-notice { font-size: 0.85rem; color: var(--body-text-color-subdued); border-left: 3px solid #f59e0b;
  padding: 6px 10px; margin: 8px 0 4px; background: var(--background-fill-secondary); border-radius: 6px; }
.tl-badge { display: inline-block; font-size: 0.78rem; font-weight: 600; color: #92400e; background: #fef3c7;
  border: 1px solid #f59e0b; border-radius: 999px;
  padding: 1px 8px; white-space: nowrap; }
.tl-msg { padding: 8px 12px; border-radius: 8px; margin: 6px 0; font-size: 0.95rem; }
.tl-ok { background: #ecfdf5; color: #065f46; border: 1px solid #6ee7b7; }
.tl-error { background: #fef2f2; color: #991b1b; border: 1px solid #fca5a5; }
.tl-info { background: #eff6ff; color: #1e40af; border: 1px solid #93c5fd; }
.tl-empty { color: var(--body-text-color-subdued); font-style: italic; padding: 10px 2px; }
.tl-table { border-collapse: collapse; width: 100%; font-size: 0.92rem; }
.tl-table, .tl-table tr { border: none !important; }
.tl-table th, .tl-table td { padding: 5px 10px !important; text-align: left; border: none !important;
  border-bottom: 1px solid var(--border-color-primary) !important; }
.tl-table th { font-weight: 600; color: var(--body-text-color-subdued); }
.tl-table td:nth-child(n+2) { font-variant-numeric: tabular-nums; }
.tl-report td:nth-child(2), .tl-report td:nth-child(3), .tl-report th:nth-child(n+2) { text-align: right; }
.tl-table tr.tl-kept td { font-weight: 700; color: #047857; }
.tl-table tr.tl-total td { font-weight: 700; }
.tl-report h3, .tl-examples h4 { margin: 4px 0 8px; }
.tl-note { font-size: 0.85rem; color: var(--body-text-color-subdued); }
.tl-examples { display: grid; grid-template-columns: 1fr; gap: 8px; }
.tl-examples ul { margin: 0; padding-left: 18px; font-size: 0.9rem; }
.tl-examples li { margin: 3px 0; }
.tl-rule { font-size: 0.72rem; background: var(--background-fill-secondary);
  border: 1px solid var(--border-color-primary); border-radius: 4px;
  padding: 0 5px; margin-right: 4px; color: var(--body-text-color-subdued); }
.tl-progress { border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 12px 14px; }
.tl-progress-head { display: flex; gap: 8px; align-items: center; flex-wrap: wrap; margin-bottom: 10px; }
.tl-phase { color: var(--body-text-color-subdued); }
.tl-job-config { margin: -4px 0 10px; }
.tl-state { font-size: 0.8rem; font-weight: 600; border-radius: 999px; padding: 1px 9px; }
.tl-state-queued { background: #f1f5f9; color: #475569; }
.tl-state-running { background: #dbeafe; color: #1d4ed8; }
.tl-state-done { background: #d1fae5; color: #047857; }
.tl-state-failed { background: #fee2e2; color: #b91c1c; }
.tl-state-cancelled { background: #fef3c7; color: #92400e; }
.tl-bar { height: 12px; background: var(--background-fill-secondary); border-radius: 999px; overflow: hidden;
  border: 1px solid var(--border-color-primary); }
.tl-bar > div { height: 100%; background: linear-gradient(90deg, #1d9bf0, #7856ff); transition: width 0.6s ease; }
.tl-stats { display: flex; gap: 18px; flex-wrap: wrap; margin-top: 8px; font-size: 0.92rem;
  color: var(--body-text-color-subdued); }
.tl-stats b { color: var(--body-text-color); font-variant-numeric: tabular-nums; }
.tl-chart svg { width: 100%; height: auto; font-size: 11px; fill: var(--body-text-color-subdued); }
.tl-chart .tl-grid { stroke: var(--border-color-primary); stroke-width: 1; }
.tl-chart .tl-train { fill: none; stroke: #1d9bf0; stroke-width: 2; }
.tl-chart .tl-eval { fill: #f59e0b; stroke: #fff; stroke-width: 1.5; }
.tl-legend { font-size: 0.82rem; color: var(--body-text-color-subdued); display: flex; gap: 6px; align-items: center; }
.tl-key-train, .tl-key-eval { display: inline-block; width: 14px; height: 4px; background: #1d9bf0; margin-left: 10px; }
.tl-key-eval { width: 9px; height: 9px; border-radius: 50%; background: #f59e0b; }
.tl-run { font-size: 0.9rem; color: var(--body-text-color-subdued); padding: 4px 2px; }
.tl-run b { color: var(--body-text-color); }
.tl-gen-meta { font-size: 0.88rem; color: var(--body-text-color-subdued); margin: 2px 0 10px; }
.tl-copied { color: #047857; font-weight: 700; }
.tl-card { border: 1px solid var(--border-color-primary); border-radius: 14px; padding: 12px 14px; margin-bottom: 10px;
  background: var(--block-background-fill); box-shadow: 0 1px 2px rgba(0, 0, 0, 0.04); }
.tl-card header { display: flex; align-items: center; gap: 10px; }
.tl-avatar { width: 38px; height: 38px; border-radius: 50%; background: linear-gradient(135deg, #94a3b8, #475569);
  color: #fff; display: flex; align-items: center; justify-content: center; font-weight: 700; flex: none; }
.tl-who { display: flex; flex-direction: column; font-weight: 700; line-height: 1.2; flex: 1; }
.tl-who small { font-weight: 400; color: var(--body-text-color-subdued); }
.tl-text { margin: 10px 0 8px; font-size: 1.02rem; line-height: 1.45; white-space: pre-wrap; word-wrap: break-word; }
.tl-card footer { font-size: 0.78rem; color: var(--body-text-color-subdued); }
"""


def build(webapp: WebApp) -> gr.Blocks:
    """The page. Every action goes through `webapp`; the page holds no state a reload would lose."""
    import gradio as gr

    with gr.Blocks(title="tweetlm", analytics_enabled=False, delete_cache=(3600, 3600)) as page:
        gr.HTML(HEADER)
        with gr.Tabs():
            ui = SimpleNamespace(**vars(_data_tab()), **vars(_train_tab()), **vars(_generate_tab()))
        ui.seen_run = gr.State(None)
        ui.timer = gr.Timer(POLL_SECONDS)
        _wire_data(webapp, ui)
        _wire_train(webapp, ui)
        _wire_generate(webapp, ui)
        _wire_load(webapp, ui, page)
    return page


def _data_tab() -> SimpleNamespace:
    """Step 1: import a file or fetch, curate."""
    import gradio as gr

    with gr.Tab("1 · Data", id="data", elem_id="tab-data"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                gr.Markdown("### Import a file")
                upload = gr.File(label="X archive (.zip), CSV, JSONL or text file", elem_id="upload")
                with gr.Accordion("File options", open=False):
                    fmt = gr.Dropdown(FORMATS, value=AUTO, label="Format", elem_id="format")
                    import_account = gr.Textbox(
                        label="Account name", placeholder="taken from the file", elem_id="import-account"
                    )
                    with gr.Row():
                        text_column = gr.Textbox(label="CSV: text column", placeholder="detected")
                        encoding = gr.Textbox(label="CSV/text: encoding", placeholder="UTF-8, else detected")
                import_button = gr.Button("Import and curate", variant="primary", elem_id="import")
                with gr.Accordion("Fetch from Bluesky, Mastodon or X", open=False, elem_id="fetch-panel"):
                    platform = gr.Radio(PLATFORMS, value="bluesky", label="Platform")
                    handle = gr.Textbox(
                        label="Account",
                        placeholder="jay.bsky.team · @user@mastodon.social · @handle",
                        elem_id="fetch-account",
                    )
                    limit = gr.Number(1000, label="Read at most (posts)", precision=0, minimum=1)
                    with gr.Row():
                        include_replies = gr.Checkbox(False, label="include replies")
                        include_reposts = gr.Checkbox(False, label="include reposts")
                    gr.Markdown(
                        "Bluesky and Mastodon need no account. X needs `X_BEARER_TOKEN` set where "
                        "`tweetlm serve` runs, bills every post read, and serves only the newest 3,200.",
                        elem_classes="tl-note",
                    )
                    fetch_button = gr.Button("Fetch and curate", elem_id="fetch")
            with gr.Column(scale=1):
                gr.Markdown("### Accounts in the store")
                account = gr.Dropdown(label="Account", choices=[], elem_id="data-account")
                with gr.Accordion("Curation rules", open=False, elem_id="rules"):
                    with gr.Row():
                        keep_retweets = gr.Checkbox(False, label="keep retweets")
                        drop_replies = gr.Checkbox(False, label="drop replies")
                    with gr.Row():
                        strip_mentions = gr.Checkbox(False, label="strip leading @mentions")
                        keep_urls = gr.Checkbox(False, label="keep links")
                    min_words = gr.Slider(0, 10, value=3, step=1, label="minimum words", elem_id="min-words")
                    lang = gr.Textbox(label="only this language", placeholder="e.g. en (empty: all)")
                curate_button = gr.Button("Curate", elem_id="curate")
        data_status = gr.HTML(elem_id="data-status")
        with gr.Row(equal_height=False):
            report = gr.HTML(elem_id="report")
            examples = gr.HTML(elem_id="examples")
    return SimpleNamespace(**{k: v for k, v in locals().items() if k != "gr"})


def _train_tab() -> SimpleNamespace:
    """Step 2: the training form, its progress and the queue."""
    import gradio as gr

    with gr.Tab("2 · Train", id="train", elem_id="tab-train"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=2):
                train_accounts = gr.Dropdown(
                    label="Accounts to imitate", choices=[], multiselect=True, elem_id="train-accounts"
                )
                base_model = train_field(
                    "base_model",
                    info="smollm2 (embedded SmolLM2-135M, works offline), an HF model id, or a model folder",
                    elem_id="base-model",
                )
                with gr.Row():
                    epochs = train_field("epochs", minimum=0.01, elem_id="epochs")
                    learning_rate = train_field("learning_rate", step=1e-5)
                with gr.Row():
                    batch_size = train_field("batch_size", minimum=1)
                    max_minutes = train_field("max_minutes", minimum=0)
                with gr.Accordion("More settings", open=False, elem_id="more-settings"):
                    with gr.Row():
                        max_steps = train_field("max_steps", minimum=0, elem_id="max-steps")
                        max_length = train_field("max_length", minimum=8)
                    with gr.Row():
                        seed = train_field("seed")
                        precision = train_field("precision", choices=["auto", "fp32", "bf16"], elem_id="precision")
                with gr.Row():
                    start = gr.Button("Start training", variant="primary", elem_id="start", min_width=90)
                    cancel = gr.Button("Cancel", variant="stop", elem_id="cancel", min_width=70)
                train_status = gr.HTML(elem_id="train-status")
            with gr.Column(scale=3):
                progress = gr.HTML(elem_id="progress")
                chart = gr.HTML(elem_id="chart")
        with gr.Row(equal_height=True):
            gr.Markdown("### Queue")
            clear = gr.Button("Remove waiting jobs", size="sm", scale=0, min_width=160, elem_id="clear-queue")
        queue = gr.HTML(elem_id="queue")
    return SimpleNamespace(**{k: v for k, v in locals().items() if k != "gr"})


def _generate_tab() -> SimpleNamespace:
    """Step 3: pick a run, generate post cards."""
    import gradio as gr

    with gr.Tab("3 · Generate", id="generate", elem_id="tab-generate"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=2):
                with gr.Row(equal_height=True):
                    run = gr.Dropdown(label="Run (newest first)", choices=[], elem_id="run", scale=4)
                    refresh_runs = gr.Button(
                        "↻", size="sm", scale=0, min_width=44, elem_id="refresh-runs", elem_classes="tl-refresh"
                    )
                run_summary = gr.HTML(elem_id="run-summary")
                prompt = gr.Textbox(label="Start of the post", placeholder="I don't like", elem_id="prompt")
                n = gr.Slider(1, 20, value=5, step=1, label="posts", elem_id="n")
                with gr.Row():
                    temperature = gr.Slider(0.1, 2.0, value=TEMPERATURE, step=0.05, label="temperature")
                    top_p = gr.Slider(0.05, 1.0, value=TOP_P, step=0.05, label="top-p")
                with gr.Row():
                    gen_seed = gr.Textbox(label="seed", placeholder="random", elem_id="seed")
                    max_chars = gr.Number(MAX_CHARS, label="max characters", precision=0, minimum=1)
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary", elem_id="generate", min_width=90)
                    regenerate = gr.Button("Regenerate", elem_id="regenerate", min_width=90)
                    copy = gr.Button("Copy", elem_id="copy", min_width=70)
            with gr.Column(scale=3):
                cards = gr.HTML(elem_id="cards")
        with gr.Accordion("Model card", open=False, elem_id="model-card-panel"):
            model_card = gr.Markdown(elem_id="model-card")
        with gr.Accordion("Evaluation", open=False, elem_id="evaluation-panel"):
            evaluation = gr.HTML(elem_id="evaluation")
    return SimpleNamespace(**{k: v for k, v in locals().items() if k != "gr"})


def _wire_data(webapp: WebApp, ui: SimpleNamespace) -> None:
    """Step 1: importing, fetching and curating update the report and both account pickers."""
    import gradio as gr

    rules = [ui.keep_retweets, ui.drop_replies, ui.strip_mentions, ui.keep_urls, ui.min_words, ui.lang]
    data_outputs = [ui.data_status, ui.report, ui.examples, ui.account, ui.train_accounts]

    def data_result(view: Any, picked: list[str] | None) -> tuple[Any, ...]:
        choices, _ = webapp.account_choices()
        selected = list(picked or [])
        if view.account and not selected:
            selected = [view.account]
        return (
            view.status,
            view.report,
            view.examples,
            gr.Dropdown(choices=choices, value=view.account) if view.account else gr.Dropdown(choices=choices),
            gr.Dropdown(choices=choices, value=selected),
        )

    def on_import(
        upload_path: str | None, fmt_: str, who: str, column: str, enc: str, picked: list[str], *r: Any
    ) -> tuple[Any, ...]:
        # The upload is deleted once read, so the file box is cleared for the next one.
        view = webapp.import_upload(upload_path, fmt_, who, column, enc, curate_config(*r))
        return (*data_result(view, picked), None)

    def on_fetch(
        plat: str, who: str, most: float | None, replies: bool, reposts: bool, picked: list[str], *r: Any
    ) -> tuple[Any, ...]:
        return data_result(webapp.fetch(plat, who, most, replies, reposts, curate_config(*r)), picked)

    def on_curate(who: str | None, picked: list[str], *r: Any) -> tuple[Any, ...]:
        return data_result(webapp.curate(who, curate_config(*r)), picked)

    def on_pick(who: str | None) -> tuple[str, str, str]:
        view = webapp.show_account(who)
        return view.status, view.report, view.examples

    ui.import_button.click(
        on_import,
        [ui.upload, ui.fmt, ui.import_account, ui.text_column, ui.encoding, ui.train_accounts, *rules],
        [*data_outputs, ui.upload],
    )
    ui.fetch_button.click(
        on_fetch,
        [ui.platform, ui.handle, ui.limit, ui.include_replies, ui.include_reposts, ui.train_accounts, *rules],
        data_outputs,
    )
    ui.curate_button.click(on_curate, [ui.account, ui.train_accounts, *rules], data_outputs)
    ui.account.input(on_pick, ui.account, [ui.data_status, ui.report, ui.examples])


def _wire_train(webapp: WebApp, ui: SimpleNamespace) -> None:
    """Step 2: start and cancel jobs; the timer polls the queue and offers a finished run."""
    import gradio as gr

    def on_start(accounts: list[str], *values: Any) -> str:
        return webapp.start_training(TrainForm(accounts, dict(zip(TRAIN_FIELDS, values, strict=True))))

    ui.start.click(on_start, [ui.train_accounts, *(getattr(ui, name) for name in TRAIN_FIELDS)], ui.train_status)
    ui.cancel.click(webapp.cancel, None, ui.train_status)
    ui.clear.click(webapp.cancel_waiting, None, ui.train_status)

    def on_tick(seen: str | None) -> tuple[Any, ...]:
        progress_html, chart_html, queue_html, newest = webapp.poll()
        if newest and newest != seen:
            return progress_html, chart_html, queue_html, gr.Dropdown(choices=webapp.runs(), value=newest), newest
        return progress_html, chart_html, queue_html, gr.skip(), seen

    ui.timer.tick(
        on_tick,
        ui.seen_run,
        [ui.progress, ui.chart, ui.queue, ui.run, ui.seen_run],
        show_progress="hidden",
        concurrency_limit=None,
    )


def _wire_generate(webapp: WebApp, ui: SimpleNamespace) -> None:
    """Step 3: a picked run shows its summary, card and evaluation; the buttons generate."""
    import gradio as gr

    def on_run(name: str | None) -> tuple[str, str, str]:
        view = webapp.run_view(name)
        return view.summary, view.card, view.evaluation

    ui.run.change(on_run, ui.run, [ui.run_summary, ui.model_card, ui.evaluation])

    def on_refresh_runs(name: str | None) -> tuple[Any, ...]:
        runs = webapp.runs()
        names = [name_ for _, name_ in runs]
        keep = name if name in names else (names[0] if names else None)
        return (gr.Dropdown(choices=runs, value=keep), *on_run(keep))

    ui.refresh_runs.click(on_refresh_runs, ui.run, [ui.run, ui.run_summary, ui.model_card, ui.evaluation])
    gen_inputs = [ui.run, ui.prompt, ui.n, ui.temperature, ui.top_p, ui.gen_seed, ui.max_chars]
    ui.generate.click(webapp.generate, gen_inputs, ui.cards, show_progress="minimal")
    ui.prompt.submit(webapp.generate, gen_inputs, ui.cards, show_progress="minimal")

    def on_regenerate(name: str | None, text: str, count: float, temp: float, p: float, chars: float | None) -> str:
        return webapp.generate(name, text, count, temp, p, None, chars)

    ui.regenerate.click(
        on_regenerate,
        [ui.run, ui.prompt, ui.n, ui.temperature, ui.top_p, ui.max_chars],
        ui.cards,
        show_progress="minimal",
    )
    ui.copy.click(None, None, None, js=COPY_JS)


def _wire_load(webapp: WebApp, ui: SimpleNamespace, page: gr.Blocks) -> None:
    """A (re)loaded page shows the store as it is now."""
    import gradio as gr

    def on_load() -> tuple[Any, ...]:
        choices, latest = webapp.account_choices()
        view = webapp.show_account(latest)
        runs = webapp.runs()
        newest = runs[0][1] if runs else None
        progress_html, chart_html, queue_html, finished = webapp.poll()
        return (
            gr.Dropdown(choices=choices, value=latest),
            gr.Dropdown(choices=choices, value=[latest] if latest else []),
            view.status,
            view.report,
            view.examples,
            gr.Dropdown(choices=runs, value=newest),
            progress_html,
            chart_html,
            queue_html,
            finished,
        )

    page.load(
        on_load,
        None,
        [
            ui.account,
            ui.train_accounts,
            ui.data_status,
            ui.report,
            ui.examples,
            ui.run,
            ui.progress,
            ui.chart,
            ui.queue,
            ui.seen_run,
        ],
    )


def check_host(host: str, public: bool) -> None:
    """A host other than the loopback needs --public: the app has no login."""
    if host not in LOOPBACK and not public:
        raise InputError(
            f"--host {host} would serve the app to other machines, and it has no login: "
            "add --public if that is what you want"
        )


def check_port(host: str, port: int) -> None:
    """Fail fast, before Gradio loads, when the port is taken or the host is not this machine's."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except socket.gaierror as exc:
            raise InputError(
                f"--host {host} is not a name or address of this machine ({exc.strerror}): "
                "give 127.0.0.1, 0.0.0.0 or one of this machine's addresses"
            ) from None
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise InputError(
                    f"--host {host} is not an address of this machine: give 127.0.0.1, 0.0.0.0 or one of its addresses"
                ) from None
            if exc.errno == errno.EACCES and port < 1024:
                raise InputError(
                    f"cannot listen on port {port} (ports below 1024 need root): pass --port 7860"
                ) from None
            raise InputError(f"cannot listen on {host}:{port} ({exc.strerror}): pass another --port") from None


def serve(host: str, port: int, public: bool, max_upload_mb: int, say: Callable[[str], None]) -> None:
    """Serve the app until Ctrl-C (`say` tells the person at the terminal); uploads live in a temporary
    folder that is removed at the end, and a running training job is stopped at a checkpoint."""
    check_host(host, public)
    check_port(host, port)
    signal.signal(signal.SIGTERM, _stop)  # `kill` stops the server as Ctrl-C does, cleaning up
    upload_dir = Path(tempfile.mkdtemp(prefix="tweetlm-uploads-"))
    os.environ["GRADIO_TEMP_DIR"] = str(upload_dir)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    webapp = WebApp(upload_dir, public=host not in LOOPBACK)  # pages from other machines get less
    try:
        import gradio as gr

        page = build(webapp)
        try:
            page.launch(
                server_name=host,
                server_port=port,
                share=False,
                prevent_thread_lock=True,
                max_file_size=max_upload_mb * 1024 * 1024,
                blocked_paths=[str(paths.home()), str(paths.cache_dir())],
                show_error=False,
                quiet=True,
                footer_links=["gradio"],
                run_history=False,
                mcp_server=False,
                enable_monitoring=False,
                ssr_mode=False,
                pwa=False,
                theme=gr.themes.Default(primary_hue="sky", neutral_hue="slate"),
                css=CSS,
            )
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port}: pass another --port (or --host)") from exc
        say(f"tweetlm web app on {page.local_url or f'http://{host}:{port}/'} (Ctrl-C stops it)")
        page.block_thread()
    finally:
        if any(job.state == RUNNING for job in webapp.queue.jobs()):
            say("stopping the running training job at a checkpoint (Ctrl-C again quits at once)")
        webapp.queue.shutdown(SHUTDOWN_SECONDS)
        shutil.rmtree(upload_dir, ignore_errors=True)


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def train_field(name: str, **layout: Any) -> Any:
    """The page's input for a TrainConfig option, with the option's default and label: a text box, a
    number (whole for whole-number options; 0 for "no limit"), or radio buttons when given `choices`."""
    import gradio as gr

    f = option_fields(TrainConfig, (name,))[0]
    kind = typing.get_type_hints(TrainConfig)[name]
    label, default = f.metadata["label"], f.default if f.default is not None else 0
    if "choices" in layout:
        return gr.Radio(layout.pop("choices"), value=default, label=label, **layout)
    if kind is str:
        return gr.Textbox(default, label=label, **layout)
    whole = int in (kind, *typing.get_args(kind))
    return gr.Number(default, label=label, precision=0 if whole else None, **layout)
