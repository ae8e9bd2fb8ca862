"""The global options of one `corral` invocation, and the `Corral` instance built from them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import typer

from corral import Corral, Workflow
from corral.cli.exits import ExitCode, fail, print_error, reporting_errors
from corral.cli.remote import REMOTE_COMMANDS, Remote, command_path, no_remote_mode
from corral.store import PostgresStore, SQLiteStore, Store, open_store

T = TypeVar("T")

DEFAULT_BUSY_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Settings:
    """What the root command's options (or their environment variables) say."""

    database_url: str
    app: str | None
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT
    tenant: str = "default"
    principal: str = "anonymous"
    """Who is acting (`--as`, CORRAL_PRINCIPAL, else the login name)."""
    server: str | None = None
    """`--server`: commands talk to this Corral server instead of a database (remote mode)."""
    key: str | None = field(default=None, repr=False)
    """`--key`: the API key sent to `server`; never printed (`repr=False`)."""

    @staticmethod
    def of(ctx: typer.Context) -> Settings:
        """The settings of the command of `ctx`; in remote mode, a command without a remote mode
        stops here (exit 2), before it touches a database or a file."""
        settings = ctx.find_object(Settings)
        if settings is None:  # a command invoked without the root callback (never from `corral`)
            raise RuntimeError("corral CLI settings are missing from the command context")
        if settings.server is not None:
            command = command_path(ctx)
            if command not in REMOTE_COMMANDS:
                print_error(no_remote_mode(command).message)
                raise typer.Exit(ExitCode.USAGE)
        return settings

    def remote(self) -> Remote:
        """A client of `--server` with `--key`; use it as `with`, so its connections close."""
        if self.server is None or self.key is None:  # main.root refuses --server without a key
            raise RuntimeError("remote() called without --server and --key")
        return Remote(self.server, self.key)

    def in_tenant(self, tenant: str | None) -> Settings:
        """These settings acting in a command's own `--tenant`, when it gives one. Refused
        (exit 2) with `--server`: a remote command acts in its key's tenant."""
        if tenant is None:
            return self
        if self.server is not None:
            fail("--tenant cannot be used with --server: a remote command acts in its key's tenant")
        return dataclasses.replace(self, tenant=tenant)

    @property
    def scheme(self) -> str:
        return self.database_url.split(":", 1)[0].lower()

    @property
    def database_label(self) -> str:
        """`--database-url` for messages: a password in it is shown as `***`."""
        return redact_password(self.database_url)

    def open_store(self, *, existing: bool = False) -> Store:
        """The store of `--database-url` (not yet open), with the CLI's busy timeout for SQLite.

        `existing=True` refuses to create a database: commands about runs that must already
        exist (list, show, cancel, signal) report a mistyped path or schema instead of creating
        one. `corral db` calls `schema_status()`/`migrate()` on it without opening it, since
        `open()` refuses a database at another schema version.
        """
        if self.scheme == "sqlite":
            return SQLiteStore(
                self.database_url, busy_timeout=self.busy_timeout, create=not existing
            )
        if self.scheme in ("postgresql", "postgres"):
            return PostgresStore(self.database_url, create=not existing)
        return open_store(self.database_url)  # raises the error naming the URL forms

    def corral(
        self,
        workflows: Iterable[Workflow[Any, Any]] = (),
        *,
        existing: bool = False,
        **options: Any,
    ) -> Corral:
        """A fresh `Corral` on the CLI's database; use it as `async with`, so the store closes."""
        options.setdefault("tenant", self.tenant)
        return Corral(store=self.open_store(existing=existing), workflows=workflows, **options)


def redact_password(url: str) -> str:
    """`url` with its password (if any) replaced by `***`, for anything printed."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def run_async(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a command's async body with the CLI's error reporting around it."""
    with reporting_errors():
        return asyncio.run(main())


@contextlib.contextmanager
def on_stop_signals(callback: Callable[[], None]) -> Iterator[None]:
    """Call `callback` on the first SIGINT or SIGTERM; a second one gets the default behaviour.

    Must be entered inside the running event loop. Where signal handlers cannot be installed
    (not the main thread), this does nothing.
    """
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []

    def handle() -> None:
        for signum in installed:
            loop.remove_signal_handler(signum)
        installed.clear()
        callback()

    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, handle)
        except (RuntimeError, ValueError, NotImplementedError):
            continue
        installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
