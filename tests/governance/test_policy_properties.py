"""Properties of policy decisions (hypothesis), over random policy sets and random calls.

1. Fail-closed: a condition that errors never lets a call through.
2. Adding a deny rule never allows more: deny/require_approval never become allow, and deny
   stays deny.
3. Default deny: with `default: deny` and no rule about it, unknown tools and agents are denied.
4. decide() is deterministic: same call, same policies (in any order) → same decision.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.governance.decisions import CallContext
from corral.governance.documents import ApprovalSpec, Match, PolicyDocument, Rule
from corral.governance.policies import PolicySet

AGENTS = ["refunds", "lookup", "supervisor"]
TOOLS = ["issue_refund", "lookup_order", "delete_order"]
TENANTS = ["acme", "globex"]
WORKFLOWS = ["handle_ticket", "nightly"]

CONDITIONS = [
    "true",
    "false",
    "has(args.n) && args.n > 5",
    "has(args.n) && args.n == 3",
    "agent.name == 'refunds'",
    "tool.risk == 'high'",
    "budget.run_usd > 1.0",
    "'payments:refund' in agent.scopes",
    "now.getHours() < 12",
    "args.n > 5",  # errors when the call has no `n`
]
FAILING = [
    "args.no_such_argument > 0",  # a missing key
    "1 / 0 == 0",  # division by zero
    "run.id + 1 == 2",  # a type error
    "run.id",  # not a bool
    "budget",  # not a bool
]
APPROVAL = ApprovalSpec(approvers=("finance",), deadline=3600.0)


def globs(names: list[str]) -> st.SearchStrategy[tuple[str, ...]]:
    choices = [*names, "*", f"{names[0][:3]}*", "no_such_*"]
    return st.lists(st.sampled_from(choices), max_size=2).map(tuple)


matches = st.builds(
    Match,
    agents=globs(AGENTS),
    tools=globs(TOOLS),
    tenants=globs(TENANTS),
    workflows=globs(WORKFLOWS),
)
effects = st.sampled_from(["allow", "deny", "require_approval"])


@st.composite
def rules(draw: st.DrawFn, name: str, when: st.SearchStrategy[str | None] | None = None) -> Rule:
    effect = draw(effects)
    return Rule(
        name=name,
        match=draw(matches),
        when=draw(when if when is not None else st.none() | st.sampled_from(CONDITIONS)),
        effect=effect,
        reason=f"{effect} by {name}",
        approval=APPROVAL if effect == "require_approval" else None,
    )


@st.composite
def documents(draw: st.DrawFn, name: str) -> PolicyDocument:
    count = draw(st.integers(min_value=0, max_value=5))
    return PolicyDocument(
        name=name,
        default=draw(st.sampled_from(["allow", "deny"])),
        rules=tuple(draw(rules(f"{name}-rule-{n}")) for n in range(count)),
    )


@st.composite
def policy_lists(draw: st.DrawFn) -> list[tuple[PolicyDocument, int]]:
    names = draw(st.lists(st.sampled_from(["alpha", "beta", "gamma"]), unique=True, max_size=3))
    return [(draw(documents(name)), draw(st.integers(1, 9))) for name in names]


@st.composite
def calls(
    draw: st.DrawFn,
    agents: st.SearchStrategy[str | None] | None = None,
    tools: st.SearchStrategy[str] | None = None,
) -> CallContext:
    arguments: dict[str, Any] = draw(
        st.fixed_dictionaries({}, optional={"n": st.integers(0, 10), "note": st.text(max_size=5)})
    )
    return CallContext(
        tenant=draw(st.sampled_from(TENANTS)),
        workflow=draw(st.sampled_from(WORKFLOWS)),
        run_id="run-1",
        agent=draw(agents if agents is not None else st.sampled_from([*AGENTS, None])),
        agent_scopes=draw(st.sampled_from([(), ("payments:refund",)])),
        tool=draw(tools if tools is not None else st.sampled_from(TOOLS)),
        tool_risk=draw(st.sampled_from(["low", "high"])),
        arguments=arguments,
        budget={"run_usd": draw(st.floats(0, 3))},
        now=draw(st.floats(0, 2e9)),
    )


def with_rule(
    policies: list[tuple[PolicyDocument, int]], rule: Rule, where: int, position: int
) -> list[tuple[PolicyDocument, int]]:
    """`policies` with `rule` inserted into policy number `where` (or a new policy)."""
    if where >= len(policies):
        return [*policies, (PolicyDocument(name="added", rules=(rule,)), 1)]
    document, version = policies[where]
    rules_list = list(document.rules)
    rules_list.insert(min(position, len(rules_list)), rule)
    changed = document.model_copy(update={"rules": tuple(rules_list)})
    return [*policies[:where], (changed, version), *policies[where + 1 :]]


@settings(max_examples=150)
@given(
    policies=policy_lists(),
    call=calls(),
    failing=st.sampled_from(FAILING),
    effect=effects,
    where=st.integers(0, 3),
    position=st.integers(0, 5),
)
def test_a_condition_that_errors_never_allows(
    policies: list[tuple[PolicyDocument, int]],
    call: CallContext,
    failing: str,
    effect: str,
    where: int,
    position: int,
) -> None:
    broken = Rule(
        name="broken",
        when=failing,
        effect=effect,
        approval=APPROVAL if effect == "require_approval" else None,
    )
    decision = PolicySet(with_rule(policies, broken, where, position)).decide(call)
    assert decision.effect == "deny"


@settings(max_examples=150)
@given(
    policies=policy_lists(),
    call=calls(),
    added=rules("added-deny", when=st.none() | st.sampled_from(CONDITIONS + FAILING)),
    where=st.integers(0, 3),
    position=st.integers(0, 5),
)
def test_adding_a_deny_rule_never_allows_more(
    policies: list[tuple[PolicyDocument, int]],
    call: CallContext,
    added: Rule,
    where: int,
    position: int,
) -> None:
    deny = added.model_copy(update={"effect": "deny", "approval": None})
    before = PolicySet(policies).decide(call)
    after = PolicySet(with_rule(policies, deny, where, position)).decide(call)
    if before.effect in ("deny", "require_approval"):
        assert after.effect != "allow", (before, after)
    if before.effect == "deny":
        assert after.effect == "deny", (before, after)


def known_only(names: list[str]) -> st.SearchStrategy[tuple[str, ...]]:
    """Exact known names, at least one: a rule about particular tools or agents."""
    return st.lists(st.sampled_from(names), min_size=1, max_size=2).map(tuple)


@st.composite
def strict_policies(draw: st.DrawFn, about: str) -> list[tuple[PolicyDocument, int]]:
    """A default-deny policy (and maybe others) whose rules all name known tools or agents."""
    field, names = ("tools", TOOLS) if about == "tools" else ("agents", AGENTS)
    policies = []
    for name in draw(st.lists(st.sampled_from(["beta", "gamma"]), unique=True, max_size=2)):
        policies.append((draw(documents(name)), 1))
    count = draw(st.integers(0, 4))
    strict_rules = []
    for n in range(count):
        rule = draw(rules(f"strict-{n}"))
        strict_rules.append(
            rule.model_copy(
                update={"match": rule.match.model_copy(update={field: draw(known_only(names))})}
            )
        )
    policies.append((PolicyDocument(name="alpha", default="deny", rules=tuple(strict_rules)), 1))
    # Other policies' rules must not allow the unknown either: keep only rules about known names.
    confined = []
    for document, version in policies:
        kept = tuple(r for r in document.rules if getattr(r.match, field))
        kept = tuple(r for r in kept if "*" not in "".join(getattr(r.match, field)))
        confined.append((document.model_copy(update={"rules": kept}), version))
    return confined


@settings(max_examples=100)
@given(
    policies=strict_policies("tools"),
    call=calls(tools=st.sampled_from(["wire_transfer", "rm_rf", "model:gpt-x", "issue_refund2"])),
)
def test_default_deny_denies_unknown_tools(
    policies: list[tuple[PolicyDocument, int]], call: CallContext
) -> None:
    decision = PolicySet(policies).decide(call)
    assert decision.effect == "deny"


@settings(max_examples=100)
@given(
    policies=strict_policies("agents"),
    call=calls(agents=st.sampled_from(["intruder", "refunds-evil", None])),
)
def test_default_deny_denies_unknown_agents(
    policies: list[tuple[PolicyDocument, int]], call: CallContext
) -> None:
    decision = PolicySet(policies).decide(call)
    assert decision.effect == "deny"


@settings(max_examples=100)
@given(policies=policy_lists(), call=calls(), seed=st.randoms(use_true_random=False))
def test_decide_is_deterministic(
    policies: list[tuple[PolicyDocument, int]], call: CallContext, seed: Any
) -> None:
    first = PolicySet(policies)
    shuffled = list(policies)
    seed.shuffle(shuffled)
    decision = first.decide(call)
    assert first.decide(call) == decision
    assert PolicySet(shuffled).decide(call) == decision
    assert PolicySet(policies).decide(call.model_copy()) == decision
