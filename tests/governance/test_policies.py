"""Policy documents and decisions: strict parsing with file and line, and decide()'s semantics."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from corral.errors import UsageError
from corral.governance.conditions import ConditionError, compile_condition, variables_for
from corral.governance.decisions import CallContext
from corral.governance.policies import PolicyError, PolicySet, parse_policy

DEMO = Path(__file__).resolve().parents[2] / "src" / "corral" / "demo"
NOON = dt.datetime(2026, 3, 4, 12, 0, tzinfo=dt.UTC).timestamp()  # a Wednesday


def call(**changes: Any) -> CallContext:
    fields: dict[str, Any] = {
        "tenant": "acme",
        "workflow": "handle_ticket",
        "run_id": "run-1",
        "agent": "refunds",
        "agent_scopes": ("payments:refund",),
        "tool": "issue_refund",
        "tool_risk": "high",
        "tool_scopes": ("payments:refund",),
        "arguments": {"order_id": "A-1001", "amount_cents": 2500},
        "now": NOON,
    }
    fields.update(changes)
    return CallContext(**fields)


def policy(text: str, version: int = 1) -> PolicySet:
    return PolicySet([(parse_policy(text, source="test.yaml"), version)])


def refused(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, source="refunds.yaml")
    return caught.value


# -- parsing ----------------------------------------------------------------------------------


def test_the_example_policy_parses() -> None:
    document = parse_policy(
        (DEMO / "support_policy.yaml").read_text(), source="support_policy.yaml"
    )
    assert document.name == "support"
    approval = next(r for r in document.rules if r.effect == "require_approval").approval
    assert approval is not None
    assert approval.approvers == ("finance",)
    assert approval.deadline == 4 * 3600
    assert approval.on_deadline == "escalate"
    assert approval.escalate_to == ("finance-leads",)
    assert any(r.effect == "deny" for r in document.rules)
    assert any(b.scope == "run" for b in document.budgets)


def test_a_yaml_syntax_error_names_the_line() -> None:
    error = refused("name: refunds\nrules:\n  - name: a\n    effect: [allow\n")
    assert isinstance(error, UsageError)
    assert error.code == "policy_invalid"
    assert error.ids["source"] == "refunds.yaml"
    assert error.ids["line"] == 5
    assert str(error).startswith("refunds.yaml, line 5: YAML syntax error")


def test_a_control_character_names_its_line() -> None:
    # PyYAML's reader refuses it before parsing starts: still a PolicyError with its line.
    error = refused("name: refunds\nrules: []\ndescription: a\x03b\n")
    assert error.ids["line"] == 3
    assert str(error) == (
        "refunds.yaml, line 3: YAML error: special characters are not allowed (U+0003)"
    )


def test_a_bad_effect_names_the_line_and_the_choices() -> None:
    text = "name: refunds\nrules:\n  - name: a\n    when: 'true'\n    effect: alow\n"
    error = refused(text)
    assert error.ids["line"] == 5
    assert str(error) == (
        "refunds.yaml, line 5: rules[0].effect: Input should be 'allow', 'deny' or "
        "'require_approval'"
    )
    assert error.ids["reason"].startswith("rules[0].effect:")


def test_an_unknown_field_is_an_error_with_its_line_and_the_known_fields() -> None:
    text = "name: refunds\nrules:\n  - name: a\n    effect: deny\n    reasn: typo\n"
    error = refused(text)
    assert error.ids["line"] == 5
    assert "rules[0].reasn: unknown field 'reasn'" in str(error)
    assert "known fields: name, match, when, effect, reason, approval" in str(error)
    top = refused("name: refunds\ndefualt: deny\n")
    assert top.ids["line"] == 2
    assert "unknown field 'defualt'" in str(top)


def test_unknown_fields_in_nested_blocks_are_errors() -> None:
    text = (
        "name: refunds\nrules:\n  - name: a\n    match: {tool: [x]}\n    effect: deny\n"
        "  - name: b\n    effect: require_approval\n    approval:\n      approvers: [f]\n"
        "      deadlin: 4h\n"
    )
    error = refused(text)
    assert error.ids["line"] == 4
    assert "rules[0].match.tool: unknown field 'tool'" in str(error)
    assert "line 10: rules[1].approval.deadlin: unknown field 'deadlin'" in str(error)


def test_a_duplicated_key_is_an_error_not_the_last_one_wins() -> None:
    error = refused("name: refunds\nrules:\n  - name: a\n    effect: deny\n    effect: allow\n")
    assert error.ids["line"] == 5
    assert "rules[0].effect: duplicate field" in str(error)


def test_invalid_cel_names_the_line_of_its_when() -> None:
    text = (
        "name: refunds\nrules:\n  - name: ok\n    effect: allow\n"
        "  - name: broken\n    when: args.amount_cents >\n    effect: deny\n"
    )
    error = refused(text)
    assert error.ids["line"] == 6
    assert "rules[1].when: invalid CEL" in str(error)
    assert "Syntax error" in str(error)


def test_a_when_starting_with_an_exclamation_mark_gets_a_hint() -> None:
    error = refused("name: r\nrules:\n  - name: a\n    when: !has(args.x)\n    effect: deny\n")
    assert error.ids["line"] == 4
    assert "must be quoted" in str(error)


def test_require_approval_without_an_approval_block_is_an_error() -> None:
    error = refused("name: r\nrules:\n  - name: big\n    effect: require_approval\n")
    assert error.ids["line"] == 3
    assert "no approval block" in str(error)
    stray = refused(
        "name: r\nrules:\n  - name: a\n    effect: deny\n    approval: {approvers: [x]}\n"
    )
    assert stray.ids["line"] == 5
    assert "only a require_approval rule has an approval block" in str(stray)


def test_escalation_needs_groups_and_a_deadline() -> None:
    error = refused(
        "name: r\nrules:\n  - name: a\n    effect: require_approval\n    approval:\n"
        "      approvers: [f]\n      deadline: 1h\n      on_deadline: escalate\n"
    )
    assert error.ids["line"] == 8
    assert "escalate_to" in str(error)


def test_rule_names_are_unique() -> None:
    error = refused(
        "name: r\nrules:\n  - name: a\n    effect: deny\n  - name: a\n    effect: allow\n"
    )
    assert error.ids["line"] == 5
    assert "duplicate rule 'a'" in str(error)


def test_a_yaml_boolean_where_a_string_belongs_gets_a_hint() -> None:
    error = refused("name: r\nrules:\n  - name: no\n    effect: deny\n")
    assert error.ids["line"] == 3
    assert "YAML reads no as a boolean; quote it: 'no'" in str(error)


def test_every_problem_is_listed_first_line_first() -> None:
    error = refused("name: r\nrules:\n  - name: a\n    effect: nope\n    wen: x\n")
    lines = str(error).splitlines()
    assert lines[0].startswith("refunds.yaml, line 4: rules[0].effect")
    assert lines[1].startswith("refunds.yaml, line 5: rules[0].wen: unknown field")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "found nothing"),
        ("- a\n- b\n", "found list"),
        ("rules: []\n", "name: Field required"),
        ("name: 'has spaces'\n", "name: String should match pattern"),
        ("name: r\nbudgets:\n  - {name: b, scope: run, metric: usd, limit: -1}\n", "limit"),
        (
            "name: r\nbudgets:\n  - {name: b, scope: run, metric: usd, limit: 1, "
            "on_exceed: degrade}\n",
            "degrade_to",
        ),
        (
            "name: r\nbudgets:\n  - {name: b, scope: run, metric: usd, limit: 1, soft_limit: 2}\n",
            "soft_limit 2.0 is above limit 1.0",
        ),
    ],
)
def test_malformed_documents_are_refused(text: str, expected: str) -> None:
    assert expected in str(refused(text))


# -- conditions -------------------------------------------------------------------------------


def test_conditions_see_the_call() -> None:
    variables = variables_for(
        call(budget={"run_usd": 1.25, "run_tool_calls": 3.0}, agent_scopes=("a", "b"))
    )
    holds = [
        "args.amount_cents == 2500 && args.order_id.startsWith('A-')",
        "agent.name == 'refunds' && 'b' in agent.scopes",
        "tool.name == 'issue_refund' && tool.risk == 'high'",
        "run.id == 'run-1' && run.workflow == 'handle_ticket' && run.tenant == 'acme'",
        "budget.run_usd > 1.0 && budget.run_tool_calls + 1 == 4 && budget.tenant_usd_today == 0.0",
        "now.getDayOfWeek() == 3 && now.getHours() == 12",
        "now > timestamp('2026-01-01T00:00:00Z')",
        "!has(args.missing)",
        "[1, 2].all(x, x < args.amount_cents)",  # a macro's own variable is not a typo
    ]
    for expression in holds:
        assert compile_condition(expression, where="t").evaluate(variables), expression


@pytest.mark.parametrize(
    "expression",
    [
        "args.missing > 1",
        "1 / 0 == 1",
        "args.order_id + 1 == 2",
        "args.amount_cents",
        "'yes'",
        "arg.amount_cents > 1",  # a misspelt variable
    ],
)
def test_a_condition_that_errors_or_is_not_a_bool_raises(expression: str) -> None:
    condition = compile_condition(expression, where="refunds v1, rule r")
    with pytest.raises(ConditionError) as caught:
        condition.evaluate(variables_for(call()))
    assert caught.value.ids["where"] == "refunds v1, rule r"
    assert caught.value.ids["expression"] == expression


def test_compile_refuses_empty_and_invalid_expressions() -> None:
    for expression in ["", "   ", "args.x >", "args.x = 1"]:
        with pytest.raises(PolicyError):
            compile_condition(expression, where="t")


# -- decide -----------------------------------------------------------------------------------

REFUNDS = """
name: refunds
rules:
  - name: huge
    match: {tools: [issue_refund]}
    when: args.amount_cents > 500000
    effect: deny
    reason: too much
  - name: large
    match: {agents: [refunds], tools: ["issue_*"]}
    when: args.amount_cents > 50000
    effect: require_approval
    approval: {approvers: [finance], deadline: 4h, on_deadline: reject}
  - name: lookups
    match: {tools: ["lookup_*", "get_*"]}
    effect: allow
  - name: no-deletes
    match: {tools: ["delete_*"]}
    effect: deny
"""


def test_no_policies_allow_everything() -> None:
    empty = PolicySet()
    assert empty.empty
    assert len(empty) == 0
    decision = empty.decide(call(tool="anything"))
    assert decision.allowed
    assert decision.reason == "no rule matched"


def test_rules_match_by_globs_and_conditions() -> None:
    policies = policy(REFUNDS, version=3)
    assert not policies.empty
    assert policies.versions == {"refunds": 3}
    small = policies.decide(call())
    assert small.effect == "allow"
    assert small.rule is None
    large = policies.decide(call(arguments={"amount_cents": 60000}))
    assert (large.effect, large.policy, large.version, large.rule) == (
        "require_approval",
        "refunds",
        3,
        "large",
    )
    assert large.approval is not None
    assert large.approval.approvers == ("finance",)
    huge = policies.decide(call(arguments={"amount_cents": 600000}))
    assert (huge.effect, huge.rule, huge.reason) == ("deny", "huge", "too much")
    lookup = policies.decide(call(tool="lookup_order", arguments={}))
    assert (lookup.effect, lookup.rule) == ("allow", "lookups")
    assert "allowed by rule lookups of policy refunds v3" in lookup.reason
    assert policies.decide(call(tool="delete_order")).rule == "no-deletes"
    # Globs match whole names, case-sensitively.
    assert policies.decide(call(tool="x_delete_order")).rule is None
    assert policies.decide(call(tool="Delete_order")).rule is None
    # The `large` rule names an agent: another agent's large refund is not matched by it.
    other = policies.decide(call(agent="supervisor", arguments={"amount_cents": 60000}))
    assert other.effect == "allow"


def test_a_call_without_an_agent_matches_only_rules_without_agents() -> None:
    policies = policy(
        "name: p\nrules:\n  - name: any-agent\n    match: {agents: ['*']}\n    effect: deny\n"
        "  - name: no-agent-field\n    match: {tools: [t]}\n    effect: require_approval\n"
        "    approval: {approvers: [ops]}\n"
    )
    assert policies.decide(call(agent=None, tool="t")).rule == "no-agent-field"
    assert policies.decide(call(agent=None, tool="u")).effect == "allow"
    assert policies.decide(call(agent="a", tool="u")).rule == "any-agent"


def test_tenants_and_workflows_are_matched() -> None:
    policies = policy(
        "name: p\nrules:\n  - name: r\n    match: {tenants: ['acme*'], workflows: [nightly_*]}\n"
        "    effect: deny\n"
    )
    assert policies.decide(call(tenant="acme-eu", workflow="nightly_batch")).effect == "deny"
    assert policies.decide(call(tenant="other", workflow="nightly_batch")).effect == "allow"
    assert policies.decide(call(tenant="acme", workflow="handle_ticket")).effect == "allow"


def test_deny_beats_approval_beats_allow_across_policies() -> None:
    allow = parse_policy("name: a\nrules:\n  - name: ok\n    effect: allow\n", source="a")
    approve = parse_policy(
        "name: b\nrules:\n  - name: ask\n    effect: require_approval\n"
        "    approval: {approvers: [x]}\n",
        source="b",
    )
    deny = parse_policy("name: c\nrules:\n  - name: never\n    effect: deny\n", source="c")
    assert PolicySet([(allow, 1), (approve, 2), (deny, 3)]).decide(call()).rule == "never"
    assert PolicySet([(allow, 1), (approve, 2)]).decide(call()).rule == "ask"
    assert PolicySet([(allow, 1)]).decide(call()).rule == "ok"


def test_ties_go_to_the_policy_name_then_rule_order() -> None:
    first = parse_policy(
        "name: alpha\nrules:\n  - name: a1\n    effect: deny\n  - name: a2\n    effect: deny\n",
        source="a",
    )
    second = parse_policy("name: beta\nrules:\n  - name: b1\n    effect: deny\n", source="b")
    for order in ([(first, 1), (second, 1)], [(second, 1), (first, 1)]):
        decision = PolicySet(order).decide(call())
        assert (decision.policy, decision.rule) == ("alpha", "a1")


def test_default_deny_denies_what_no_rule_allows_and_names_the_policy() -> None:
    strict = parse_policy(
        "name: strict\ndefault: deny\nrules:\n  - name: lookups\n    match: {tools: [lookup_*]}\n"
        "    effect: allow\n",
        source="s",
    )
    lenient = parse_policy("name: lenient\n", source="l")
    policies = PolicySet([(strict, 7), (lenient, 1)])
    assert policies.decide(call(tool="lookup_order")).effect == "allow"
    denied = policies.decide(call(tool="unknown_tool", agent="stranger"))
    assert (denied.effect, denied.policy, denied.version, denied.rule) == (
        "deny",
        "strict",
        7,
        None,
    )
    assert "strict denies by default" in denied.reason
    assert "unknown_tool" in denied.reason


def test_a_condition_error_denies_naming_policy_version_rule_and_error() -> None:
    policies = policy(
        "name: p\nrules:\n  - name: generous\n    effect: allow\n"
        "  - name: fragile\n    when: args.amount_cents > 100\n    effect: allow\n",
        version=4,
    )
    decision = policies.decide(call(arguments={}))
    assert (decision.effect, decision.policy, decision.version, decision.rule) == (
        "deny",
        "p",
        4,
        "fragile",
    )
    assert "failed to evaluate" in decision.reason
    assert "amount_cents" in decision.reason


def test_budgets_apply_by_agent_tenant_and_workflow() -> None:
    policies = policy(
        "name: p\nbudgets:\n  - {name: all, scope: run, metric: usd, limit: 2}\n"
        "  - {name: refunds-daily, scope: agent, metric: tokens, limit: 1000,"
        " match: {agents: [refunds]}}\n",
        version=2,
    )
    names = [(b.name, p, v) for b, p, v in policies.budgets_for(call())]
    assert names == [("all", "p", 2), ("refunds-daily", "p", 2)]
    assert [b.name for b, _, _ in policies.budgets_for(call(agent="other"))] == ["all"]


def test_two_policies_with_one_name_are_refused() -> None:
    document = parse_policy("name: p\n", source="p")
    with pytest.raises(PolicyError):
        PolicySet([(document, 1), (document, 2)])
