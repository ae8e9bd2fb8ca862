"""Policies: parse a YAML document strictly (errors name the line), and decide about a call.

`parse_policy` turns the YAML a team writes (see `corral.governance.documents`) into a
`PolicyDocument`, or raises `PolicyError` naming the file, the line and what is wrong:

    refunds.yaml, line 12: rules[0].effect: Input should be 'allow', 'deny' or 'require_approval'

A YAML syntax error, an unknown or duplicated field, a `when` that is not valid CEL, a
`require_approval` rule without its `approval` block: each is an error, never a silently weaker
policy.

A `PolicySet` holds the tenant's active policies (each at a version) and decides about a call:

1. A rule applies when its `match` does (each list is a set of globs, `fnmatch` style, and an
   empty list matches anything; a call made outside any agent matches only an empty `agents`)
   and its `when` is true.
2. A `when` that fails to evaluate denies the call (fail-closed), naming policy, version, rule
   and the error.
3. Of the rules that apply, a `deny` wins over a `require_approval`, which wins over an `allow`;
   between rules of the same effect, the first by policy name, then by order in the document.
4. When no rule applies, the call is denied if any policy says `default: deny`, else allowed
   (the agent's and tool's scopes are checked elsewhere, before policies).

`decide` is pure: the same call and the same policies give the same decision, on any worker.
"""

from __future__ import annotations

import fnmatch
import itertools
import re
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from corral.governance.conditions import (
    Bindings,
    Condition,
    ConditionError,
    PolicyError,
    bind,
    cel_error_detail,
    cel_error_line,
    compile_condition,
    variables_for,
)
from corral.governance.decisions import CallContext, Decision
from corral.governance.documents import (
    ApprovalSpec,
    BudgetLimit,
    Effect,
    Match,
    PolicyDocument,
    Rule,
)

__all__ = [
    "PolicyError",
    "PolicySet",
    "load_yaml_model",
    "parse_policy",
]

M = TypeVar("M", bound=BaseModel)

_RANK: dict[str, int] = {"deny": 0, "require_approval": 1, "allow": 2}


# -- parsing ----------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class _Problem:
    line: int
    path: str
    reason: str


def _raise(source: str, problems: Sequence[_Problem]) -> typing.NoReturn:
    ordered = sorted(problems)
    first = ordered[0]
    lines = [
        f"{source}, line {p.line}: {p.path}: {p.reason}"
        if p.path
        else f"{source}, line {p.line}: {p.reason}"
        for p in ordered
    ]
    reason = f"{first.path}: {first.reason}" if first.path else first.reason
    raise PolicyError("\n".join(lines), source=source, line=first.line, reason=reason)


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _path(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _compose(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    """The document's data and its node tree (for line numbers), with one parse."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as error:  # a control character: refused before parsing
        line = text.count("\n", 0, max(int(error.position), 0)) + 1
        found = error.character
        what = f"U+{found:04X}" if isinstance(found, int) else repr(found)
        _raise(source, [_Problem(line, "", f"YAML error: {error.reason} ({what})")])
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = int(mark.line) + 1 if mark is not None else 1
        reason = f"YAML syntax error: {error.problem or error.context or error}"
        if "could not determine a constructor for the tag" in str(error):
            reason += ' (a value that starts with "!" must be quoted: when: "!has(args.x)")'
        _raise(source, [_Problem(line, "", reason)])
    except yaml.YAMLError as error:
        _raise(source, [_Problem(1, "", f"YAML error: {error}")])
    finally:
        loader.dispose()
    if node is not None:
        _check_duplicate_keys(node, source, ())
    return data, node


def _check_duplicate_keys(node: yaml.Node, source: str, loc: tuple[int | str, ...]) -> None:
    # PyYAML keeps the last of two equal keys; a repeated `effect:` must not pass unnoticed.
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                _raise(source, [_Problem(_line(key), _path((*loc, name)), "duplicate field")])
            seen.add(name)
            _check_duplicate_keys(value, source, (*loc, name))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_duplicate_keys(item, source, (*loc, index))


def _node_at(root: yaml.Node | None, loc: Sequence[int | str], *, key: bool = False) -> int:
    """The line of the deepest node along `loc` (the key's own line with `key=True`)."""
    if root is None:
        return 1
    node = root
    line = _line(root)
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            pair = next((p for p in node.value if str(p[0].value) == part), None)
            if pair is None:
                break
            line = _line(pair[0]) if key else _line(pair[1])
            node = pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            node = node.value[part]
            line = _line(node)
        else:
            break
    return line


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation like `tuple[Rule, ...]` or `ApprovalSpec | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (tuple, list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _known_fields(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(part)
        current = None if field is None else _model_in(field.annotation)
    return list(current.model_fields) if current is not None else []


def _validation_problems(
    error: ValidationError, model: type[BaseModel], root: yaml.Node | None
) -> list[_Problem]:
    problems = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        if item["type"] == "extra_forbidden":
            known = _known_fields(model, loc[:-1])
            reason = f"unknown field {loc[-1]!r}"
            if known:
                reason += f" (known fields: {', '.join(known)})"
            problems.append(_Problem(_node_at(root, loc, key=True), _path(loc), reason))
        else:
            reason = str(item["msg"])
            node = _value_node(root, loc)
            if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":bool"):
                # YAML 1.1 reads yes/no/on/off as booleans: `name: no` is not the string "no".
                reason += f" (YAML reads {node.value} as a boolean; quote it: '{node.value}')"
            problems.append(_Problem(_node_at(root, loc), _path(loc), reason))
    return problems


def load_yaml_model(text: str, model: type[M], *, source: str, what: str = "document") -> M:
    """Parse YAML `text` strictly into `model`: `PolicyError` naming `source`, line and field.

    Used for policy documents and for policy test files (`corral policy test`).
    """
    return _load(text, model, source=source, what=what)[0]


def _load(text: str, model: type[M], *, source: str, what: str) -> tuple[M, yaml.Node | None]:
    data, root = _compose(text, source)
    if not isinstance(data, dict):
        found = "nothing" if data is None else type(data).__name__
        _raise(source, [_Problem(1, "", f"expected a {what} (a YAML mapping), found {found}")])
    try:
        return model.model_validate(data), root
    except ValidationError as error:
        _raise(source, _validation_problems(error, model, root))


def parse_policy(text: str, *, source: str) -> PolicyDocument:
    """Parse and check a policy document; `PolicyError` names the file, line and reason.

    Args:
        text: the YAML document.
        source: where it came from, for messages (a file name, `refunds@v3`).
    """
    document, root = _load(text, PolicyDocument, source=source, what="policy document")
    problems: list[_Problem] = []
    seen_rules: set[str] = set()
    for index, rule in enumerate(document.rules):
        loc: tuple[int | str, ...] = ("rules", index)
        if rule.name in seen_rules:
            line = _node_at(root, (*loc, "name"))
            problems.append(_Problem(line, _path((*loc, "name")), f"duplicate rule {rule.name!r}"))
        seen_rules.add(rule.name)
        if rule.when is not None:
            problems.extend(_when_problems(rule.when, root, (*loc, "when"), source))
        if rule.effect == "require_approval" and rule.approval is None:
            problems.append(
                _Problem(
                    _node_at(root, loc),
                    _path(loc),
                    f"rule {rule.name!r} has effect require_approval but no approval block "
                    "(approval: {approvers: [...], deadline: 4h, on_deadline: reject})",
                )
            )
        if rule.effect != "require_approval" and rule.approval is not None:
            problems.append(
                _Problem(
                    _node_at(root, (*loc, "approval"), key=True),
                    _path((*loc, "approval")),
                    f"only a require_approval rule has an approval block (this one: {rule.effect})",
                )
            )
        if rule.approval is not None:
            problems.extend(_approval_problems(rule.approval, root, (*loc, "approval")))
    seen_budgets: set[str] = set()
    for index, budget in enumerate(document.budgets):
        loc = ("budgets", index)
        problems.extend(_budget_problems(budget, root, loc, seen_budgets))
        seen_budgets.add(budget.name)
    if problems:
        _raise(source, problems)
    return document


def _when_problems(
    expression: str, root: yaml.Node | None, loc: tuple[int | str, ...], source: str
) -> list[_Problem]:
    line = _node_at(root, loc)
    try:
        compile_condition(expression, where=f"{source}, line {line}: {_path(loc)}")
    except PolicyError as error:
        cause = error.__cause__ or error.__context__
        detail = cel_error_detail(cause) if cause is not None else str(error.ids["reason"])
        reason = f"invalid CEL: {detail}"
        node = _value_node(root, loc)
        within = cel_error_line(cause) if cause is not None else None
        if node is not None and within is not None and getattr(node, "style", None) in ("|", ">"):
            # A block scalar's text starts on the line after `when: |`.
            line += within
        elif within is not None and within > 1:
            line += within - 1
        return [_Problem(line, _path(loc), reason)]
    return []


def _value_node(root: yaml.Node | None, loc: Sequence[int | str]) -> yaml.Node | None:
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            pair = next((p for p in node.value if str(p[0].value) == part), None)
            node = None if pair is None else pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if 0 <= part < len(node.value) else None
        else:
            return None
    return node


def _approval_problems(
    approval: ApprovalSpec, root: yaml.Node | None, loc: tuple[int | str, ...]
) -> list[_Problem]:
    if approval.on_deadline == "escalate" and not approval.escalate_to:
        where = (*loc, "on_deadline")
        return [
            _Problem(
                _node_at(root, where),
                _path(where),
                "on_deadline escalate needs escalate_to (the groups to escalate to)",
            )
        ]
    if approval.on_deadline != "reject" and approval.deadline is None:
        where = (*loc, "on_deadline")
        return [
            _Problem(
                _node_at(root, where),
                _path(where),
                f"on_deadline {approval.on_deadline} needs a deadline (e.g. deadline: 4h)",
            )
        ]
    return []


def _budget_problems(
    budget: BudgetLimit, root: yaml.Node | None, loc: tuple[int | str, ...], seen: set[str]
) -> list[_Problem]:
    problems = []

    def add(field: str, reason: str, *, key: bool = False) -> None:
        where = (*loc, field) if field else loc
        problems.append(_Problem(_node_at(root, where, key=key), _path(where), reason))

    if budget.name in seen:
        add("name", f"duplicate budget {budget.name!r}")
    if budget.soft_limit is not None and budget.soft_limit > budget.limit:
        add("soft_limit", f"soft_limit {budget.soft_limit} is above limit {budget.limit}")
    if budget.on_exceed == "degrade" and not budget.degrade_to:
        add("on_exceed", "on_exceed degrade needs degrade_to (a cheaper model)")
    if budget.on_exceed == "require_approval" and budget.approval is None:
        add("on_exceed", "on_exceed require_approval needs an approval block")
    if budget.match.tools:
        add(
            "match",
            "a budget matches agents, tenants and workflows, not tools (remove match.tools)",
            key=True,
        )
    if budget.approval is not None:
        problems.extend(_approval_problems(budget.approval, root, (*loc, "approval")))
    return problems


# -- deciding ---------------------------------------------------------------------------------


class _Globs:
    """One `match` field: empty matches anything; else any of its fnmatch globs."""

    __slots__ = ("_pattern",)

    def __init__(self, globs: Sequence[str]) -> None:
        self._pattern = (
            re.compile("|".join(f"(?:{fnmatch.translate(glob)})" for glob in globs))
            if globs
            else None
        )

    def matches(self, value: str | None) -> bool:
        if self._pattern is None:
            return True
        return value is not None and self._pattern.match(value) is not None


class _Matcher:
    __slots__ = ("agents", "tenants", "tools", "workflows")

    def __init__(self, match: Match) -> None:
        self.agents = _Globs(match.agents)
        self.tools = _Globs(match.tools)
        self.tenants = _Globs(match.tenants)
        self.workflows = _Globs(match.workflows)

    def applies(self, call: CallContext, *, tools: bool = True) -> bool:
        return (
            (not tools or self.tools.matches(call.tool))
            and self.agents.matches(call.agent)
            and self.tenants.matches(call.tenant)
            and self.workflows.matches(call.workflow)
        )


@dataclass(frozen=True, eq=False)
class _CompiledRule:
    policy: str
    version: int
    rule: Rule
    matcher: _Matcher
    condition: Condition | None

    def decision(self, effect: Effect, reason: str) -> Decision:
        return Decision(
            effect=effect,
            reason=reason,
            policy=self.policy,
            version=self.version,
            rule=self.rule.name,
            approval=self.rule.approval if effect == "require_approval" else None,
        )

    def fail_closed(self, error: Exception) -> Decision:
        reason = error.ids.get("reason") if isinstance(error, ConditionError) else None
        return self.decision(
            "deny",
            f"denied: the condition of rule {self.rule.name!r} (policy {self.policy} "
            f"v{self.version}) failed to evaluate: {reason or error}",
        )


class PolicySet:
    """A tenant's active policies, each at a version; `decide` says what happens to a call.

    Build it from `[(PolicyDocument, version), ...]` (`load_policy_set` reads the store's).
    `PolicySet()` has no policies (`.empty` is True) and allows everything (scopes still apply
    elsewhere).
    """

    def __init__(self, policies: Iterable[tuple[PolicyDocument, int]] = ()) -> None:
        ordered = sorted(policies, key=lambda pair: pair[0].name)
        names = [document.name for document, _ in ordered]
        for previous, name in itertools.pairwise(names):
            if previous == name:
                raise PolicyError(
                    f"two policies are named {name!r}", source=name, line=None, reason="duplicate"
                )
        self.documents: tuple[tuple[PolicyDocument, int], ...] = tuple(ordered)
        self._rules: tuple[_CompiledRule, ...] = tuple(
            _CompiledRule(
                policy=document.name,
                version=version,
                rule=rule,
                matcher=_Matcher(rule.match),
                condition=None
                if rule.when is None
                else compile_condition(
                    rule.when, where=f"policy {document.name} v{version}, rule {rule.name}"
                ),
            )
            for document, version in ordered
            for rule in document.rules
        )
        self._budgets: tuple[tuple[BudgetLimit, str, int, _Matcher], ...] = tuple(
            (budget, document.name, version, _Matcher(budget.match))
            for document, version in ordered
            for budget in document.budgets
        )
        self._default_deny = next(
            ((doc.name, version) for doc, version in ordered if doc.default == "deny"), None
        )

    @property
    def empty(self) -> bool:
        """True when there are no policies: every call is allowed (scopes still apply)."""
        return not self.documents

    @property
    def versions(self) -> dict[str, int]:
        """Each policy's name and active version."""
        return {document.name: version for document, version in self.documents}

    def __len__(self) -> int:
        return len(self.documents)

    def __repr__(self) -> str:
        active = ", ".join(f"{name}@v{version}" for name, version in self.versions.items())
        return f"PolicySet({active})"

    def decide(self, call: CallContext) -> Decision:
        """What the policies decide about `call`: allow, deny or require_approval, and why.

        Pure and fail-closed: a condition that errors denies the call.
        """
        bindings: Bindings | None = None
        approval: Decision | None = None
        allow: Decision | None = None
        timeouts: list[float] = []
        for compiled in self._rules:
            if not compiled.matcher.applies(call):
                continue
            rule = compiled.rule
            if compiled.condition is not None:
                try:
                    if bindings is None:
                        bindings = bind(variables_for(call))
                    holds = compiled.condition.evaluate(bindings)
                except (ConditionError, ValueError, TypeError, OverflowError) as error:
                    return compiled.fail_closed(error)
                if not holds:
                    continue
            if rule.timeout is not None:
                timeouts.append(rule.timeout)
            # Rules come in (policy name, document order): the first deny is the deciding one.
            if rule.effect == "deny":
                return compiled.decision("deny", rule.reason or self._because(compiled))
            if rule.effect == "require_approval" and approval is None:
                approval = compiled.decision(
                    "require_approval", rule.reason or self._because(compiled)
                )
            elif rule.effect == "allow" and allow is None:
                allow = compiled.decision("allow", rule.reason or self._because(compiled))
        timeout = {"timeout": min(timeouts)} if timeouts else None
        if approval is not None:
            return approval.model_copy(update=timeout) if timeout else approval
        if allow is not None:
            return allow.model_copy(update=timeout) if timeout else allow
        if self._default_deny is not None:
            name, version = self._default_deny
            return Decision(
                effect="deny",
                reason=f"no rule allows {call.tool}"
                + (f" for agent {call.agent}" if call.agent else "")
                + f", and policy {name} denies by default",
                policy=name,
                version=version,
            )
        return Decision(effect="allow", reason="no rule matched", **(timeout or {}))

    @staticmethod
    def _because(compiled: _CompiledRule) -> str:
        verb = {"allow": "allowed", "deny": "denied", "require_approval": "needs approval"}
        return (
            f"{verb[compiled.rule.effect]} by rule {compiled.rule.name} of policy "
            f"{compiled.policy} v{compiled.version}"
        )

    def budgets_for(self, call: CallContext) -> list[tuple[BudgetLimit, str, int]]:
        """The budgets that apply to `call`'s agent, tenant and workflow: (limit, policy,
        version), by policy name then document order."""
        return [
            (budget, policy, version)
            for budget, policy, version, matcher in self._budgets
            if matcher.applies(call, tools=False)
        ]
