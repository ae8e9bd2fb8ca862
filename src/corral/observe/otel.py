"""OpenTelemetry export of traces, after the fact, from the journal.

A run's spans are not emitted while it runs: the journal already holds every step with its start
and end, so the span tree (`corral.observe.traces`) is rebuilt from it and exported whenever
asked — by `corral traces export`, or by a periodic exporter calling `export_finished`. Tracing
therefore adds nothing to a step's overhead, and a run can be exported (again) hours later.

Spans follow the OpenTelemetry GenAI semantic conventions:

- an agent run, `invoke_agent <agent>`: `gen_ai.operation.name = invoke_agent`,
  `gen_ai.agent.name`;
- a model step, `chat <model name>` (kind CLIENT): `gen_ai.operation.name = chat`,
  `gen_ai.request.model` (the model asked first), `gen_ai.response.model` (the one that
  answered), `gen_ai.provider.name`, `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`,
  `gen_ai.response.finish_reasons`, `gen_ai.agent.name`;
- a tool step, or the `child.start` of a delegation (`ask_<agent>`), `execute_tool <tool>`:
  `gen_ai.operation.name = execute_tool`, `gen_ai.tool.name`, `gen_ai.tool.call.id`,
  `gen_ai.tool.type`, `gen_ai.agent.name` (the agent whose model asked for it);
- any other run or step: named after its workflow or journal step, without a GenAI operation.

Every span also has `corral.run_id`, `corral.tenant`, `corral.workflow` and (a step)
`corral.step.seq`, `corral.step.name`, `corral.step.kind`, `corral.step.status`; a model step
its `corral.cost_usd`; a failure `error.type` (the error's type), `corral.error.code`, an ERROR
status with the message, and an `exception` event. Retried attempts are `corral.step.retry`
events. Corral's `provider:name` model strings are split into `gen_ai.provider.name` and the
model name, as the conventions have them.

Only `opentelemetry-api` is needed to import this module and export to whatever provider is
configured; the SDK (the `otel` extra) is imported when a function needs it. Span ids are the
journal's (`traces.span_id_for`) when the provider draws its ids from `journal_id_generator()`
(as `journal_tracer_provider` sets up), so an export repeated later gives the same ids; any
other provider gives its own ids, with the same tree.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import trace as trace_api
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from corral.errors import UsageError
from corral.observe.journal_view import RunView, load_run_view
from corral.observe.traces import Span, build_trace
from corral.store import FINISHED_STATUSES, Store
from corral.store.scripts import Script, Statement

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.id_generator import IdGenerator

INSTRUMENTATION = "corral.observe"
"""The instrumentation scope of the spans Corral exports."""

SDK_MISSING = (
    "the OpenTelemetry SDK is not installed: install Corral's `otel` extra "
    "(pip install 'corral[otel]') to export traces"
)

_NS = 1_000_000_000

# The ids the next span must get, for `journal_id_generator()`: set around each start_span.
_journal_ids: ContextVar[tuple[int, int] | None] = ContextVar("corral_journal_ids", default=None)


@dataclass(frozen=True)
class ExportBatch:
    """What one `export_finished` call exported."""

    run_ids: list[str]
    """The root runs exported (each with its descendants), in the order they finished."""
    spans: int
    cursor: float | None
    """When the last exported run finished: the `since` of the next call (None: nothing new)."""
    complete: bool
    """False when `limit` stopped the batch: call again from `cursor` for the rest."""


def export_run(view: RunView | Span, tracer_provider: TracerProvider | None = None) -> Span:
    """Export a run (and its loaded descendants) as one trace; return the span tree exported.

    Args:
        view: The run, as `load_run_view` loads it (a `RunView`), or a span tree already
            built (`traces.build_trace`, `traces.load_trace`).
        tracer_provider: Where the spans go; by default the global provider (which exports
            nothing until an SDK provider is installed with `trace.set_tracer_provider`).
    """
    root = view if isinstance(view, Span) else build_trace(view)
    provider = tracer_provider or trace_api.get_tracer_provider()
    tracer = provider.get_tracer(INSTRUMENTATION, _version())
    parent = None
    if root.parent_span_id is not None:
        # A child run exported on its own: hang it under its parent's span, in its trace.
        parent = trace_api.set_span_in_context(
            trace_api.NonRecordingSpan(
                trace_api.SpanContext(
                    int(root.trace_id, 16),
                    int(root.parent_span_id, 16),
                    is_remote=True,
                    trace_flags=trace_api.TraceFlags(trace_api.TraceFlags.SAMPLED),
                )
            )
        )
    _emit(tracer, root, parent)
    return root


async def export_finished(
    store: Store,
    since: float,
    provider: TracerProvider | None = None,
    *,
    tenant: str | None = None,
    limit: int = 500,
) -> ExportBatch:
    """Export every top-level run that finished after `since` (seconds since the epoch), each
    as one trace with its descendants: what a periodic exporter calls, passing the previous
    batch's `cursor` as `since`.

    Args:
        store: The store the runs are in.
        since: Export runs that finished strictly after this time.
        provider: Where the spans go; by default the global provider.
        tenant: Only this tenant's runs; by default every tenant's.
        limit: At most this many runs per call (`complete` says whether there are more).
    """
    rows = await store.read_script(lambda d: _finished_roots(since, tenant, limit=limit + 1))
    complete = len(rows) <= limit
    if not complete:
        # The cursor must not split an instant: runs that finished at the same time as the
        # first one left out wait for the next call, whose `since` excludes that instant.
        boundary = rows[limit][1]
        rows = [(run_id, at) for run_id, at in rows[:limit] if at != boundary]
        if not rows:  # a whole batch finished at one instant: take that instant whole
            rows = await store.read_script(lambda d: _finished_roots(boundary, tenant, at=True))
    exported: list[str] = []
    spans = 0
    for run_id, _ in rows:
        view = await load_run_view(store, run_id)
        if view is None:
            continue
        root = export_run(view, provider)
        exported.append(run_id)
        spans += sum(1 for _ in root.walk())
    return ExportBatch(
        run_ids=exported,
        spans=spans,
        cursor=rows[-1][1] if rows else None,
        complete=complete,
    )


def journal_id_generator() -> IdGenerator:
    """An SDK id generator that gives spans exported from the journal their journal ids (and
    any other span random ones): pass it as `TracerProvider(id_generator=...)`.

    Raises:
        UsageError: The OpenTelemetry SDK is not installed.
    """
    try:
        from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
    except ImportError as exc:
        raise UsageError(SDK_MISSING) from exc

    class JournalIdGenerator(IdGenerator):
        """Journal ids inside `export_run`; random ids (the SDK's default) elsewhere."""

        def __init__(self) -> None:
            self._random = RandomIdGenerator()

        def generate_span_id(self) -> int:
            ids = _journal_ids.get()
            return ids[1] if ids is not None else self._random.generate_span_id()

        def generate_trace_id(self) -> int:
            ids = _journal_ids.get()
            return ids[0] if ids is not None else self._random.generate_trace_id()

        def is_trace_id_random(self) -> bool:
            return _journal_ids.get() is None

    return JournalIdGenerator()


def journal_tracer_provider(
    exporter: SpanExporter, *, service_name: str = "corral"
) -> SDKTracerProvider:
    """An SDK tracer provider exporting each span to `exporter` as it ends (no batching: an
    export from the journal is already a batch), with journal ids.

    Raises:
        UsageError: The OpenTelemetry SDK is not installed.
    """
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SDKProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    except ImportError as exc:
        raise UsageError(SDK_MISSING) from exc
    provider = SDKProvider(
        resource=Resource.create({"service.name": service_name}),
        id_generator=journal_id_generator(),
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def otel_name(span: Span) -> str:
    """A span's name as the conventions have it: `chat <model>` names the model without
    Corral's provider prefix; other names are `Span.name`."""
    if span.operation == "chat":
        model = _split_model(span.request_model or span.response_model)[1]
        return f"chat {model}" if model else "chat"
    return span.name


def span_attributes(span: Span) -> dict[str, Any]:
    """The OpenTelemetry attributes of a span (GenAI conventions and `corral.*`)."""
    attributes: dict[str, Any] = {
        "corral.run_id": span.run_id,
        "corral.tenant": span.tenant,
        "corral.workflow": span.workflow,
    }
    if span.seq is None:
        attributes["corral.run.status"] = span.journal_status
    else:
        attributes["corral.step.seq"] = span.seq
        attributes["corral.step.name"] = span.journal_name
        attributes["corral.step.kind"] = span.kind
        attributes["corral.step.status"] = span.journal_status
    if span.operation is not None:
        attributes["gen_ai.operation.name"] = span.operation
    if span.agent is not None:
        attributes["gen_ai.agent.name"] = span.agent
    if span.operation == "chat":
        provider, request_model = _split_model(span.request_model)
        response_provider, response_model = _split_model(span.response_model)
        attributes["gen_ai.provider.name"] = provider or response_provider
        attributes["gen_ai.request.model"] = request_model
        attributes["gen_ai.response.model"] = response_model
        if span.journal_status == "succeeded":
            attributes["gen_ai.usage.input_tokens"] = span.input_tokens
            attributes["gen_ai.usage.output_tokens"] = span.output_tokens
        if span.finish_reason is not None:
            attributes["gen_ai.response.finish_reasons"] = (span.finish_reason,)
        attributes["corral.cost_usd"] = span.cost_usd
    if span.operation == "execute_tool":
        attributes["gen_ai.tool.name"] = span.tool
        attributes["gen_ai.tool.call.id"] = span.call_id
        attributes["gen_ai.tool.type"] = "function"
    if span.child_run_id is not None:
        attributes["corral.child_run_id"] = span.child_run_id
    if span.error is not None:
        attributes["error.type"] = span.error.type
        attributes["corral.error.code"] = span.error.code
    if span.finished_at is None:
        attributes["corral.in_progress"] = True
    return {key: value for key, value in attributes.items() if value is not None}


# -- emitting ----------------------------------------------------------------------------------


def _emit(tracer: trace_api.Tracer, span: Span, parent: Any) -> None:
    with _ids(span):
        otel_span = tracer.start_span(
            otel_name(span),
            context=parent,
            kind=SpanKind.CLIENT if span.operation == "chat" else SpanKind.INTERNAL,
            attributes=span_attributes(span),
            start_time=_ns(span.started_at),
        )
    for attempt in span.attempts:
        otel_span.add_event(
            "corral.step.retry",
            _retry_attributes(attempt),
            timestamp=_ns(float(attempt["at"])) if _is_number(attempt.get("at")) else None,
        )
    end = _end_of(span)
    if span.error is not None:
        event: dict[str, Any] = {
            "exception.type": span.error.type,
            "exception.message": span.error.message,
        }
        if span.error.traceback:
            event["exception.stacktrace"] = span.error.traceback
        otel_span.add_event("exception", event, timestamp=_ns(end))
        otel_span.set_status(Status(StatusCode.ERROR, span.error.message or span.error.code))
    elif span.status == "error":
        otel_span.set_status(Status(StatusCode.ERROR, span.journal_status))
    context = trace_api.set_span_in_context(otel_span)
    for child in span.children:
        _emit(tracer, child, context)
    otel_span.end(end_time=_ns(end))


@contextlib.contextmanager
def _ids(span: Span) -> Iterator[None]:
    token = _journal_ids.set((int(span.trace_id, 16), int(span.span_id, 16)))
    try:
        yield
    finally:
        _journal_ids.reset(token)


def _end_of(span: Span) -> float:
    """When a span ends: when its run or step finished; for one still in progress, the latest
    time anything under it is known to have happened."""
    if span.finished_at is not None:
        return span.finished_at
    return max([span.started_at, *(_end_of(child) for child in span.children)])


def _retry_attributes(attempt: Mapping[str, Any]) -> dict[str, Any]:
    attributes = {
        "corral.attempt": attempt.get("attempt"),
        "corral.error.code": attempt.get("code"),
        "exception.message": attempt.get("error"),
        "corral.retry.decision": attempt.get("decision"),
    }
    return {key: value for key, value in attributes.items() if isinstance(value, str | int | float)}


def _split_model(model: str | None) -> tuple[str | None, str | None]:
    """Corral's `provider:name` as the conventions' (provider, model)."""
    if model is None:
        return None, None
    provider, separator, name = model.partition(":")
    return (provider, name) if separator else (None, model)


def _ns(seconds: float) -> int:
    return round(seconds * _NS)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@functools.cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("corral")
    except PackageNotFoundError:
        return "0"


def _finished_roots(
    since: float, tenant: str | None, *, limit: int | None = None, at: bool = False
) -> Script[list[tuple[str, float]]]:
    """Top-level runs that finished after `since` (or, with `at`, exactly then), in the order
    they finished."""
    statuses = sorted(FINISHED_STATUSES)
    marks = ", ".join("?" for _ in statuses)
    when = "updated_at = ?" if at else "updated_at > ?"
    where = f"parent_run_id IS NULL AND status IN ({marks}) AND {when}"
    params: list[Any] = [*statuses, since]
    if tenant is not None:
        where += " AND tenant = ?"
        params.append(tenant)
    sql = f"SELECT run_id, updated_at FROM runs WHERE {where} ORDER BY updated_at, run_id"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    result = yield Statement(sql, tuple(params))
    return [(str(row[0]), float(row[1])) for row in result.rows]


__all__ = [
    "INSTRUMENTATION",
    "ExportBatch",
    "export_finished",
    "export_run",
    "journal_id_generator",
    "journal_tracer_provider",
    "otel_name",
    "span_attributes",
]
