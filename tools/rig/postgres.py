"""A throwaway PostgreSQL cluster on a unix socket, for the backend's tests and benchmarks.

``PostgresCluster().start()`` runs Debian's ``initdb`` into a temporary folder
and starts ``postgres`` listening only on a unix socket in that folder, on a
random port number (the socket's name), with fsync off; ``stop()`` stops it
and removes the folder. ``create_database()`` makes a fresh database and
returns its connection URL (``postgresql://knute@/NAME?host=DIR&port=N``).

PostgreSQL refuses to run as root: as root the server runs as the ``postgres``
user (from Debian's package) through ``runuser``, and the folder is given to
that user. Authentication is ``trust`` on the socket, which only this machine
can reach.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from knute.tools.rig.broker import free_port
from knute.tools.rig.wait import wait_for

START_TIMEOUT_S = 60.0
SUPERUSER = "knute"


class PostgresError(RuntimeError):
    """The cluster cannot be created or started; the message says why in one line."""


def find_bin(name: str) -> Path | None:
    """``name`` (``initdb``, ``postgres``, ``pg_ctl``) from Debian's layout or ``$PATH``."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return Path(found[-1])
    on_path = shutil.which(name)
    return Path(on_path) if on_path else None


class PostgresCluster:
    """One PostgreSQL server for the life of a test session or a benchmark run."""

    def __init__(self, workdir: Path | None = None) -> None:
        self.initdb = find_bin("initdb")
        self.pg_ctl = find_bin("pg_ctl")
        if self.initdb is None or self.pg_ctl is None:
            raise PostgresError("PostgreSQL not installed: no initdb/pg_ctl in "
                                "/usr/lib/postgresql/*/bin or on PATH (apt-get install "
                                "postgresql; `make test` does it)")
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="knute-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.started = False

    @property
    def host(self) -> str:
        """The folder holding the server's unix socket (libpq's ``host``)."""
        return str(self.dir)

    def _as_server_user(self, command: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return command
        return ["runuser", "-u", "postgres", "--", *command]

    def _run(self, command: list[str], what: str) -> None:
        done = subprocess.run(self._as_server_user(command), capture_output=True, text=True,
                              check=False, cwd=self.dir)
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()
            raise PostgresError(f"{what} failed (exit {done.returncode}): "
                                f"{last[-1] if last else 'no output'}")

    def start(self) -> PostgresCluster:
        """initdb (first time) and start the server; return self once it accepts connections."""
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        if not self.data.exists():
            self._run([str(self.initdb), "-D", str(self.data), "-U", SUPERUSER,
                       "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"],
                      "initdb")
        options = (f"-k {self.dir} -p {self.port} -c listen_addresses='' -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        self._run([str(self.pg_ctl), "-D", str(self.data), "-l", str(self.dir / "server.log"),
                   "-o", options, "-w", "-t", str(int(START_TIMEOUT_S)), "start"],
                  "pg_ctl start")
        self.started = True
        wait_for(lambda: (self.dir / f".s.PGSQL.{self.port}").exists(), START_TIMEOUT_S,
                 "the PostgreSQL socket")
        return self

    def url(self, database: str = "postgres") -> str:
        """The connection URL of ``database`` on this cluster."""
        return f"postgresql://{SUPERUSER}@/{database}?host={self.dir}&port={self.port}"

    def create_database(self, name: str | None = None) -> str:
        """Create a fresh database (a random name unless given); return its URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log_text(self) -> str:
        """The server's log, for a failing test's message."""
        try:
            return (self.dir / "server.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its folder if this made it."""
        if self.started:
            try:
                self._run([str(self.pg_ctl), "-D", str(self.data), "-m", "fast", "-w",
                           "stop"], "pg_ctl stop")
            finally:
                self.started = False
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
