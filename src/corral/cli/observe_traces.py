"""`corral runs trace`, `corral traces export` and `corral metrics`: traces and metrics, read
from the journal.

`runs trace` prints a run as a tree of spans (the run, its steps, its child runs under the steps
that started them) with durations, tokens and cost; `traces export` sends the same spans to an
OpenTelemetry exporter; `metrics` aggregates calls, errors, latencies, tokens and cost per agent,
tool and model, as a table or in the Prometheus text format.
"""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any, TypeVar

import typer
from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from corral.cli.display import STATUS_STYLES, console, duration
from corral.cli.exits import fail, reporting_errors
from corral.cli.reading import parse_duration, reading
from corral.cli.remote import segment, timestamp
from corral.cli.session import Settings, run_async
from corral.cli.shapes import dumps, iso, output_redactor
from corral.errors import RunNotFound, UsageError
from corral.observe.metrics import Latency, Metrics, collect_metrics, prometheus_text
from corral.observe.otel import export_run, journal_tracer_provider
from corral.observe.traces import Span, SpanError, Totals, load_trace
from corral.store import Store

T = TypeVar("T")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]

traces_app = typer.Typer(
    name="traces",
    help="Export runs' traces (from the journal) to OpenTelemetry.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

TRACE_EPILOG = """\
Examples:

  corral runs trace RUN_ID

  corral runs trace RUN_ID --json | jq '.totals'

One span per run and per step; child runs (delegated agents, fan_out workers) nest under the
step that started them. Each span shows its status, duration, tokens and cost; a run's line shows
the totals of everything under it (a child's calls count once). Needs the viewer role once the
tenant has principals.
"""

EXPORT_EPILOG = """\
Examples:

  corral traces export RUN_ID --console

  corral traces export RUN_ID OTHER_RUN_ID --otlp http://localhost:4318/v1/traces

Each run (with its child runs) is one trace, rebuilt from the journal with the OpenTelemetry GenAI
conventions; exporting a run again gives the same trace and span ids. Needs the OpenTelemetry
SDK (`pip install 'corral[otel]'`); --otlp also needs opentelemetry-exporter-otlp-proto-http.
"""

METRICS_EPILOG = """\
Examples:

  corral metrics

  corral metrics --since 1h

  corral metrics --since 7d --json

  corral metrics --prometheus

Per agent: runs, failed runs, run duration percentiles, model calls, tokens, cost. Per tool and
per model: calls, error rate, latency percentiles (p50, p95, p99). Then the circuit breakers
workers publish. --since counts steps that finished, and runs updated, within that window (s,
m, h, d or w). Needs the viewer role once the tenant has principals.
"""


# -- corral runs trace ------------------------------------------------------------------------


def trace_command(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The run's id.")],
    json_output: JsonOption = False,
) -> None:
    """Show a run as a tree of spans: its steps and child runs, with status, duration, tokens
    and cost per span, and totals."""
    settings = Settings.of(ctx)
    if settings.server is not None:
        with reporting_errors(), settings.remote() as remote:
            answer = remote.get(f"/runs/{segment(run_id)}/trace")
        if json_output:  # the API's shape
            typer.echo(dumps(answer))
            return
        root = span_of(answer["trace_id"], answer["root"])
    else:

        async def read(store: Store) -> Span:
            return await _trace(store, settings, run_id)

        root = run_async(lambda: reading(settings, "trace runs", read))
    spans = sum(1 for _ in root.walk())
    if json_output:
        typer.echo(
            dumps(
                {
                    "run_id": root.run_id,
                    "trace_id": root.trace_id,
                    "spans": spans,
                    "totals": _totals_json(root.totals),
                    "root": _redacted(root.to_json()),
                }
            )
        )
        return
    tree = Tree(_label(root))
    _grow(tree, root)
    console().print(Group(tree, Text(""), Text(_summary(root, spans), style="bold")))


# -- corral traces export ---------------------------------------------------------------------


@traces_app.command("export", epilog=EXPORT_EPILOG)
def export_command(
    ctx: typer.Context,
    run_ids: Annotated[list[str], typer.Argument(metavar="RUN_ID", help="The runs to export.")],
    to_console: Annotated[
        bool, typer.Option("--console", help="Print the spans as JSON (ConsoleSpanExporter).")
    ] = False,
    otlp: Annotated[
        str | None,
        typer.Option(
            "--otlp",
            metavar="URL",
            help="Send the spans to this OTLP/HTTP endpoint (…/v1/traces).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Export runs' traces (each run with its child runs) to OpenTelemetry."""
    settings = Settings.of(ctx)
    if to_console == (otlp is not None):
        fail("say where the spans go: --console or --otlp URL (one of them)")
    with reporting_errors():
        exporter = _exporter(otlp)
        provider = journal_tracer_provider(exporter)

    async def read(store: Store) -> list[Span]:
        return [await _trace(store, settings, run_id) for run_id in run_ids]

    roots = run_async(lambda: reading(settings, "export traces", read))
    try:
        for root in roots:
            export_run(root, provider)
    finally:
        provider.shutdown()  # flushes the exporter
    spans = sum(1 for root in roots for _ in root.walk())
    typer.echo(
        f"exported {len(roots)} trace{'' if len(roots) == 1 else 's'} ({spans} spans)", err=True
    )


def _exporter(otlp: str | None) -> Any:
    """The SDK exporter of the options (imported only now: the SDK is an extra)."""
    if otlp is None:
        try:
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter
        except ImportError as exc:
            raise UsageError(
                "the OpenTelemetry SDK is not installed: pip install 'corral[otel]'"
            ) from exc
        return ConsoleSpanExporter(out=sys.stdout)
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found, unused-ignore]
            OTLPSpanExporter,
        )
    except ImportError as exc:
        raise UsageError(
            "--otlp needs the OTLP exporter: pip install opentelemetry-exporter-otlp-proto-http"
        ) from exc
    return OTLPSpanExporter(endpoint=otlp)


# -- corral metrics ---------------------------------------------------------------------------


def metrics_command(
    ctx: typer.Context,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="DURATION",
            help="Only this recent a window: 90s, 30m, 1h, 7d, 2w.",
            show_default=False,
        ),
    ] = None,
    prometheus: Annotated[
        bool, typer.Option("--prometheus", help="Print the Prometheus text exposition format.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Show calls, error rates, latency percentiles, tokens and cost per agent, tool and model,
    and the circuit breakers' states."""
    settings = Settings.of(ctx)
    if settings.server is not None:
        if since is not None or json_output:
            fail("the server offers the Prometheus text only: drop --since and --json")
        with reporting_errors(), settings.remote() as remote:
            typer.echo(remote.text("/metrics"), nl=False)
        return
    with reporting_errors():
        start = None if since is None else time.time() - parse_duration(since)

    async def read(store: Store) -> Metrics:
        return await collect_metrics(store, since=start, tenant=settings.tenant)

    metrics = run_async(lambda: reading(settings, "see metrics", read))
    if prometheus:
        typer.echo(prometheus_text(metrics), nl=False)
        return
    if json_output:
        typer.echo(dumps(_metrics_json(metrics)))
        return
    if not (metrics.agents or metrics.tools or metrics.models or metrics.breakers):
        window = f" in the last {since}" if since else ""
        typer.echo(f"no runs or steps{window} for tenant {settings.tenant}", err=True)
        return
    out = console()
    for title, table in _metrics_tables(metrics):
        out.print(Text(title, style="bold"))
        out.print(table)


# -- reading ----------------------------------------------------------------------------------


async def _trace(store: Store, settings: Settings, run_id: str) -> Span:
    root = await load_trace(store, run_id)
    # Another tenant's run reads as a missing one.
    if root is None or root.tenant != settings.tenant:
        raise RunNotFound(f"no run {run_id!r} in tenant {settings.tenant}", run_id=run_id)
    return root


# -- showing a trace --------------------------------------------------------------------------


def span_of(trace_id: str, answer: dict[str, Any]) -> Span:
    """A span of the API's trace (remote mode) as `load_trace` builds it, to print alike."""
    error = answer.get("error")
    totals = answer["totals"]
    return Span(
        trace_id=trace_id,
        span_id=answer["span_id"],
        parent_span_id=answer.get("parent_span_id"),
        name=answer["name"],
        kind=answer["kind"],
        operation=answer.get("operation"),
        run_id=answer["run_id"],
        seq=answer.get("seq"),
        tenant="",
        workflow=answer["workflow"],
        journal_name=answer["journal_name"],
        journal_status=answer["journal_status"],
        status=answer["status"],
        started_at=timestamp(answer["started_at"]) or 0.0,
        finished_at=timestamp(answer.get("finished_at")),
        agent=answer.get("agent"),
        request_model=answer.get("request_model"),
        response_model=answer.get("response_model"),
        finish_reason=answer.get("finish_reason"),
        tool=answer.get("tool"),
        call_id=answer.get("call_id"),
        child_run_id=answer.get("child_run_id"),
        input_tokens=answer.get("input_tokens", 0),
        output_tokens=answer.get("output_tokens", 0),
        cost_usd=answer.get("cost_usd"),
        error=None if error is None else SpanError.of(error),
        attempts=tuple(answer.get("attempts", ())),
        children=tuple(span_of(trace_id, child) for child in answer.get("children", ())),
        totals=Totals(
            model_calls=totals["model_calls"],
            input_tokens=totals["input_tokens"],
            output_tokens=totals["output_tokens"],
            cost_usd=totals["cost_usd"],
            unpriced_calls=totals["unpriced_calls"],
        ),
    )


def _grow(tree: Tree, span: Span) -> None:
    for child in span.children:
        _grow(tree.add(_label(child)), child)


def _label(span: Span) -> Text:
    label = Text(span.name, style="bold" if span.kind == "run" else "")
    status_style = STATUS_STYLES.get(span.journal_status, "")
    if span.status == "error":
        status_style = "red"
    label.append("  ")
    label.append(span.journal_status, style=status_style)
    label.append("  ")
    label.append(
        duration(span.started_at, span.finished_at) if span.finished_at else "in progress",
        style="cyan",
    )
    if span.operation == "chat" and span.journal_status == "succeeded":
        label.append(
            f"  {span.input_tokens + span.output_tokens:,} tokens"
            f" ({span.input_tokens:,} in / {span.output_tokens:,} out)  {_cost(span.cost_usd)}"
        )
    if span.children and span.totals.model_calls:
        label.append(f"  Σ {_totals_text(span.totals)}", style="dim")
    if span.error is not None:
        message = output_redactor().redact_text(span.error.message)
        label.append(f"  {span.error.type}: {message}", style="red")
    return label


def _summary(root: Span, spans: int) -> str:
    return (
        f"trace {root.trace_id}: {spans} spans, "
        f"{duration(root.started_at, root.finished_at) if root.finished_at else 'in progress'}, "
        f"{_totals_text(root.totals)}"
    )


def _totals_text(totals: Totals) -> str:
    calls = f"{totals.model_calls} model call{'' if totals.model_calls == 1 else 's'}"
    text = f"{calls}, {totals.total_tokens:,} tokens, {_cost(totals.cost_usd)}"
    if totals.unpriced_calls:
        text += f" ({totals.unpriced_calls} unpriced)"
    return text


def _cost(value: float | None) -> str:
    if value is None:
        return "price unknown"
    if value == 0:
        return "$0"
    # Agent calls often cost fractions of a cent: keep two significant digits of those.
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}" if value >= 0.01 else f"${value:.5f}"


def _totals_json(totals: Totals) -> dict[str, Any]:
    return {
        "model_calls": totals.model_calls,
        "input_tokens": totals.input_tokens,
        "output_tokens": totals.output_tokens,
        "cost_usd": totals.cost_usd,
        "unpriced_calls": totals.unpriced_calls,
    }


def _redacted(span: dict[str, Any]) -> dict[str, Any]:
    """A span's JSON with its error message redacted (the only payload text it carries)."""
    if span.get("error"):
        error = dict(span["error"])
        error["message"] = output_redactor().redact_text(str(error["message"]))
        span = {**span, "error": error}
    return {**span, "children": [_redacted(child) for child in span["children"]]}


# -- showing metrics --------------------------------------------------------------------------


def _metrics_tables(metrics: Metrics) -> list[tuple[str, Table]]:
    tables: list[tuple[str, Table]] = []
    if metrics.agents:
        table = _table(
            "agent",
            "runs",
            "failed",
            "error rate",
            "p50",
            "p95",
            "p99",
            "model calls",
            "tokens in",
            "tokens out",
            "cost",
        )
        for agent in metrics.agents:
            table.add_row(
                Text(agent.agent),
                str(agent.runs),
                str(agent.failed_runs),
                _rate(agent.error_rate, agent.finished_runs),
                *_percentiles(agent.run_latency),
                str(agent.model_calls),
                f"{agent.input_tokens:,}",
                f"{agent.output_tokens:,}",
                _cost(agent.cost_usd)
                + (f" (+{agent.unpriced_calls} unpriced)" if agent.unpriced_calls else ""),
            )
        tables.append(("Agents (runs; tokens and cost of their model calls)", table))
    if metrics.tools:
        table = _table("tool", "calls", "failed", "error rate", "p50", "p95", "p99")
        for tool in metrics.tools:
            table.add_row(
                Text(tool.tool),
                str(tool.calls),
                str(tool.failures),
                _rate(tool.error_rate, tool.calls),
                *_percentiles(tool.latency),
            )
        tables.append(("Tools", table))
    if metrics.models:
        table = _table(
            "model",
            "calls",
            "failed",
            "error rate",
            "p50",
            "p95",
            "p99",
            "tokens in",
            "tokens out",
            "cost",
        )
        for model in metrics.models:
            table.add_row(
                Text(model.model),
                str(model.calls),
                str(model.failures),
                _rate(model.error_rate, model.calls),
                *_percentiles(model.latency),
                f"{model.input_tokens:,}",
                f"{model.output_tokens:,}",
                _cost(model.cost_usd),
            )
        tables.append(("Models", table))
    if metrics.breakers:
        table = _table("dependency", "worker", "state", "calls", "failures", "opened")
        for breaker in metrics.breakers:
            table.add_row(
                Text(breaker.dependency),
                Text(breaker.worker),
                Text(
                    breaker.state,
                    style={"open": "bold red", "half_open": "yellow"}.get(breaker.state, "green"),
                ),
                str(breaker.calls),
                str(breaker.failures),
                str(breaker.opened_count),
            )
        tables.append(("Circuit breakers", table))
    return tables


def _table(*columns: str) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for position, column in enumerate(columns):
        if position == 0:
            table.add_column(column, overflow="fold")
        else:
            table.add_column(column, justify="right", no_wrap=True)
    return table


def _percentiles(latency: Latency | None) -> tuple[str, str, str]:
    if latency is None:
        return ("—", "—", "—")
    return (_seconds(latency.p50), _seconds(latency.p95), _seconds(latency.p99))


def _seconds(value: float) -> str:
    return duration(0.0, value)


def _rate(rate: float, out_of: int) -> str:
    return f"{rate:.1%}" if out_of else "—"


def _latency_json(latency: Latency | None) -> dict[str, float] | None:
    if latency is None:
        return None
    return {
        "count": latency.count,
        "sum": latency.total,
        "p50": latency.p50,
        "p95": latency.p95,
        "p99": latency.p99,
        "max": latency.max,
    }


def _metrics_json(metrics: Metrics) -> dict[str, Any]:
    return {
        "since": iso(metrics.since),
        "tenant": metrics.tenant,
        "agents": [
            {
                "agent": a.agent,
                "runs": a.runs,
                "finished_runs": a.finished_runs,
                "failed_runs": a.failed_runs,
                "error_rate": a.error_rate,
                "run_duration": _latency_json(a.run_latency),
                "model_calls": a.model_calls,
                "model_failures": a.model_failures,
                "input_tokens": a.input_tokens,
                "output_tokens": a.output_tokens,
                "cost_usd": a.cost_usd,
                "unpriced_calls": a.unpriced_calls,
            }
            for a in metrics.agents
        ],
        "tools": [
            {
                "tool": t.tool,
                "calls": t.calls,
                "failures": t.failures,
                "error_rate": t.error_rate,
                "duration": _latency_json(t.latency),
            }
            for t in metrics.tools
        ],
        "models": [
            {
                "model": m.model,
                "calls": m.calls,
                "failures": m.failures,
                "error_rate": m.error_rate,
                "duration": _latency_json(m.latency),
                "input_tokens": m.input_tokens,
                "output_tokens": m.output_tokens,
                "cost_usd": m.cost_usd,
            }
            for m in metrics.models
        ],
        "runs": [
            {"workflow": r.workflow, "status": r.status, "runs": r.runs} for r in metrics.runs
        ],
        "breakers": [
            {
                "worker": b.worker,
                "dependency": b.dependency,
                "state": b.state,
                "since": iso(b.since),
                "calls": b.calls,
                "failures": b.failures,
                "opened_count": b.opened_count,
                "updated_at": iso(b.updated_at),
            }
            for b in metrics.breakers
        ],
    }


def register(app: typer.Typer, runs_app: typer.Typer) -> None:
    """Add `corral runs trace`, `corral traces export` and `corral metrics`."""
    runs_app.command("trace", epilog=TRACE_EPILOG)(trace_command)
    app.add_typer(traces_app, name="traces")
    app.command("metrics", epilog=METRICS_EPILOG)(metrics_command)
