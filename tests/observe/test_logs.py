"""Structured logs: lines written inside a run carry its run, step and trace ids."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from corral import Corral, RunContext, workflow
from corral.cli.main import app
from corral.observe.logs import (
    configure_logging,
    logging_configured,
    span_id_for,
    trace_id_for,
)
from corral.store import SQLiteStore
from corral.testing import FakeClock

REPO_ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("tests.observe.refunds")


async def send_refund(order: str) -> str:
    log.info("refund sent for %s", order, extra={"amount_usd": 30})
    return f"refunded {order}"


@workflow
async def logged_refund(ctx: RunContext, order: str) -> str:
    """Logs between steps and inside one, then sleeps (so it resumes by replay)."""
    log.info("refunding %s", order)
    done: str = await ctx.step(send_refund, order, name="send_refund")
    await ctx.sleep(60)
    log.info("after the nap")
    return done


@workflow
async def logged_parent(ctx: RunContext, order: str) -> str:
    """Hands the refund to a child run."""
    done: str = await ctx.run_child(logged_child, order)
    return done


@workflow
async def logged_child(ctx: RunContext, order: str) -> str:
    return await ctx.step(send_refund, order, name="send_refund")


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_a_step_that_logs_writes_a_json_line_with_its_run_and_step(
    corral: Corral, clock: FakeClock
) -> None:
    stream = io.StringIO()
    with logging_configured("json", "INFO", logger=log.name, stream=stream, worker="w-1"):
        handle = await corral.start(logged_refund, "A-1")
        await corral.run_until_idle()
        clock.advance(60)
        await corral.run_until_idle()
        log.warning("outside any run")
    run_id = handle.run_id
    first, sent, replayed, after, outside = lines(stream)

    assert sent["message"] == "refund sent for A-1"
    assert (sent["level"], sent["logger"]) == ("INFO", "tests.observe.refunds")
    assert (sent["run_id"], sent["step_seq"], sent["step_name"]) == (run_id, 1, "send_refund")
    assert sent["attempt"] == 1
    assert sent["trace_id"] == trace_id_for(run_id)
    assert sent["span_id"] == span_id_for(run_id, 1)
    assert (sent["workflow"], sent["tenant"], sent["worker"]) == ("logged_refund", "default", "w-1")
    assert sent["amount_usd"] == 30  # fields given with extra= are kept
    assert sent["time"].endswith("Z")
    assert len(sent["trace_id"]) == 32

    # Between steps: the run's ids, no step; its span is the run's.
    assert (first["message"], first["run_id"]) == ("refunding A-1", run_id)
    assert "step_seq" not in first
    assert first["span_id"] == span_id_for(run_id, None)
    assert "replaying" not in first
    # Resumed after the nap, the workflow's code runs again from the top: said so.
    assert (replayed["message"], replayed["replaying"]) == ("refunding A-1", True)
    assert (after["message"], after["run_id"]) == ("after the nap", run_id)
    assert "replaying" not in after
    assert outside == {
        "time": outside["time"],
        "level": "WARNING",
        "logger": "tests.observe.refunds",
        "message": "outside any run",
        "worker": "w-1",
    }
    assert log.handlers == []  # logging_configured put everything back


async def test_text_lines_name_the_run_and_step(corral: Corral) -> None:
    stream = io.StringIO()
    with logging_configured("text", "INFO", logger=log.name, stream=stream):
        handle = await corral.start(logged_refund, "A-2")
        await corral.run_until_idle()
    sent = stream.getvalue().splitlines()[1]
    assert sent.endswith(
        f"INFO tests.observe.refunds: refund sent for A-2 [run={handle.run_id} step=1:send_refund]"
    )


def test_exceptions_and_unusual_fields_stay_one_json_line() -> None:
    stream = io.StringIO()
    with logging_configured("json", logging.DEBUG, logger=log.name, stream=stream):
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            log.exception("failed", extra={"when": object()})
    [line] = stream.getvalue().splitlines()
    data = json.loads(line)
    assert "ValueError: bad" in data["exception"]
    assert data["when"].startswith("<object object")


def test_configuring_twice_replaces_the_handler() -> None:
    target = logging.getLogger("tests.observe.twice")
    try:
        configure_logging("json", logger=target.name, stream=io.StringIO())
        configure_logging("text", "debug", logger=target.name, stream=io.StringIO())
        assert len(target.handlers) == 1
        assert target.level == logging.DEBUG
    finally:
        target.handlers.clear()
        target.setLevel(logging.NOTSET)


def test_trace_ids_are_the_traces_ids() -> None:
    assert trace_id_for("run-1") == trace_id_for("run-1") != trace_id_for("run-2")
    assert int(trace_id_for("run-1"), 16) != 0


def test_the_worker_writes_json_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'corral.db'}"
    asyncio.run(_create(url))
    env = {
        "CORRAL_DATABASE_URL": url,
        "CORRAL_APP": "tests.observe.test_logs",
        "CORRAL_DEBUG": None,
    }
    runner = CliRunner()
    started = runner.invoke(app, ["run", "logged_refund", "-i", '"A-3"'], env=env)
    assert started.exit_code == 0, started.stderr
    run_id = started.stdout.strip()
    bad = runner.invoke(app, ["worker", "--log-format", "yaml"], env=env)
    assert bad.exit_code == 2
    assert "unknown log format 'yaml'" in bad.stderr
    worked = runner.invoke(
        app,
        [
            "worker",
            "--until-idle",
            "--log-format",
            "json",
            "--log-level",
            "info",
            "--worker-id",
            "w-9",
        ],
        env=env,
    )
    assert worked.exit_code == 0, worked.stderr
    records = [json.loads(line) for line in worked.stderr.splitlines() if line.startswith("{")]
    [sent] = [r for r in records if r["message"] == "refund sent for A-3"]
    assert (sent["run_id"], sent["step_name"], sent["worker"]) == (run_id, "send_refund", "w-9")
    assert all(h.get_name() != "corral.observe.logs" for h in logging.getLogger().handlers)


async def _create(url: str) -> None:
    store = SQLiteStore(url)
    await store.open()
    await store.close()


async def test_a_child_runs_lines_carry_its_roots_trace_id(corral: Corral) -> None:
    stream = io.StringIO()
    with logging_configured("json", "INFO", logger=log.name, stream=stream):
        handle = await corral.start(logged_parent, "A-2")
        await corral.run_until_idle()
    assert await handle.wait_for_result() == "refunded A-2"
    (sent,) = lines(stream)
    assert sent["run_id"] != handle.run_id  # written in the child run
    assert sent["trace_id"] == trace_id_for(handle.run_id)  # in the root's trace
    assert sent["span_id"] == span_id_for(sent["run_id"], 1)
