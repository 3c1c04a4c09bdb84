"""What the web app's buttons do, on top of the library, with no Gradio in sight (so it is testable).

Each action returns HTML for the page; a library error (`TweetlmError`) becomes a readable message
in the page rather than an exception, and anything unexpected is logged and shown the same way, so
one bad upload never takes the server down.

Safety: uploads are read only from the upload folder the server created (Gradio writes them there),
and deleted once imported; runs are addressed by the names of folders in the runs directory, checked
against the list of runs, never by a path from the browser.
"""

from __future__ import annotations

import logging
import shutil
import threading
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tweetlm import paths
from tweetlm.curate import CurateConfig, CurationReport, curate_account
from tweetlm.errors import InputError, TweetlmError, one_line
from tweetlm.generate import GenerateConfig, Generator
from tweetlm.options import option_fields
from tweetlm.runs import CARD_FILE, RunFolder
from tweetlm.sampling import MAX_CHARS
from tweetlm.store import ImportResult, Store, file_hash
from tweetlm.train import TrainConfig
from tweetlm.web import views
from tweetlm.web.jobs import DONE, RUNNING, Job, TrainingQueue

log = logging.getLogger("tweetlm")

AUTO = "auto-detect"


@dataclass
class DataView:
    """What the data step shows after an action."""

    status: str
    report: str = ""
    examples: str = ""
    account: str | None = None  # the account to select in the pickers


@dataclass
class RunView:
    summary: str
    card: str
    evaluation: str


# The train step's fields, in the page's order: each is a TrainConfig option (its default and label).
TRAIN_FIELDS = (
    "base_model",
    "epochs",
    "learning_rate",
    "batch_size",
    "max_minutes",
    "max_steps",
    "max_length",
    "seed",
    "precision",
)


@dataclass(frozen=True)
class TrainForm:
    """The train step as the page sends it: the accounts, and TRAIN_FIELDS by name (a number may be None
    when its box is empty)."""

    accounts: list[str]
    values: dict[str, Any]

    def config(self, accounts: tuple[str, ...]) -> TrainConfig:
        """The TrainConfig these values give: an empty text is the default; 0 means "no limit" for the
        optional limits; whole-number settings are rounded as the page shows them."""
        hints = typing.get_type_hints(TrainConfig)
        values: dict[str, Any] = {}
        for f in option_fields(TrainConfig, tuple(self.values)):
            value, kind = self.values[f.name], hints[f.name]
            if kind is str:
                values[f.name] = (value or "").strip() or f.default
            elif f.default is None:  # a limit: empty or 0 is none
                values[f.name] = (int(value) if int in typing.get_args(kind) else float(value)) if value else None
            elif value is None:
                raise InputError(f"{f.metadata['label']}: type a number")
            else:
                values[f.name] = int(value) if kind is int else float(value)
        return TrainConfig(accounts=accounts, **values)


def curate_config(
    keep_retweets: bool,
    drop_replies: bool,
    strip_mentions: bool,
    keep_urls: bool,
    min_words: float | None,
    lang: str | None,
) -> CurateConfig:
    return CurateConfig(
        drop_retweets=not keep_retweets,
        drop_replies=drop_replies,
        strip_mentions=strip_mentions,
        remove_urls=not keep_urls,
        min_words=int(min_words or 0),
        lang=(lang or "").strip() or None,
    )


@contextmanager
def _warnings() -> Iterator[list[str]]:
    """The warnings the library logs in this thread meanwhile (a guessed encoding, ...), for the page."""
    notes: list[str] = []
    thread = threading.get_ident()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.thread == thread:
                notes.append(record.getMessage())

    handler = Collect(logging.WARNING)
    log.addHandler(handler)
    try:
        yield notes
    finally:
        log.removeHandler(handler)


def _error_text(exc: Exception) -> str:
    if isinstance(exc, TweetlmError):
        return str(exc)
    log.exception("unexpected error in the web app")
    return f"unexpected error ({one_line(exc)}); the server log has the details"


class WebApp:
    """The state one server shares between its pages: the training queue and a loaded generator."""

    def __init__(self, upload_dir: Path, public: bool = False) -> None:
        self.upload_dir = upload_dir.resolve()
        self.public = public
        self.queue = TrainingQueue()
        self._generator: Generator | None = None
        self._generator_lock = threading.Lock()

    # ---- step 1: data --------------------------------------------------------------------------

    def account_choices(self) -> tuple[list[tuple[str, str]], str | None]:
        """(label, account) for every account in the store, alphabetically, and the last imported one."""
        with Store() as store:
            summaries = store.accounts()
        counts: dict[str, int] = {}
        for summary in summaries:
            counts[summary.account] = counts.get(summary.account, 0) + summary.posts
        latest = max(summaries, key=lambda s: s.last_import or "", default=None)
        return [(f"{name} ({n} posts)", name) for name, n in counts.items()], latest.account if latest else None

    def import_upload(
        self,
        upload: str | None,
        fmt: str,
        account: str | None,
        text_column: str | None,
        encoding: str | None,
        config: CurateConfig,
    ) -> DataView:
        if not upload:
            return DataView(views.message("error", "choose a file to upload first"))
        try:
            path = self._uploaded(upload)
        except InputError as exc:
            return DataView(views.message("error", str(exc)))

        # The page knows the file by its name: the server's upload folder is no business of it.
        def shown(text: str) -> str:
            return text.replace(str(path), path.name)

        try:
            with Store() as store, _warnings() as notes:
                result = self._import(store, path, fmt, account, text_column, encoding)
        except Exception as exc:
            return DataView(views.message("error", shown(_error_text(exc))))
        finally:
            shutil.rmtree(path.parent if path.parent != self.upload_dir else path, ignore_errors=True)
        if not result.accounts:
            return DataView(views.message("error", f"{path.name} holds no posts: nothing was imported"))
        done = (
            f"Imported {result.read} posts of {', '.join('@' + a for a in result.accounts)} from {path.name}: "
            f"{result.added} new, {result.skipped} already in the store."
        )
        if len(result.accounts) > 1:
            done += f" Curated @{result.accounts[0]}: pick the others under Accounts in the store."
        view = self._curated(result.accounts[0], config, done)
        view.status = "".join(views.message("info", shown(note)) for note in notes) + view.status
        return view

    def _uploaded(self, upload: str) -> Path:
        path = Path(upload).resolve()
        if not path.is_relative_to(self.upload_dir) or path == self.upload_dir:
            raise InputError("that file was not uploaded through this page: upload it again")
        if not path.is_file():
            raise InputError("the uploaded file is gone (already imported?): upload it again")
        return path

    def _import(
        self,
        store: Store,
        path: Path,
        fmt: str,
        account: str | None,
        text_column: str | None,
        encoding: str | None,
    ) -> ImportResult:
        from tweetlm.sources import ReadOptions, resolve

        if path.stat().st_size == 0:
            raise InputError(f"{path.name} is empty: upload an X archive (.zip), a CSV, a JSONL or a text file")
        source = resolve(path, None if fmt in ("", AUTO) else fmt)
        options = ReadOptions(
            account=(account or "").strip().lstrip("@") or None,
            text_column=(text_column or "").strip() or None,
            encoding=(encoding or "").strip() or None,
        )
        return store.import_posts(
            source.read(path, options), source=source.name, path=f"upload:{path.name}", file_hash=file_hash(path)
        )

    def fetch(
        self,
        platform: str,
        handle: str,
        limit: float | None,
        include_replies: bool,
        include_reposts: bool,
        config: CurateConfig,
    ) -> DataView:
        from tweetlm.sources.online.fetch import FetchOptions, fetch, open_source

        handle = (handle or "").strip()
        if not handle:
            return DataView(views.message("error", "type the account to fetch"))
        try:
            options = FetchOptions(include_replies=include_replies, include_reposts=include_reposts)
            source = open_source(platform, handle, options)
            if self.public:
                _check_public_fetch(source.platform, getattr(source, "base_url", ""))
            with Store() as store:
                summary = fetch(source, store, limit=int(limit) if limit else None)
        except Exception as exc:
            return DataView(views.message("error", _error_text(exc)))
        done = (
            f"Fetched {summary.read} posts of {summary.account} from {platform} ({summary.requests} requests): "
            f"{summary.added} new, {summary.skipped} already in the store."
        )
        if summary.limited:
            done += " Stopped at the limit: fetch again for older posts."
        if not summary.kept:
            return DataView(views.message("info", done), account=None)
        return self._curated(summary.account, config, done)

    def curate(self, account: str | None, config: CurateConfig) -> DataView:
        if not account:
            return DataView(views.message("error", "pick an account (import or fetch one first)"))
        return self._curated(account, config, "")

    def _curated(self, account: str, config: CurateConfig, done: str) -> DataView:
        try:
            with Store() as store:
                dataset, report = curate_account(store, account, config, examples=3)
        except Exception as exc:
            status = (views.message("ok", done) if done else "") + views.message("error", _error_text(exc))
            return DataView(status, account=account)
        note = f"Curated: {report.kept} of {report.downloaded} posts kept. Next: step 2, Train."
        status = views.message("ok", f"{done} {note}".strip())
        return DataView(
            status,
            views.report_table(dataset.account, report, dataset.hash),
            views.examples(dataset.posts, report),
            dataset.account,
        )

    def show_account(self, account: str | None) -> DataView:
        """An account's latest curated dataset, as the last curation left it."""
        if not account:
            return DataView("")
        try:
            with Store() as store:
                name = store.resolve_account(account)
                dataset = store.dataset(name)
                stored = store.count_posts(name)
        except Exception as exc:
            return DataView(views.message("error", _error_text(exc)))
        if dataset is None:
            return DataView(views.message("info", f"@{name} has {stored} posts, not curated yet: press Curate."))
        report = CurationReport.from_dict(dataset.report)
        return DataView(
            views.message("info", f"@{name}: {stored} posts stored; latest curation from {dataset.created_at}."),
            views.report_table(name, report, dataset.hash),
            views.examples(dataset.posts, report),
            name,
        )

    # ---- step 2: train -------------------------------------------------------------------------

    def start_training(self, form: TrainForm) -> str:
        try:
            config = self._train_config(form)
            job = self.queue.submit(config)
        except Exception as exc:
            return views.message("error", _error_text(exc))
        running = [j for j in self.queue.jobs() if j.state == RUNNING and j.id != job.id]
        where = f"waits for job {running[0].id}" if running else "starts now"
        return views.message("ok", f"Job {job.id} ({job.accounts}) is queued and {where}.")

    def _train_config(self, form: TrainForm) -> TrainConfig:
        if not form.accounts:
            raise InputError("pick at least one account to imitate (import one in step 1)")
        with Store() as store:
            accounts = tuple(store.resolve_account(a) for a in form.accounts)
        config = form.config(accounts)
        if Path(config.base_model).expanduser().exists():
            if self.public:
                raise InputError(
                    "model folders on the server cannot be chosen from a public page: use smollm2 or an HF model id"
                )
            from tweetlm.models import resolve_base_model

            resolve_base_model(config.base_model)  # a folder without a model says so now, not after queueing
        return config

    def cancel(self) -> str:
        job = self.queue.cancel_running()
        if job is None:
            return views.message("info", "no job is running")
        return views.message("info", f"Stopping job {job.id} after its current step…")

    def cancel_waiting(self) -> str:
        dropped = self.queue.cancel_waiting()
        return views.message("info", f"Removed {dropped} waiting job{'s' if dropped != 1 else ''} from the queue.")

    def shown_job(self, jobs: list[Job]) -> Job | None:
        """The job the progress panel follows: the running one, else the newest."""
        return next((j for j in jobs if j.state == RUNNING), jobs[-1] if jobs else None)

    def poll(self) -> tuple[str, str, str, str | None]:
        """Progress, loss chart, queue, and the run of the newest finished job (if any)."""
        jobs = self.queue.jobs()
        job = self.shown_job(jobs)
        newest_run = next((j.run_name for j in reversed(jobs) if j.state == DONE and j.run_name), None)
        return views.progress(job), views.loss_chart(job), views.queue_table(jobs), newest_run

    # ---- step 3: generate ----------------------------------------------------------------------

    def runs(self) -> list[tuple[str, str]]:
        """(label, name) of every finished run in the store, newest first."""
        found = []
        for folder, run in RunFolder.all():
            accounts = ", ".join(f"@{a}" for a in run.accounts)
            loss = run.metrics.eval_loss_after
            label = f"{folder.name} · {accounts}" + (f" · loss {loss:.2f}" if isinstance(loss, float) else "")
            found.append((label, folder.name))
        return found

    def _run_dir(self, name: str | None) -> Path:
        if not name:
            raise InputError("pick a run (train one in step 2)")
        if name not in {n for _, n in self.runs()}:
            raise InputError(f"no run named {name!r} in the store: refresh the list")
        return paths.runs_dir() / name

    def run_view(self, name: str | None) -> RunView:
        if not name:
            return RunView(views.empty("No run selected."), "", "")
        try:
            run_dir = self._run_dir(name)
            run = RunFolder(run_dir).read()
        except Exception as exc:
            return RunView(views.message("error", _error_text(exc)), "", "")
        card_file = run_dir / CARD_FILE
        card = views.model_card(card_file.read_text(encoding="utf-8")) if card_file.is_file() else ""
        try:
            result = RunFolder(run_dir).evaluation()
            evaluation = (
                views.eval_table(result)
                if result is not None
                else views.empty(f"No evaluation yet: `tweetlm eval {name}` writes one.")
            )
        except Exception as exc:
            evaluation = views.message("error", _error_text(exc))
        return RunView(views.run_summary(name, run), card or views.empty("This run has no model card."), evaluation)

    def generate(
        self,
        name: str | None,
        prompt: str,
        n: float,
        temperature: float,
        top_p: float,
        seed: str | None,
        max_chars: float | None,
    ) -> str:
        try:
            run_dir = self._run_dir(name)
            config = GenerateConfig(
                n=int(n),
                temperature=float(temperature),
                top_p=float(top_p),
                max_chars=int(max_chars or MAX_CHARS),
                seed=_seed(seed),
            )
            with self._generator_lock:
                generator = self._load(run_dir)
                generation = generator.generate(prompt or "", config)
        except Exception as exc:
            return views.message("error", _error_text(exc))
        return views.cards(generation, generator.run.accounts)

    def _load(self, run_dir: Path) -> Generator:
        """The generator of `run_dir`, loaded once and kept until another run is asked for."""
        if self._generator is None or self._generator.run_dir != run_dir:
            self._generator = None  # free the old model before loading the next
            self._generator = Generator(run_dir)
        return self._generator


def _check_public_fetch(platform: str, url: str) -> None:
    """What a page served to other machines may not make this server fetch."""
    from tweetlm.sources.online.http import is_local

    if platform == "x":
        raise InputError("a public page cannot fetch from X: it spends this server's X API budget (import an archive)")
    if is_local(url):
        raise InputError("a public page cannot make this server fetch from its own addresses")


def _seed(text: str | None) -> int | None:
    """A seed typed in the page: empty means a random one."""
    text = (text or "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise InputError(f"seed {text!r}: type a whole number, or leave it empty for a random one")
    return int(text)
