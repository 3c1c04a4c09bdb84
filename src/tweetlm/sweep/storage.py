"""Where studies live and how workers share them: Optuna RDB storages (SQLite by default, PostgreSQL
for many machines), the lock that keeps a study at exactly --trials, and re-queued trials."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tweetlm import paths
from tweetlm.errors import InputError, NoDataError

if TYPE_CHECKING:
    import optuna
    from optuna.storages import RDBStorage
    from optuna.trial import FrozenTrial

STORAGE_FILE = "sweeps.sqlite3"
MAX_RETRIES = 2  # a trial whose worker keeps dying (killed for memory?) is retried this often, then left FAILED


def default_storage() -> str:
    return f"sqlite:///{paths.home() / STORAGE_FILE}"


def mask_url(url: str) -> str:
    """The URL with its password hidden (for messages and logs)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable: show only the scheme
        return url.split("://", 1)[0] + "://***" if "://" in url else "***"


def require_optuna() -> None:
    import importlib.util

    for module in ("optuna", "sqlalchemy"):
        if importlib.util.find_spec(module) is None:
            raise InputError(f"sweeps need Optuna: pip install 'tweetlm[sweep]' ({module} is missing)")


def open_storage(url: str | None = None, heartbeat: int | None = None) -> RDBStorage:
    """An Optuna RDB storage; with `heartbeat`, workers heartbeat and silent workers' trials are retried."""
    require_optuna()
    import sqlalchemy.exc
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from sqlalchemy.engine import make_url

    url = url or default_storage()
    masked = mask_url(url)
    shape = "sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError as exc:
        raise InputError(f"--storage {masked} is not a database URL ({shape})") from exc
    engine_kwargs: dict[str, Any] = {}
    if parsed.drivername == "postgresql":
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the sweep extra installs psycopg2.
        url = parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    if parsed.get_backend_name() == "postgresql":
        engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    elif parsed.get_backend_name() == "sqlite":
        engine_kwargs = {"connect_args": {"timeout": 60}}
        if parsed.database and parsed.database != ":memory:":
            folder = Path(parsed.database).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(
                    f"cannot open the sweep database {masked} (cannot create {folder}: {exc.strerror}); check --storage"
                ) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            beat: dict[str, Any] = {}
            if heartbeat is not None:
                beat = {
                    "heartbeat_interval": heartbeat,
                    "grace_period": 3 * heartbeat,  # tolerant of a loaded machine's slow heartbeat thread
                    "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES),
                }
            return RDBStorage(url, engine_kwargs=engine_kwargs, **beat)
    except (sqlalchemy.exc.NoSuchModuleError, ImportError) as exc:
        raise InputError(f"--storage {masked}: no database driver for it ({shape})") from exc
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise InputError(_unreachable(parsed, masked, exc)) from exc


def _unreachable(parsed: Any, masked: str, exc: Exception) -> str:
    reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
    reason = reason.split(" (Background on this error", 1)[0]
    if parsed.password:
        reason = reason.replace(str(parsed.password), "***")
    if parsed.get_backend_name() == "sqlite":
        where = f"SQLite file {parsed.database}"
    else:
        where = f"host {parsed.host or 'localhost'}:{parsed.port or 'default port'}, database {parsed.database}"
    return f"cannot open the sweep database {masked} ({where}): {reason[:300]}; check --storage"


def load_study(name: str, storage: str | None = None) -> optuna.Study:
    """An existing study, or NoDataError naming the studies that exist."""
    import optuna

    if storage is None and not (paths.home() / STORAGE_FILE).is_file():  # looking creates no database
        raise NoDataError(
            f"no sweep study {name!r} in {mask_url(default_storage())} (there are no studies there yet); "
            "run `tweetlm sweep` first"
        )
    rdb = open_storage(storage)
    try:
        return optuna.load_study(study_name=name, storage=rdb)
    except KeyError:
        names = optuna.get_all_study_names(rdb)
        known = f"studies there: {', '.join(names)}" if names else "there are no studies there yet"
        where = mask_url(storage or default_storage())
        raise NoDataError(f"no sweep study {name!r} in {where} ({known}); run `tweetlm sweep` first") from None


def study_name(accounts: tuple[str, ...]) -> str:
    return "sweep-" + "+".join(a.lstrip("@") for a in accounts)


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def budget_used(trials: list[FrozenTrial]) -> int:
    """Trials that use up --trials: all but the FAILED ones that were retried (they live on in their retry)."""
    from optuna.trial import TrialState

    retried = retried_numbers(trials)
    return sum(1 for t in trials if not (t.state == TrialState.FAIL and t.number in retried))


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a copy of an unfinished trial (same parameters), recorded like Optuna's heartbeat retries."""
    import optuna

    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            system_attrs={**trial.system_attrs, "failed_trial": history[0], "retry_history": history},
        )
    )


class BudgetLock:
    """Makes "count the trials, then start one" atomic across workers, so a study never overshoots."""

    def __init__(self, storage: RDBStorage, study: str) -> None:
        from filelock import FileLock
        from sqlalchemy.engine import make_url

        url = make_url(storage.url)
        self.engine = storage.engine if url.get_backend_name() == "postgresql" else None
        self.key = int.from_bytes(hashlib.sha256(f"tweetlm-sweep:{study}".encode()).digest()[:8], "big", signed=True)
        db = url.database if url.get_backend_name() == "sqlite" else None
        self.file = FileLock(f"{db}.lock") if db and db != ":memory:" else None
        self.connection: Any = None

    @contextmanager
    def held(self) -> Iterator[None]:
        if self.engine is not None:
            from sqlalchemy import text

            self.connection = self.engine.connect()
            # A transaction-level lock: it ends with the transaction, or when a killed worker's connection drops.
            self.connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": self.key})
        elif self.file is not None:
            self.file.acquire()
        try:
            yield
        finally:
            self.release()

    def release(self) -> None:
        """Idempotent: the trial releases it as soon as it is RUNNING (and so counted)."""
        if self.connection is not None:
            self.connection.rollback()
            self.connection.close()
            self.connection = None
        if self.file is not None and self.file.is_locked:
            self.file.release()


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)
