"""A throwaway PostgreSQL server for tests: Debian's binaries, a temp folder, 127.0.0.1, a random free port.

    with PostgresServer() as pg:
        pg.url  # postgresql://tweetlm:<password>@127.0.0.1:<port>/sweeps

`python -m tests.pg` starts one, prints its URL and stops it on Enter (handy to try `tweetlm sweep
--storage` by hand). initdb refuses to run as root, so as root the server runs as the `postgres` user
that Debian's package creates (through `runuser`), in a temp folder handed to that user.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

USER = "tweetlm"
DATABASE = "sweeps"
INSTALL_HINT = "apt-get update && apt-get install -y postgresql"


def find_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin that has initdb, pg_ctl and postgres."""
    candidates = []
    for bin_dir in Path("/usr/lib/postgresql").glob("*/bin"):
        if all((bin_dir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres", "createdb")):
            version = bin_dir.parent.name
            candidates.append((int(version) if version.isdigit() else 0, bin_dir))
    return max(candidates)[1] if candidates else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """Start on `__enter__` (or `start()`), stop and delete everything on `__exit__` (or `stop()`)."""

    def __init__(self) -> None:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise RuntimeError(f"PostgreSQL binaries not found under /usr/lib/postgresql/*/bin: {INSTALL_HINT}")
        self.bin_dir = bin_dir
        self.password = secrets.token_urlsafe(12)
        self.port = free_port()
        self.root: Path | None = None

    @property
    def url(self) -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *args: str, env: dict[str, str] | None = None) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120)
        if done.returncode != 0:
            log = self._log_tail()
            raise RuntimeError(
                f"{args[0]} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}{log}"
            )

    def _log_tail(self) -> str:
        log = self.root / "server.log" if self.root else None
        return "\n" + log.read_text(errors="replace")[-2000:] if log and log.is_file() else ""

    def start(self) -> PostgresServer:
        # Under /tmp itself (world-traversable), not pytest's 0700 tmp folders the postgres user cannot enter.
        self.root = Path(tempfile.mkdtemp(prefix="tweetlm-pg-"))
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        data = self.root / "data"
        self._run(
            "initdb",
            "-D",
            str(data),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-sync",
        )
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=50"
        self._run(
            "pg_ctl", "-D", str(data), "-l", str(self.root / "server.log"), "-o", options, "-w", "-t", "60", "start"
        )
        self._run(
            "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, DATABASE, env={"PGPASSWORD": self.password}
        )
        return self

    def stop(self) -> None:
        if self.root is None:
            return
        try:
            if (self.root / "data" / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> PostgresServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


if __name__ == "__main__":
    with PostgresServer() as server:
        print(server.url, flush=True)
        input("PostgreSQL is running; press Enter to stop it and delete its folder. ")
