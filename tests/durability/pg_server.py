"""A throwaway PostgreSQL server for the suites that restart or watch the database itself.

The machine's server on 127.0.0.1:5432 is shared and must never be restarted, so the chaos and
claim suites `initdb` a cluster of their own into a temporary folder, as the `postgres` OS user
(initdb refuses to run as root), on a free port of 127.0.0.1, and remove it when they finish.
Its log is a file the suites read (`deadlock detected`, crash recovery). `fsync=off`: a crash of
the *server process* (`pg_ctl -m immediate stop`) still loses nothing committed; only an OS crash
would, and no test simulates one.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

BIN_DIRS = (Path("/usr/lib/postgresql/15/bin"), Path("/usr/local/bin"), Path("/usr/bin"))
OS_USER = "postgres"


def _binary(name: str) -> str:
    for folder in BIN_DIRS:
        if (folder / name).exists():
            return str(folder / name)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found in {BIN_DIRS} or PATH")
    return found


def available() -> str | None:
    """Why a throwaway server cannot be started here, or None if it can."""
    try:
        _binary("initdb")
        _binary("pg_ctl")
        pwd.getpwnam(OS_USER)
    except (FileNotFoundError, KeyError) as exc:
        return f"no throwaway PostgreSQL: {exc}"
    if os.geteuid() != 0:
        return "no throwaway PostgreSQL: runuser needs root to act as the postgres user"
    return None


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PgServer:
    """One cluster in a temporary folder owned by `postgres`: start, stop, restart, read log."""

    def __init__(self, *, fsync: bool = False, settings: dict[str, str] | None = None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="corral-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.port = free_port()
        self.settings = {
            "fsync": "on" if fsync else "off",
            "synchronous_commit": "on",
            "full_page_writes": "off" if not fsync else "on",
            "max_connections": "200",
            "unix_socket_directories": str(self.folder),
            "log_min_messages": "warning",
            **(settings or {}),
        }
        self.restarts = 0
        user = pwd.getpwnam(OS_USER)
        os.chown(self.folder, user.pw_uid, user.pw_gid)
        os.chmod(self.folder, 0o700)

    @property
    def url(self) -> str:
        """The server's `test` database, as the suites' URLs name it."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/test"

    def _as_postgres(self, *args: str, timeout: float = 60.0) -> None:
        done = subprocess.run(
            ["runuser", "-u", OS_USER, "--", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.folder,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}\n"
                f"server log:\n{self.log_tail()}"
            )

    def init(self) -> None:
        self._as_postgres(
            _binary("initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        )

    def start(self) -> None:
        options = f"-p {self.port} -h 127.0.0.1 " + " ".join(
            f"-c {key}={value}" for key, value in self.settings.items()
        )
        self._as_postgres(
            _binary("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(
            _binary("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"
        )

    def crash_restart(self, down_for: float = 0.0) -> None:
        """`pg_ctl -m immediate stop` (no shutdown checkpoint: the next start recovers from the
        WAL, as after a crash), then start on the same port."""
        self.stop("immediate")
        if down_for:
            time.sleep(down_for)
        self.start()
        self.restarts += 1

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_database(self, name: str = "test") -> None:
        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def destroy(self) -> None:
        """Stop the server if it runs (immediately: nothing in it is kept) and remove it."""
        try:
            if self.running():
                with contextlib.suppress(Exception):
                    self.stop("immediate")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def throwaway_server(*, settings: dict[str, str] | None = None) -> Iterator[PgServer]:
    """A started server with an empty `test` database; stopped and removed on exit."""
    server = PgServer(settings=settings)
    try:
        server.init()
        server.start()
        server.create_database()
        yield server
    finally:
        server.destroy()
