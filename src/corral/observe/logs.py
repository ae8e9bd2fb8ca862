"""Structured logs: every log line written inside a run carries the run, step and trace ids.

Workflow code, step bodies, tools and Corral itself log with the standard `logging` module. A
`RunLogFilter` on a handler reads the engine's context (`corral.engine.current_context()`,
`current_step()`) at the moment of the call and attaches what it finds to the record; a
`JsonFormatter` then writes one JSON object per line:

```json
{"time": "2026-11-21T09:14:03.512Z", "level": "INFO", "logger": "shop.refunds",
 "message": "refund sent", "run_id": "3f1c…", "workflow": "refund", "tenant": "default",
 "step_seq": 4, "step_name": "send_refund", "attempt": 1,
 "trace_id": "9b2e…", "span_id": "51c0…", "worker": "host:4121:ab12"}
```

`trace_id` and `span_id` are the ids the run's trace has (`corral.observe.traces`), so a log
line can be found from its span and the other way round. A line written between steps (in the
workflow's own code) has no step; one written while the run replays its journal says
`"replaying": true` (the same line was written when that code first ran). Fields given with
`extra=` are kept. `configure_logging(format="json")` installs all of this on a logger (the
root logger by default); `corral worker --log-format json` uses it.

A child run's lines carry its root run's trace id, as its spans do.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any, Final, Literal, TextIO

from corral.engine import current_context, current_step
from corral.errors import UsageError
from corral.observe.traces import span_id_for, trace_id_for

LogFormat = Literal["text", "json"]
FORMATS: Final[tuple[LogFormat, ...]] = ("text", "json")

FIELDS: Final = (
    "run_id",
    "workflow",
    "tenant",
    "step_seq",
    "step_name",
    "attempt",
    "trace_id",
    "span_id",
    "replaying",
    "worker",
)
"""What `RunLogFilter` attaches to a record (when known), in the order lines show them."""

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has: anything else on a record came from `extra=` (or a filter).
_STANDARD = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)


class RunLogFilter(logging.Filter):
    """Attaches the ids of the run and step the logging code is in (see `FIELDS`).

    Put it on a *handler*: a handler's filters see every record it handles, including those of
    child loggers, and they run in the caller's context, where the engine's context variables
    are set. It never rejects a record, and never overwrites a field given with `extra=`.

    Args:
        worker: The worker id to attach to every record (None: none).
    """

    def __init__(self, *, worker: str | None = None) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in run_fields(worker=self.worker).items():
            if key not in record.__dict__:
                setattr(record, key, value)
        return True


def run_fields(*, worker: str | None = None) -> dict[str, Any]:
    """The ids of the run and step the caller is in (empty outside a run), and `worker`."""
    fields: dict[str, Any] = {}
    ctx = current_context()
    if ctx is not None:
        fields["run_id"] = ctx.run_id
        fields["workflow"] = ctx.workflow
        fields["tenant"] = ctx.tenant
    step = current_step()
    if step is not None:
        fields["run_id"] = step.run_id
        fields["step_seq"] = step.seq
        fields["step_name"] = step.name
        fields["attempt"] = step.attempt
    if "run_id" in fields:
        # A child run's steps are spans of its root's trace (`corral.observe.traces`).
        root = ctx.root_run_id if ctx is not None else fields["run_id"]
        fields["trace_id"] = trace_id_for(root)
        fields["span_id"] = span_id_for(fields["run_id"], fields.get("step_seq"))
        if ctx is not None and step is None and ctx.is_replaying:
            fields["replaying"] = True
    if worker is not None:
        fields["worker"] = worker
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `time` (UTC, ISO 8601), `level`, `logger`, `message`, the
    fields of `RunLogFilter`, fields given with `extra=`, and `exception` (its traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                line[key] = value
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in line and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # default=str: a field that JSON cannot hold is written as text, never dropped.
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The usual one-line text (`TEXT_FORMAT`), with `[run=… step=seq:name]` inside a run."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        run_id = record.__dict__.get("run_id")
        if run_id is None:
            return text
        where = f"run={run_id}"
        seq = record.__dict__.get("step_seq")
        if seq is not None:
            where += f" step={seq}:{record.__dict__.get('step_name')}"
        first, newline, rest = text.partition("\n")  # after the message, before a traceback
        return f"{first} [{where}]{newline}{rest}"


def log_handler(
    format: LogFormat = "json", *, stream: TextIO | None = None, worker: str | None = None
) -> logging.Handler:
    """A stream handler (stderr by default) writing `format`, with a `RunLogFilter`."""
    if format not in FORMATS:
        raise UsageError(f"unknown log format {format!r}: use text or json")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    handler.addFilter(RunLogFilter(worker=worker))
    handler.set_name(_HANDLER_NAME)
    return handler


_HANDLER_NAME = "corral.observe.logs"


def configure_logging(
    format: LogFormat = "json",
    level: int | str = "INFO",
    *,
    logger: str | None = None,
    stream: TextIO | None = None,
    worker: str | None = None,
) -> logging.Handler:
    """Send `logger`'s records (the root logger's by default: every record of the process) to
    `stream` as `format`, from `level` up. Calling it again replaces the handler it installed.

    Args:
        format: "json" (one object per line) or "text".
        level: A `logging` level or its name ("debug", "INFO", …).
        logger: The logger's name; None for the root logger.
        stream: Where lines go (default: stderr).
        worker: The worker id to put on every line.

    Returns:
        The handler installed (remove it with `logging.getLogger(logger).removeHandler`).
    """
    target = logging.getLogger(logger)
    handler = log_handler(format, stream=stream, worker=worker)
    for existing in list(target.handlers):
        if existing.get_name() == _HANDLER_NAME:
            target.removeHandler(existing)
    target.addHandler(handler)
    target.setLevel(level.upper() if isinstance(level, str) else level)
    return handler


@contextlib.contextmanager
def logging_configured(
    format: LogFormat = "json",
    level: int | str = "INFO",
    *,
    logger: str | None = None,
    stream: TextIO | None = None,
    worker: str | None = None,
) -> Iterator[logging.Handler]:
    """`configure_logging` for the duration of a `with` block: the logger's level and handlers
    are as they were afterwards (a command, a test)."""
    target = logging.getLogger(logger)
    previous_level, previous_handlers = target.level, list(target.handlers)
    handler = configure_logging(format, level, logger=logger, stream=stream, worker=worker)
    try:
        yield handler
    finally:
        target.removeHandler(handler)
        for existing in previous_handlers:
            if existing not in target.handlers:
                target.addHandler(existing)
        target.setLevel(previous_level)


def _iso(timestamp: float) -> str:
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


__all__ = [
    "FIELDS",
    "FORMATS",
    "JsonFormatter",
    "LogFormat",
    "RunLogFilter",
    "TextFormatter",
    "configure_logging",
    "log_handler",
    "logging_configured",
    "run_fields",
    "span_id_for",
    "trace_id_for",
]
