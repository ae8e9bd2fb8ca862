"""Retention: old finished runs lose their payloads (expire) or personal data (redact); the
skeleton, the trees and the audit chain stay; the floor protects what must be kept."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from corral import Corral, RunContext
from corral.agents import Agent
from corral.cli.main import app
from corral.cli.retention import apply_audited, register
from corral.cli.runs import runs_app
from corral.errors import UsageError
from corral.governance.audit import read_entries
from corral.governance.verify import verify_chain
from corral.models import Call, ScriptedModel, reply
from corral.observe import load_run_view
from corral.observe.retention import (
    DAY,
    EXPIRED,
    RetentionRule,
    apply_retention,
    expired_detail,
    expired_error,
    expired_result,
    floor_days,
    list_rules,
    set_rule,
)
from corral.store import RunRecord, StepRecord, Store
from corral.store.scripts import Script, Statement
from corral.testing import FakeClock
from corral.tools import tool

TENANT = "default"
CONTACT = "Ada ada@example.com, card 4111 1111 1111 1111"


@tool
def lookup_order(order_id: str) -> dict[str, str]:
    """Find an order."""
    return {"order_id": order_id, "owner": "ada@example.com"}


def support_agent() -> Agent:
    model = ScriptedModel(
        [
            reply("", Call("lookup_order", {"order_id": "A-1"})),
            reply("", Call("ask_helper", {"task": "check A-1 for ada@example.com"})),
            "Shipped.",
        ]
    )
    helper = Agent("helper", model=ScriptedModel(["checked"]))
    return Agent("support", model=model, tools=[lookup_order], delegates=[helper])


async def save_rule(
    store: Store,
    *,
    days: int,
    action: str = "expire",
    workflow: str | None = None,
    floor: int = 180,
) -> RetentionRule:
    rule = RetentionRule.model_validate(
        {
            "tenant": TENANT,
            "workflow": workflow,
            "action": action,
            "days": days,
            "updated_at": 0.0,
            "updated_by": "ada",
        }
    )
    return await store.run_script(lambda d: set_rule(rule, floor=floor))


async def skeleton(corral: Corral, run_id: str) -> list[tuple[Any, ...]]:
    return [
        (s.seq, s.kind, s.name, s.status, s.started_at, s.finished_at)
        for s in await corral.journal(run_id)
    ]


async def payloads(corral: Corral, run_id: str) -> tuple[RunRecord, list[StepRecord]]:
    return await corral.get_run(run_id), await corral.journal(run_id)


def expired_run(run: RunRecord) -> bool:
    return bool(json.loads(run.input) == EXPIRED)


async def test_old_runs_lose_payloads_new_keep_them_and_the_audit_chain_verifies(
    corral: Corral, clock: FakeClock
) -> None:
    @corral.workflow
    async def fragile(ctx: RunContext, text: str) -> str:
        async def shout(value: str) -> str:
            raise ValueError(f"cannot shout {value}")

        return await ctx.step(shout, text, name="shout")

    agent = support_agent()
    old = await corral.start(agent, f"Where is A-1? {CONTACT}")
    old_failed = await corral.start(fragile, CONTACT)
    await corral.run_until_idle()
    old_view = await load_run_view(corral.store, old.run_id)
    assert old_view is not None
    [old_child] = old_view.children.values()
    old_steps = await skeleton(corral, old.run_id)
    clock.advance(200 * DAY)
    new = await corral.start(agent, f"Where is A-2? {CONTACT}")
    await corral.run_until_idle()
    new_before = await payloads(corral, new.run_id)
    await save_rule(corral.store, days=180)

    report = await apply_audited(corral.store, TENANT, actor="human:ada", now=clock.now())

    [outcome] = report.rules
    assert outcome.runs == 3  # the agent run, its delegated child, the failed run
    assert outcome.payloads_changed > 0
    run, steps = await payloads(corral, old.run_id)
    assert expired_run(run)
    assert json.loads(run.result or "null") == EXPIRED
    assert "ada@example.com" not in repr((run, steps))
    assert await skeleton(corral, old.run_id) == old_steps  # seq, kind, name, status, times
    view = await load_run_view(corral.store, old.run_id)
    assert view is not None
    model_step, tool_step = view.steps[0], view.steps[1]
    assert model_step.model == "scripted:script"  # costs still add up after expiry
    assert model_step.usage is not None
    assert model_step.usage.total_tokens > 0
    assert model_step.message is None
    assert tool_step.tool_value is None
    assert tool_step.decision is not None
    assert tool_step.decision["effect"] == "allow"
    call = tool_step.call
    assert call is not None
    assert call.pop("call_id")
    assert call == {"tool": "lookup_order", "expired": True}
    # The tree stays: the delegated run still hangs under the step that started it.
    [child] = view.children.values()
    assert child.run_id == old_child.run_id
    assert expired_run(child.run)
    failed, [shout] = await payloads(corral, old_failed.run_id)
    assert json.loads(failed.error or "{}") == {
        "code": "step_failed",
        "type": "StepFailed",
        "expired": True,
    }
    assert json.loads(shout.error or "{}") == {
        "code": "exception",
        "type": "ValueError",
        "expired": True,
    }
    assert await payloads(corral, new.run_id) == new_before

    audit = await verify_chain(corral.store, TENANT)
    assert audit.ok, audit.describe()
    entries = await corral.store.read_script(lambda d: read_entries(TENANT))
    [applied] = [e for e in entries if e.kind == "retention.applied"]
    assert sorted(applied.decision_data["runs"]) == sorted(
        [old.run_id, old_child.run_id, old_failed.run_id]
    )
    assert "ada@example.com" not in applied.decision

    again = await apply_audited(corral.store, TENANT, actor="human:ada", now=clock.now())
    assert again.runs == 0
    assert (await verify_chain(corral.store, TENANT)).entries_checked == audit.entries_checked


async def test_the_floor_refuses_short_rules_and_protects_younger_runs(
    corral: Corral, clock: FakeClock
) -> None:
    with pytest.raises(UsageError, match="floor is 180 days"):
        await save_rule(corral.store, days=30)
    assert await corral.store.read_script(lambda d: list_rules(TENANT)) == []
    await save_rule(corral.store, days=30, action="redact")  # redaction keeps the record

    handle = await corral.start(support_agent(), "Where is A-1?")
    await corral.run_until_idle()
    await save_rule(corral.store, days=100, floor=100)  # set while the floor was lower
    clock.advance(150 * DAY)
    report = await apply_retention(corral.store, TENANT, now=clock.now(), floor=180, dry_run=True)
    expire = next(o for o in report.rules if o.rule.action == "expire")
    assert (expire.raised_to_floor, expire.runs) == (True, 0)
    report = await apply_audited(
        corral.store, TENANT, actor="human:ada", now=clock.now(), floor=180
    )
    assert not expired_run(await corral.get_run(handle.run_id))
    clock.advance(31 * DAY)
    report = await apply_audited(
        corral.store, TENANT, actor="human:ada", now=clock.now(), floor=180
    )
    assert expired_run(await corral.get_run(handle.run_id))
    assert (await verify_chain(corral.store, TENANT)).ok


def test_the_floor_setting() -> None:
    assert floor_days({}) == 180
    assert floor_days({"CORRAL_RETENTION_FLOOR_DAYS": "365"}) == 365
    with pytest.raises(UsageError, match="CORRAL_RETENTION_FLOOR_DAYS"):
        floor_days({"CORRAL_RETENTION_FLOOR_DAYS": "six months"})


async def test_redaction_rules_redact_once_and_are_audited(
    corral: Corral, clock: FakeClock
) -> None:
    handle = await corral.start(support_agent(), f"Where is A-1? {CONTACT}")
    await corral.run_until_idle()
    await save_rule(corral.store, days=30, action="redact")
    clock.advance(31 * DAY)
    report = await apply_audited(corral.store, TENANT, actor="human:ada", now=clock.now())
    assert report.runs == 2
    run, steps = await payloads(corral, handle.run_id)
    assert "ada@example.com" not in repr((run, steps))
    assert "[redacted:email]" in run.input
    assert "Shipped." in repr(steps)  # redaction keeps what is not personal
    again = await apply_audited(corral.store, TENANT, actor="human:ada", now=clock.now())
    assert again.runs == 0
    entries = await corral.store.read_script(lambda d: read_entries(TENANT))
    assert [e.kind for e in entries].count("payload.redacted") == 2
    assert (await verify_chain(corral.store, TENANT)).ok


async def test_a_workflows_own_rule_wins_and_batches_cover_every_run(
    corral: Corral, clock: FakeClock
) -> None:
    @corral.workflow
    async def note(ctx: RunContext, text: str) -> str:
        async def keep(value: str) -> str:
            return value

        return await ctx.step(keep, text, name="keep")

    @corral.workflow
    async def ledger(ctx: RunContext, text: str) -> str:
        return text

    notes = [await corral.start(note, f"n{i}") for i in range(5)]
    kept = await corral.start(ledger, "keep me")
    await corral.run_until_idle()
    await save_rule(corral.store, days=180)
    await save_rule(corral.store, days=400, workflow="ledger")
    clock.advance(200 * DAY)

    dry = await apply_retention(corral.store, TENANT, now=clock.now(), dry_run=True)
    assert [(o.rule.scope, o.runs) for o in dry.rules] == [("*", 5), ("ledger", 0)]
    assert not expired_run(await corral.get_run(notes[0].run_id))

    report = await apply_retention(corral.store, TENANT, now=clock.now(), batch_size=2)
    assert [(o.rule.scope, o.runs, o.batches) for o in report.rules] == [
        ("*", 5, 3),
        ("ledger", 0, 0),
    ]
    for handle in notes:
        assert expired_run(await corral.get_run(handle.run_id))
    assert not expired_run(await corral.get_run(kept.run_id))
    # The walk resumes where it stopped: a later apply looks only at newer runs.
    fresh = await corral.start(note, "fresh")
    await corral.run_until_idle()
    clock.advance(201 * DAY)
    later = await apply_retention(corral.store, TENANT, now=clock.now())
    assert [(o.rule.scope, o.runs) for o in later.rules] == [("*", 1), ("ledger", 1)]
    assert expired_run(await corral.get_run(fresh.run_id))


async def test_a_child_is_kept_while_its_parent_runs(corral: Corral, clock: FakeClock) -> None:
    @corral.workflow
    async def leaf(ctx: RunContext, text: str) -> str:
        return text.upper()

    @corral.workflow
    async def root(ctx: RunContext, text: str) -> str:
        child = await ctx.start_child(leaf, text)
        await ctx.wait_for_signal("go")
        return str(await child.result())

    handle = await corral.start(root, "hi")
    await corral.run_until_idle()
    [child] = await corral.list_runs(parent_run_id=handle.run_id)
    assert (await corral.get_run(child.run_id)).status == "succeeded"
    await save_rule(corral.store, days=180)
    clock.advance(200 * DAY)
    report = await apply_retention(corral.store, TENANT, now=clock.now())
    assert report.runs == 0
    await corral.signal(handle.run_id, "go", None)
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "HI"
    # Its parent done, the child's turn comes (the rule's walk did not move past it).
    clock.advance(DAY)
    report = await apply_retention(corral.store, TENANT, now=clock.now())
    assert report.runs == 1
    assert expired_run(await corral.get_run(child.run_id))
    assert not expired_run(await corral.get_run(handle.run_id))


async def test_what_runs_no_longer_need_is_pruned(corral: Corral, clock: FakeClock) -> None:
    @corral.workflow
    async def gate(ctx: RunContext, _: None) -> object:
        return await ctx.wait_for_signal("approve")

    handle = await corral.start(gate)
    await corral.signal(handle.run_id, "approve", {"by": "ada@example.com"})
    await corral.run_until_idle()
    await corral.store.run_script(lambda d: _breaker_history(clock.now()))
    await save_rule(corral.store, days=180)
    clock.advance(200 * DAY)
    await corral.store.run_script(lambda d: _breaker_history(clock.now()))

    dry = await apply_retention(corral.store, TENANT, now=clock.now(), dry_run=True)
    assert dry.history_pruned["breaker_transitions"] == 1
    assert len(await corral.store.list_signals(handle.run_id)) == 1

    report = await apply_audited(corral.store, TENANT, actor="human:ada", now=clock.now())
    [outcome] = report.rules
    assert outcome.pruned["signals"] == 1
    assert report.history_pruned["breaker_transitions"] == 1
    assert report.history_pruned["breakers"] == 1
    assert await corral.store.list_signals(handle.run_id) == []
    left = await corral.store.read_script(lambda d: _count("breaker_transitions"))
    assert left == 1  # the recent one
    assert (await verify_chain(corral.store, TENANT)).ok


def _breaker_history(at: float) -> Script[None]:
    yield Statement(
        "INSERT INTO breaker_transitions (worker, dependency, from_state, to_state, at, calls,"
        " failures, reason) VALUES (?, 'openai:gpt-4o', 'closed', 'open', ?, 10, 6, 'failures')",
        (f"w-{at}", at),
    )
    yield Statement(
        "INSERT INTO breakers (worker, dependency, state, since, calls, failures, opened_count,"
        " updated_at) VALUES (?, 'openai:gpt-4o', 'open', ?, 10, 6, 1, ?)",
        (f"w-{at}", at, at),
    )


def _count(table: str) -> Script[int]:
    found = yield Statement(f"SELECT count(*) FROM {table}")
    return int(found.scalar())


def test_expiry_keeps_what_is_not_a_payload() -> None:
    model = {"message": {"content": "secret"}, "usage": {"input_tokens": 3}, "model": "m:x"}
    assert json.loads(expired_result("step", "model:a", json.dumps(model)) or "") == {
        "usage": {"input_tokens": 3},
        "model": "m:x",
        "expired": True,
    }
    assert expired_result("child.start", "leaf", '"c-1"') == '"c-1"'
    assert expired_result("step", "lookup", '{"a": 1}') == json.dumps(EXPIRED)
    assert expired_result("step", "lookup", None) is None
    assert expired_error("not json") == '{"expired":true}'
    detail = {"attempts": [{"attempt": 1, "code": "x", "error": "E: secret"}], "seconds": 1}
    assert json.loads(expired_detail(json.dumps(detail)) or "") == {
        "attempts": [{"attempt": 1, "code": "x"}],
        "seconds": 1,
    }
    timer = '{"seconds": 5, "wake_at": 10.0}'
    assert expired_detail(timer) == timer  # nothing to remove: unchanged, not counted


# -- the command line -----------------------------------------------------------------------------


@pytest.fixture
def cli_app() -> typer.Typer:
    if not any(group.name == "retention" for group in app.registered_groups):
        register(app, runs_app)
    return app


def test_the_cli_sets_lists_and_applies_rules(cli_app: typer.Typer, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'corral.db'}"
    # The CLI reads the system clock: these runs finished 400 days ago.
    clock = FakeClock(start=time.time() - 400 * DAY)

    async def old_run() -> str:
        async with Corral(database_url=url, clock=clock) as corral:
            handle = await corral.start(support_agent(), f"Where is A-1? {CONTACT}")
            await corral.run_until_idle()
            return handle.run_id

    run_id = asyncio.run(old_run())
    runner = CliRunner()
    env = {
        "CORRAL_DATABASE_URL": url,
        "CORRAL_APP": None,
        "CORRAL_DEBUG": None,
        "CORRAL_RETENTION_FLOOR_DAYS": None,
    }

    def invoke(*args: str) -> Any:
        return runner.invoke(cli_app, ["--as", "ada", *args], env=env)

    refused = invoke("retention", "set", "--days", "30")
    assert refused.exit_code == 2
    assert "retention floor is 180 days" in refused.stderr
    assert invoke("retention", "set", "--days", "365").exit_code == 0
    listed = json.loads(invoke("retention", "list", "--json").stdout)
    assert listed["floor_days"] == 180
    assert [(r["workflow"], r["action"], r["days"]) for r in listed["rules"]] == [
        (None, "expire", 365)
    ]
    dry = json.loads(invoke("retention", "apply", "--dry-run", "--json").stdout)
    assert dry["rules"][0]["runs"] == 2
    done = invoke("retention", "apply")
    assert done.exit_code == 0, done.stderr
    assert "expire * after 365 day(s)" in done.stdout
    assert "2 run(s)" in done.stdout
    shown = json.loads(invoke("runs", "show", run_id, "--json").stdout)
    assert shown["input"] == EXPIRED
    verified = invoke("audit", "verify")
    assert verified.exit_code == 0, verified.stdout + verified.stderr
    assert invoke("retention", "remove").exit_code == 0
    assert invoke("retention", "remove").exit_code == 2
