"""OpenTelemetry export from the journal: the GenAI conventions, the tree, stable ids, the
periodic export, `corral traces export`, and a core that runs without the SDK."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import typer
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from typer.testing import CliRunner

from corral import Corral
from corral.agents import Agent
from corral.cli.observe_traces import register
from corral.cli.session import Settings
from corral.models import Call, ScriptedModel, reply
from corral.observe import load_run_view
from corral.observe.otel import export_finished, export_run, journal_tracer_provider
from corral.observe.traces import span_id_for, trace_id_for
from corral.store import open_store
from corral.testing import FakeClock
from corral.tools import tool

from .test_traces import make_supervisor, supervisor_run


def edges(spans: Sequence[ReadableSpan]) -> list[tuple[str, str | None]]:
    """The tree as sorted (span name, parent span name) pairs."""
    names = {s.context.span_id: s.name for s in spans}
    return sorted((s.name, names[s.parent.span_id] if s.parent else None) for s in spans)


def named(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    [span] = [s for s in spans if s.name == name]
    return span


async def test_a_supervisor_workers_run_exports_as_one_trace_with_genai_attributes(
    corral: Corral, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = await supervisor_run(corral, make_supervisor(clock))
    view = await load_run_view(corral.store, run_id)
    assert view is not None
    exporter = InMemorySpanExporter()
    root = export_run(view, journal_tracer_provider(exporter))
    exported = exporter.get_finished_spans()
    assert len(exported) == len(list(root.walk())) == 13

    # One trace, the journal's: the trace id of the root run, span ids from run_id:seq.
    assert {s.context.trace_id for s in exported} == {int(trace_id_for(run_id), 16)}
    supervisor = named(exported, "invoke_agent supervisor")
    assert supervisor.context.span_id == int(span_id_for(run_id, None), 16)

    # The tree: every step under its run, each worker's run under the call that asked it.
    top = "invoke_agent supervisor"
    assert edges(exported) == [
        ("chat gpt-4o-mini", "invoke_agent billing"),
        ("chat gpt-4o-mini", "invoke_agent shipping"),
        ("chat gpt-4o-mini", top),
        ("chat gpt-4o-mini", top),
        ("chat gpt-4o-mini", top),
        ("child.result agent:billing", top),
        ("child.result agent:shipping", top),
        ("execute_tool ask_billing", top),
        ("execute_tool ask_shipping", top),
        ("execute_tool lookup", top),
        ("invoke_agent billing", "execute_tool ask_billing"),
        ("invoke_agent shipping", "execute_tool ask_shipping"),
        (top, None),
    ]

    # The GenAI conventions.
    [chat] = [
        s
        for s in exported
        if s.attributes
        and (s.attributes["corral.run_id"], s.attributes.get("corral.step.seq")) == (run_id, 1)
    ]
    assert chat.kind == SpanKind.CLIENT
    assert dict(chat.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 500,
        "gen_ai.response.finish_reasons": ("tool_calls",),
        "gen_ai.agent.name": "supervisor",
        "corral.cost_usd": pytest.approx(0.00045),
        "corral.run_id": run_id,
        "corral.tenant": "default",
        "corral.workflow": "agent:supervisor",
        "corral.step.seq": 1,
        "corral.step.name": "model:supervisor",
        "corral.step.kind": "model",
        "corral.step.status": "succeeded",
    }
    lookup = named(exported, "execute_tool lookup").attributes or {}
    assert lookup["gen_ai.operation.name"] == "execute_tool"
    assert lookup["gen_ai.tool.name"] == "lookup"
    assert lookup["gen_ai.tool.call.id"] == "call_supervisor_0_0"
    assert lookup["gen_ai.agent.name"] == "supervisor"
    ask = named(exported, "execute_tool ask_billing").attributes or {}
    assert (ask["gen_ai.operation.name"], ask["gen_ai.tool.name"]) == (
        "execute_tool",
        "ask_billing",
    )
    assert ask["gen_ai.tool.call.id"] == "call_supervisor_1_0"
    billing = named(exported, "invoke_agent billing")
    billing_attributes = billing.attributes or {}
    assert billing_attributes["gen_ai.operation.name"] == "invoke_agent"
    assert billing_attributes["gen_ai.agent.name"] == "billing"
    assert billing_attributes["corral.run_id"] == ask["corral.child_run_id"]
    assert billing.kind == SpanKind.INTERNAL

    # Timestamps are the journal's, not the export's.
    assert supervisor.start_time == round(view.run.created_at * 1e9)
    assert supervisor.end_time == round(view.run.updated_at * 1e9)
    lookup_span = named(exported, "execute_tool lookup")
    assert lookup_span.end_time is not None
    assert lookup_span.start_time is not None
    assert lookup_span.end_time - lookup_span.start_time == 2_000_000_000
    assert all(s.status.status_code == StatusCode.UNSET for s in exported)

    def exported_with(provider: TracerProvider, exporter: InMemorySpanExporter) -> list[Any]:
        export_run(view, provider)
        spans = exporter.get_finished_spans()
        exporter.clear()
        ids = {s.context.span_id: s.name for s in spans}
        return sorted(
            (s.name, ids.get(s.parent.span_id) if s.parent else None, s.context.span_id)
            for s in spans
        )

    # Exporting again gives the same ids.
    journal_exporter = InMemorySpanExporter()
    journal = journal_tracer_provider(journal_exporter)
    first = exported_with(journal, journal_exporter)
    assert exported_with(journal, journal_exporter) == first
    assert {span_id for *_, span_id in first} == {s.context.span_id for s in exported}

    # A provider of the SDK's own (random ids), installed globally: the same tree.
    random_exporter = InMemorySpanExporter()
    plain = TracerProvider()
    plain.add_span_processor(SimpleSpanProcessor(random_exporter))
    monkeypatch.setattr(trace_api, "get_tracer_provider", lambda: plain)
    export_run(view)
    spans = random_exporter.get_finished_spans()
    ids = {s.context.span_id: s.name for s in spans}
    tree = sorted((s.name, ids.get(s.parent.span_id) if s.parent else None) for s in spans)
    assert tree == [(name, parent) for name, parent, _ in first]
    assert {s.context.span_id for s in spans}.isdisjoint({span_id for *_, span_id in first})


async def test_a_failure_exports_error_type_status_and_exception(corral: Corral) -> None:
    @tool
    def refund(order_id: str) -> str:
        """Refund an order."""
        raise RuntimeError(f"gateway refused {order_id}")

    model = ScriptedModel([reply("", Call("refund", {"order_id": "A-1"})), "Sorry."])
    handle = await corral.start(Agent("refunds", model=model, tools=[refund]), "refund A-1")
    await corral.run_until_idle()
    view = await load_run_view(corral.store, handle.run_id)
    assert view is not None
    exporter = InMemorySpanExporter()
    export_run(view, journal_tracer_provider(exporter))
    [failed] = [s for s in exporter.get_finished_spans() if s.name == "execute_tool refund"]
    attributes = failed.attributes or {}
    assert attributes["error.type"] == "RuntimeError"
    assert attributes["corral.error.code"] == "exception"
    assert attributes["corral.step.status"] == "failed"
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.status.description == "gateway refused A-1"
    [event] = [e for e in failed.events if e.name == "exception"]
    event_attributes = event.attributes or {}
    assert event_attributes["exception.type"] == "RuntimeError"
    assert "RuntimeError: gateway refused A-1" in str(event_attributes["exception.stacktrace"])


async def test_export_finished_exports_each_new_top_level_run_once(
    corral: Corral, clock: FakeClock
) -> None:
    start = clock.now()
    supervisor = make_supervisor(clock)
    first = await supervisor_run(corral, supervisor)  # ends at start + 3.5, with two children
    clock.advance(10)
    second = await supervisor_run(corral, supervisor)
    exporter = InMemorySpanExporter()
    provider = journal_tracer_provider(exporter)

    batch = await export_finished(corral.store, start, provider, limit=1)
    assert (batch.run_ids, batch.spans, batch.complete) == ([first], 13, False)
    assert batch.cursor == pytest.approx(start + 3.5)
    batch = await export_finished(corral.store, batch.cursor or 0.0, provider, limit=1)
    assert (batch.run_ids, batch.complete) == ([second], True)
    later = await export_finished(corral.store, batch.cursor or 0.0, provider)
    assert (later.run_ids, later.cursor, later.complete) == ([], None, True)
    traces = {s.context.trace_id for s in exporter.get_finished_spans()}
    assert traces == {int(trace_id_for(first), 16), int(trace_id_for(second), 16)}
    assert len(exporter.get_finished_spans()) == 26

    elsewhere = await export_finished(corral.store, start, provider, tenant="elsewhere")
    assert elsewhere.run_ids == []


def test_the_core_imports_and_traces_without_the_sdk(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.modules["opentelemetry.sdk"] = None  # as if the `otel` extra were not installed
        from corral import Corral
        from corral.agents import Agent
        from corral.errors import UsageError
        from corral.models import ScriptedModel
        from corral.observe.otel import export_run, journal_tracer_provider
        from corral.observe.traces import load_trace

        async def main():
            async with Corral("sqlite:///{tmp_path / "c.db"}") as corral:
                handle = await corral.start(Agent("helper", model=ScriptedModel(["hi"])), "x")
                await corral.run_until_idle()
                root = await load_trace(corral.store, handle.run_id)
                export_run(root)  # the API's no-op provider: nothing to send, no error
                print(root.name, root.totals.model_calls)
            try:
                journal_tracer_provider(None)
            except UsageError as error:
                print("usage error:", error)

        asyncio.run(main())
        assert not any(name.startswith("opentelemetry.sdk.") for name in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "invoke_agent helper 1"
    assert lines[1].startswith("usage error: the OpenTelemetry SDK is not installed")


# -- corral traces export -----------------------------------------------------------------------


def traces_cli(db_url: str, *args: str) -> Any:
    app = typer.Typer()

    @app.callback()
    def root(ctx: typer.Context) -> None:
        ctx.obj = Settings(database_url=db_url, app=None, principal="tester")

    register(app, typer.Typer())
    return CliRunner().invoke(app, list(args))


def test_traces_export_prints_spans_to_the_console(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def build() -> str:
        clock = FakeClock()
        async with Corral(store=open_store(db_url), clock=clock) as corral:
            return await supervisor_run(corral, make_supervisor(clock))

    run_id = asyncio.run(build())
    shown = traces_cli(db_url, "traces", "export", run_id, "--console")
    assert shown.exit_code == 0, shown.output
    assert "exported 1 trace (13 spans)" in shown.stderr
    decoder = json.JSONDecoder()
    spans, text = [], shown.stdout.strip()
    while text:
        span, end = decoder.raw_decode(text)
        spans.append(span)
        text = text[end:].strip()
    assert len(spans) == 13
    assert {s["context"]["trace_id"] for s in spans} == {f"0x{trace_id_for(run_id)}"}
    [root] = [s for s in spans if s["parent_id"] is None]
    assert root["name"] == "invoke_agent supervisor"

    neither = traces_cli(db_url, "traces", "export", run_id)
    assert neither.exit_code == 2
    assert "--console or --otlp" in neither.stderr
    missing = traces_cli(db_url, "traces", "export", "no-such-run", "--console")
    assert missing.exit_code == 2
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    otlp = traces_cli(db_url, "traces", "export", run_id, "--otlp", "http://127.0.0.1:1/v1/traces")
    assert otlp.exit_code == 2
    assert "opentelemetry-exporter-otlp-proto-http" in otlp.stderr
