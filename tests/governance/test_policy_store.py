"""Versioned policies in the store (both backends): apply, unchanged applies, rollback, audit."""

from __future__ import annotations

import asyncio

import pytest

from corral.errors import UsageError
from corral.governance.audit import read_entries, record_hash
from corral.governance.decisions import CallContext
from corral.governance.policies import PolicyError
from corral.governance.policy_store import (
    apply_policy,
    diff_policies,
    get_policy,
    list_policies,
    list_versions,
    load_policy_set,
    rollback_policy,
)
from corral.store import Store

V1 = """name: refunds
description: first
rules:
  - name: large
    match: {tools: [issue_refund]}
    when: args.amount_cents > 50000
    effect: require_approval
    approval: {approvers: [finance], deadline: 4h}
"""
V2 = V1.replace("50000", "20000").replace("first", "second")
BROKEN = V1.replace("effect: require_approval", "effect: maybe")

ADA = "human:ada"


def refund(amount: int) -> CallContext:
    return CallContext(
        tenant="acme",
        workflow="w",
        run_id="r",
        agent="refunds",
        tool="issue_refund",
        arguments={"amount_cents": amount},
        now=0.0,
    )


async def test_versions_grow_only_when_the_text_changes(store: Store) -> None:
    first = await apply_policy(store, "acme", V1, source="refunds.yaml", actor=ADA, now=10.0)
    assert (first.name, first.version, first.changed) == ("refunds", 1, True)
    again = await apply_policy(store, "acme", V1, source="refunds.yaml", actor=ADA, now=11.0)
    assert (again.version, again.changed) == (1, False)
    second = await apply_policy(store, "acme", V2, source="refunds.yaml", actor=ADA, now=12.0)
    assert (second.version, second.changed) == (2, True)

    active = await get_policy(store, "acme", "refunds")
    assert (active.version, active.latest_version, active.document) == (2, 2, V2)
    assert (active.created_by, active.created_at, active.restored_from) == (ADA, 12.0, None)
    old = await get_policy(store, "acme", "refunds", 1)
    assert old.document == V1
    [summary] = await list_policies(store, "acme")
    assert (summary.name, summary.version, summary.versions) == ("refunds", 2, 2)
    assert summary.description == "second"
    assert await list_policies(store, "other-tenant") == []

    entries = await store.read_script(lambda d: read_entries("acme"))
    assert [(e.kind, e.actor, e.subject) for e in entries] == [
        ("policy.applied", ADA, "policy:refunds@1"),
        ("policy.applied", ADA, "policy:refunds@2"),
    ]
    assert entries[1].decision_data["version"] == 2
    assert entries[1].decision_data["source"] == "refunds.yaml"
    assert all(record_hash(e) == e.hash for e in entries)


async def test_rollback_is_a_new_version_with_the_old_text(store: Store) -> None:
    await apply_policy(store, "acme", V1, source="a.yaml", actor=ADA, now=1.0)
    await apply_policy(store, "acme", V2, source="a.yaml", actor=ADA, now=2.0)
    rolled = await rollback_policy(store, "acme", "refunds", 1, actor="human:bo", now=3.0)
    assert (rolled.version, rolled.changed) == (3, True)
    third = await get_policy(store, "acme", "refunds")
    assert (third.version, third.document, third.restored_from) == (3, V1, 1)
    assert third.created_by == "human:bo"
    # Rolling back to the text already active adds nothing.
    same = await rollback_policy(store, "acme", "refunds", 1, actor="human:bo", now=4.0)
    assert (same.version, same.changed) == (3, False)

    entries = await store.read_script(lambda d: read_entries("acme"))
    assert [e.kind for e in entries] == ["policy.applied", "policy.applied", "policy.rolled_back"]
    assert entries[2].actor == "human:bo"
    assert entries[2].subject == "policy:refunds@3"
    assert entries[2].decision_data["restored_from"] == 1

    policies = await load_policy_set(store, "acme")
    assert policies.versions == {"refunds": 3}
    assert policies.decide(refund(30000)).effect == "allow"  # v1's threshold is back


async def test_list_versions_lists_every_version_oldest_first(store: Store) -> None:
    await apply_policy(store, "acme", V1, source="a.yaml", actor=ADA, now=1.0)
    await apply_policy(store, "acme", V2, source="a.yaml", actor=ADA, now=2.0)
    await rollback_policy(store, "acme", "refunds", 1, actor="human:bo", now=3.0)
    versions = await list_versions(store, "acme", "refunds")
    assert [(v.version, v.created_at, v.created_by, v.restored_from) for v in versions] == [
        (1, 1.0, ADA, None),
        (2, 2.0, ADA, None),
        (3, 3.0, "human:bo", 1),
    ]
    assert versions[0].digest == versions[2].digest != versions[1].digest
    with pytest.raises(UsageError, match="no policy 'refund' in tenant 'acme'; its policies"):
        await list_versions(store, "acme", "refund")
    with pytest.raises(UsageError, match="its policies: none"):
        await list_versions(store, "globex", "refunds")


async def test_an_invalid_document_writes_nothing_and_the_active_version_stays(
    store: Store,
) -> None:
    await apply_policy(store, "acme", V1, source="refunds.yaml", actor=ADA, now=1.0)
    with pytest.raises(PolicyError) as caught:
        await apply_policy(store, "acme", BROKEN, source="refunds.yaml", actor=ADA, now=2.0)
    assert caught.value.ids["source"] == "refunds.yaml"
    assert caught.value.ids["line"] == 7
    active = await get_policy(store, "acme", "refunds")
    assert (active.version, active.document) == (1, V1)
    assert len(await store.read_script(lambda d: read_entries("acme"))) == 1


async def test_unknown_names_and_versions_say_what_exists(store: Store) -> None:
    with pytest.raises(
        UsageError, match="no policy 'refunds' in tenant 'acme'; its policies: none"
    ):
        await get_policy(store, "acme", "refunds")
    await apply_policy(store, "acme", V1, source="r.yaml", actor=ADA, now=1.0)
    await apply_policy(store, "acme", "name: lookups\n", source="l.yaml", actor=ADA, now=1.0)
    with pytest.raises(UsageError, match="its policies: lookups, refunds") as caught:
        await get_policy(store, "acme", "refund")
    assert caught.value.code == "policy_not_found"
    with pytest.raises(UsageError, match="has no version 5; its versions are 1 to 1"):
        await get_policy(store, "acme", "refunds", 5)
    with pytest.raises(UsageError, match="has no version 9"):
        await rollback_policy(store, "acme", "refunds", 9, actor=ADA, now=2.0)


async def test_load_policy_set_reads_the_latest_of_each_and_caches(store: Store) -> None:
    assert (await load_policy_set(store, "acme")).empty
    await apply_policy(store, "acme", V1, source="r.yaml", actor=ADA, now=1.0)
    await apply_policy(store, "acme", "name: lookups\n", source="l.yaml", actor=ADA, now=1.0)
    first = await load_policy_set(store, "acme")
    assert first.versions == {"lookups": 1, "refunds": 1}
    assert await load_policy_set(store, "acme") is first  # nothing changed: nothing re-parsed
    assert first.decide(refund(60000)).effect == "require_approval"
    assert first.decide(refund(30000)).effect == "allow"
    await apply_policy(store, "acme", V2, source="r.yaml", actor=ADA, now=2.0)
    second = await load_policy_set(store, "acme")
    assert second.versions == {"lookups": 1, "refunds": 2}
    assert second.decide(refund(30000)).effect == "require_approval"
    assert second.decide(refund(10000)).effect == "allow"
    assert (await load_policy_set(store, "other")).empty


async def test_concurrent_applies_make_consecutive_versions(store: Store) -> None:
    texts = [V1.replace("first", f"edit {n}") for n in range(8)]
    applied = await asyncio.gather(
        *(apply_policy(store, "acme", t, source="r.yaml", actor=ADA, now=1.0) for t in texts)
    )
    assert sorted(a.version for a in applied) == list(range(1, 9))
    entries = await store.read_script(lambda d: read_entries("acme"))
    assert sorted(e.subject for e in entries) == sorted(f"policy:refunds@{n}" for n in range(1, 9))


def test_diff_is_a_unified_diff() -> None:
    text = diff_policies(V1, V2, a_label="refunds@v1", b_label="refunds@v2")
    assert text.startswith("--- refunds@v1\n+++ refunds@v2\n")
    assert "-    when: args.amount_cents > 50000\n" in text
    assert "+    when: args.amount_cents > 20000\n" in text
    assert diff_policies(V1, V1) == ""
    assert diff_policies("a: 1", "a: 2").endswith("+a: 2\n")
