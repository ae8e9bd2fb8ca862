"""The support fleet: a customer-support team of agents on the scripted model.

```
handle_ticket(ticket)
  triage (router)              a rule sends angry tickets to `escalation`; the classifier agent
  │                            picks order_status / refund / policy for the rest
  ├─ order_status → order_lookup        (tool: lookup_order, scope orders:read)
  ├─ policy       → policy_check        (tool: check_refund_policy, scope policies:read)
  └─ refund, escalation → support_supervisor, which delegates (each a child run):
        order_lookup + policy_check     in parallel: they do not depend on each other
        refunds                         (tool: issue_refund, risk high, scope payments:refund)
                                        if the policy allows
  reply (pipeline)             reply_drafting → reply_review, typed Draft → Reply
```

Governance, least privilege: each agent is granted exactly the scopes of the tools it calls; the
supervisor holds the scopes of its delegates, because a child run never has more than its parent
(its chain of grants is the parent's plus its own); the classifier and the reply agents call no
tools and hold none. The policy `support` (`support_policy.yaml`, beside this module; `corral
demo` applies it) sends refunds over $500 to finance: the refunds run stops at an approval gate
until a person approves the exact call.

Every agent runs on a `ScriptedModel` whose rules read the request (the ticket, the sub-task,
the tool results so far), so the conversation is sensible and the same on every run: no API key,
no network. Every output says so (`scripted:support-fleet` in the journal, the reply's
signature, the demo's header and summary).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from corral import RunContext, workflow
from corral.agents import Agent
from corral.agents.patterns import Pipeline, Router, Stage
from corral.demo.support_data import (
    LARGE_REFUND_CENTS,
    TODAY,
    Order,
    Route,
    Ticket,
    money,
)
from corral.demo.support_tools import (
    PolicyVerdict,
    RefundReceipt,
    check_refund_policy,
    issue_refund,
    lookup_order,
)
from corral.models import Call, ModelRequest, ScriptedModel, Turn, reply

SCRIPTED = "scripted model — deterministic, no API key"
"""How every scripted output of the fleet is labelled."""

MODEL_NAME = "support-fleet"
"""Model steps record `scripted:support-fleet`."""

ORDER_ID = re.compile(r"\bA-\d{4}\b")

POLICY_FILE = Path(__file__).with_name("support_policy.yaml")
"""The fleet's governance policy `support` (installed with the package, so `corral demo` can
apply it): large refunds wait for finance, no deletes, a spending cap per run."""


# -- what the agents produce ----------------------------------------------------------------


class Resolution(BaseModel):
    """What the support supervisor found out and did about a ticket."""

    order: Order | None = None
    policy: PolicyVerdict | None = None
    refund: RefundReceipt | None = None
    specialists: list[str]
    summary: str


class ReplyBrief(BaseModel):
    """What the reply pipeline is given: the ticket, where it went, and what was done."""

    ticket: Ticket
    route: Route
    resolution: Resolution


class Draft(BaseModel):
    """A drafted customer reply (the drafter's output, the reviewer's input)."""

    to: str
    subject: str
    body: str


class Reply(BaseModel):
    """The reviewed reply that goes to the customer."""

    to: str
    subject: str
    body: str
    approved: bool
    review_notes: str


class TicketOutcome(BaseModel):
    """What happened to one ticket."""

    ticket_id: str
    route: Route
    specialists: list[str]
    refund: RefundReceipt | None
    approval: str
    """Empty, or why this ticket's refund needed a person's approval (over the $500 limit)."""
    reply: Reply
    model: str = SCRIPTED


# -- reading a request --------------------------------------------------------------------------


def _first_user(request: ModelRequest) -> str:
    return next((m.content for m in request.messages if m.role == "user"), "")


def _as_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _results(request: ModelRequest) -> dict[str, str]:
    """Tool name → what the tool answered (the latest answer per tool)."""
    names = {
        call.call_id: call.name
        for message in request.messages
        if message.role == "assistant"
        for call in message.tool_calls
    }
    return {
        names.get(m.tool_call_id or "", "?"): m.content
        for m in request.messages
        if m.role == "tool"
    }


def _parsed(results: dict[str, str], tool: str, model: type[BaseModel]) -> Any:
    """The tool's answer as `model`, or None if it did not answer or answered with an error."""
    data = _as_json(results.get(tool, ""))
    if data is None:
        return None
    try:
        return model.model_validate(data)
    except ValueError:
        return None


def _ticket_text(request: ModelRequest) -> str:
    """The customer's words: the ticket's text when the input is a ticket, else the input."""
    data = _as_json(_first_user(request))
    if isinstance(data, dict):
        inner = data.get("input", data)  # an AgentTask wraps the ticket
        if isinstance(inner, dict) and "text" in inner:
            return f"{inner.get('subject', '')}\n{inner['text']}"
    return _first_user(request)


def reason_of(text: str) -> str:
    """Why a customer wants money back, from their words."""
    lowered = text.lower()
    if any(word in lowered for word in ("broken", "cracked", "damaged", "smashed")):
        return "damaged"
    if any(word in lowered for word in ("was due", "late", "still waiting", "weeks ago")):
        return "late"
    return "changed_mind"


def is_angry(event: Any) -> bool:
    """Triage's rule: shouting (mostly capitals) or a pile of exclamation marks → escalation."""
    text = event.text if isinstance(event, Ticket) else str(event)
    letters = [c for c in text if c.isalpha()]
    shouting = bool(letters) and sum(c.isupper() for c in letters) / len(letters) > 0.5
    return shouting or text.count("!") >= 3


def _answer(value: BaseModel | str) -> Turn:
    text = value if isinstance(value, str) else value.model_dump_json()
    return Turn(text)


# -- the scripted models' rules -------------------------------------------------------------


def classify_rules(request: ModelRequest) -> Turn:
    """triage_classifier: `{"route": ...}`, the object with a Literal field the router asks for."""
    words = _ticket_text(request)
    text = words.lower()
    route: Route
    if not ORDER_ID.search(words) and "?" in text:
        route = "policy"
    elif any(w in text for w in ("refund", "return", "broken", "cracked", "damaged")):
        route = "refund"
    elif any(w in text for w in ("where", "arrive", "tracking", "delivery")):
        route = "order_status"
    else:
        route = "escalation"
    return Turn(json.dumps({"route": route}))


def order_lookup_rules(request: ModelRequest) -> Turn:
    results = _results(request)
    if "lookup_order" in results:
        return Turn(results["lookup_order"])  # the order, as the Order output type
    found = ORDER_ID.search(_first_user(request))
    order_id = found.group(0) if found else "unknown"
    return reply("", Call("lookup_order", {"order_id": order_id}))


def policy_check_rules(request: ModelRequest) -> Turn:
    results = _results(request)
    if "check_refund_policy" in results:
        return Turn(results["check_refund_policy"])
    task = _first_user(request)
    found = ORDER_ID.search(task)
    if found is None:
        return reply("", Call("check_refund_policy", {"reason": "question"}))
    stated = re.search(r"reason: (\w+)", task)
    reason = stated.group(1) if stated else reason_of(_ticket_text(request))
    return reply("", Call("check_refund_policy", {"order_id": found.group(0), "reason": reason}))


def refunds_rules(request: ModelRequest) -> Turn:
    results = _results(request)
    if "issue_refund" in results:
        return Turn(results["issue_refund"])
    task = _first_user(request)
    order = ORDER_ID.search(task)
    amount = re.search(r"(\d+) cents", task)
    stated = re.search(r"reason: (\w+)", task)
    if order is None or amount is None:
        return Turn("I need an order id and an amount in cents to issue a refund.")
    arguments = {
        "order_id": order.group(0),
        "amount_cents": int(amount.group(1)),
        "reason": stated.group(1) if stated else "goodwill",
    }
    return reply("", Call("issue_refund", arguments))


def supervisor_rules(request: ModelRequest) -> Turn:
    """Look up the order and the policy in parallel; refund if the policy allows; report."""
    text = _ticket_text(request)
    results = _results(request)
    found = ORDER_ID.search(text)
    reason = reason_of(text)
    if found is None:
        return _answer(
            Resolution(specialists=[], summary="No order id in the ticket; asked the customer.")
        )
    order_id = found.group(0)
    if "ask_order_lookup" not in results:
        return reply(
            "",
            Call("ask_order_lookup", {"task": f"Look up order {order_id}."}),
            Call(
                "ask_policy_check",
                {"task": f"Check the refund policy for order {order_id}; reason: {reason}"},
            ),
        )
    policy = _parsed(results, "ask_policy_check", PolicyVerdict)
    if policy is not None and policy.eligible and "ask_refunds" not in results:
        task = f"Refund {policy.refund_cents} cents on order {order_id}; reason: {reason}"
        return reply("", Call("ask_refunds", {"task": task}))
    refund = _parsed(results, "ask_refunds", RefundReceipt)
    specialists = [name.removeprefix("ask_") for name in results if name.startswith("ask_")]
    if refund is not None:
        summary = f"Refunded {money(refund.amount_cents)} ({refund.refund_id})."
    elif policy is not None:
        summary = f"No refund: {policy.rule}"
    else:
        summary = "The policy check failed; a person should look at this ticket."
    return _answer(
        Resolution(
            order=_parsed(results, "ask_order_lookup", Order),
            policy=policy,
            refund=refund,
            specialists=specialists,
            summary=summary,
        )
    )


def drafting_rules(request: ModelRequest) -> Turn:
    brief = ReplyBrief.model_validate(_brief_data(_first_user(request)))
    return _answer(draft_reply(brief))


def review_rules(request: ModelRequest) -> Turn:
    """reply_review: check the draft against the house rules, then sign it."""
    draft = Draft.model_validate(_brief_data(_first_user(request)))
    body = draft.body
    notes = ["greets the customer by name" if body.startswith("Hi ") else "no greeting"]
    if re.search(r"\bguarantee|\bpromise", body, re.I):
        notes.append("promises removed")
        body = re.sub(r"\b(guarantee|promise)\w*", "expect", body, flags=re.I)
    notes.append("amounts as on the receipts" if "$" in body else "no amounts")
    signed = f"{body}\n\n— Corral Support (reply written by the {SCRIPTED})"
    return _answer(
        Reply(
            to=draft.to,
            subject=draft.subject,
            body=signed,
            approved=True,
            review_notes="; ".join(notes),
        )
    )


def _brief_data(text: str) -> Any:
    data = _as_json(text)
    if isinstance(data, dict) and "input" in data and "ticket" not in data and "to" not in data:
        return data["input"]  # an AgentTask wraps the stage's input
    return data


def draft_reply(brief: ReplyBrief) -> Draft:
    """The reply drafter's script: what a careful support agent would write, case by case."""
    ticket, resolution = brief.ticket, brief.resolution
    name = ticket.customer.split("@")[0].capitalize()
    order, policy, refund = resolution.order, resolution.policy, resolution.refund
    if brief.route == "escalation":
        opening = "I'm sorry you had to write more than once; that shouldn't happen."
    elif policy is not None and policy.reason == "damaged" and order is not None:
        opening = f"I'm sorry your {order.item.lower()} arrived damaged."
    elif brief.route == "policy":
        opening = "Thanks for asking before you buy."
    else:
        opening = "Thanks for getting in touch."
    lines = [opening]
    if order is not None and brief.route in ("order_status", "escalation"):
        eta = f"{order.due_on.day} {order.due_on:%B}"
        where = f" ({order.note})" if order.note else ""
        if order.due_on >= TODAY:
            lines.append(
                f"Your {order.item.lower()} (order {order.order_id}) is on its way with "
                f"{order.carrier}, tracking {order.tracking}{where}. It is due on {eta}."
            )
        else:
            lines.append(
                f"Order {order.order_id} ({order.item.lower()}) was due on {eta} and is "
                f"late{where}; {order.carrier} tracking {order.tracking}."
            )
    if refund is not None:
        lines.append(
            f"I've refunded {money(refund.amount_cents)} to your original payment method "
            f"(refund {refund.refund_id}); it shows within 3-5 business days."
        )
        if policy is not None and policy.reason == "damaged":
            lines.append("No need to send the broken item back.")
        elif policy is not None and policy.reason == "changed_mind":
            lines.append("Our courier will contact you to collect the item.")
    elif policy is not None and brief.route == "policy":
        lines.append(policy.rule)
    elif policy is not None:
        lines.append(f"I'm afraid I can't refund this order. {policy.rule}")
        if policy.alternative:
            lines.append(policy.alternative)
    subject = f"Re: {ticket.subject} [{ticket.ticket_id}]"
    return Draft(to=ticket.customer, subject=subject, body=f"Hi {name},\n\n" + " ".join(lines))


# -- the agents ---------------------------------------------------------------------------------


def _model(rules: Any) -> ScriptedModel:
    return ScriptedModel(rules=rules, name=MODEL_NAME)


order_lookup: Agent[Order] = Agent(
    "order_lookup",
    instructions="Look up the order the task names with lookup_order and answer with the order.",
    description="looks orders up: item, price, shipping status, tracking",
    model=_model(order_lookup_rules),
    tools=[lookup_order],
    scopes=["orders:read"],
    output_type=Order,
)

policy_check: Agent[PolicyVerdict] = Agent(
    "policy_check",
    instructions="Apply the refund policy with check_refund_policy and answer with its verdict.",
    description="says what the refund policy allows for an order, or in general",
    model=_model(policy_check_rules),
    tools=[check_refund_policy],
    scopes=["policies:read"],
    output_type=PolicyVerdict,
)

refunds: Agent[RefundReceipt] = Agent(
    "refunds",
    instructions="Issue exactly the refund the task asks for with issue_refund; answer with "
    "the receipt.",
    description="issues refunds (money leaves the company: high risk)",
    model=_model(refunds_rules),
    tools=[issue_refund],
    scopes=["payments:refund"],
    output_type=RefundReceipt,
)

support_supervisor: Agent[Resolution] = Agent(
    "support_supervisor",
    instructions="You resolve customer tickets. Ask order_lookup and policy_check (in parallel) "
    "for the facts; ask refunds to refund only what the policy allows; then report.",
    description="resolves refund requests and escalations with the specialists",
    model=_model(supervisor_rules),
    delegates=[order_lookup, policy_check, refunds],
    # It calls no tool itself, but its delegates' runs are bounded by its grants.
    scopes=["orders:read", "policies:read", "payments:refund"],
    output_type=Resolution,
)

triage_classifier: Agent[Any] = Agent(
    "triage_classifier",
    instructions="Decide which desk handles the support ticket.",
    model=_model(classify_rules),
)

triage = Router(
    "triage",
    routes={
        "order_status": order_lookup,
        "refund": support_supervisor,
        "policy": policy_check,
        "escalation": support_supervisor,
    },
    rules=[(is_angry, "escalation")],
    classifier=triage_classifier,
    default="escalation",
)

reply_drafting: Agent[Draft] = Agent(
    "reply_drafting",
    instructions="Draft a short, friendly reply to the customer from the brief.",
    model=_model(drafting_rules),
    output_type=Draft,
)

reply_review: Agent[Reply] = Agent(
    "reply_review",
    instructions="Review the draft: amounts must match the receipts; no promises beyond policy.",
    model=_model(review_rules),
    output_type=Reply,
)

reply_pipeline = Pipeline(
    "reply",
    [
        Stage("reply_drafting", reply_drafting, input_type=ReplyBrief),
        Stage("reply_review", reply_review, input_type=Draft),
    ],
)

AGENTS: list[Agent[Any]] = [
    triage_classifier,
    support_supervisor,
    order_lookup,
    policy_check,
    refunds,
    reply_drafting,
    reply_review,
]


# -- the workflow ---------------------------------------------------------------------------


def resolution_of(route: Route, output: Any) -> Resolution:
    """The routed target's output as a `Resolution`, whichever agent the ticket went to."""
    if route == "order_status":
        return Resolution(
            order=Order.model_validate(output),
            specialists=["order_lookup"],
            summary="Order status looked up.",
        )
    if route == "policy":
        verdict = PolicyVerdict.model_validate(output)
        return Resolution(policy=verdict, specialists=["policy_check"], summary=verdict.rule)
    return Resolution.model_validate(output)


def approval_note(refund: RefundReceipt | None, policy: PolicyVerdict | None) -> str:
    """Why a refund needed a person's approval: it is over the limit the policy gates."""
    if refund is not None and policy is not None and policy.needs_approval:
        return (
            f"large refund ({money(refund.amount_cents)}): over "
            f"{money(LARGE_REFUND_CENTS)}, so finance approves the exact call before the "
            "money leaves"
        )
    return ""


@workflow(name="handle_ticket")
async def handle_ticket(ctx: RunContext, ticket: Ticket) -> TicketOutcome:
    """Triage a support ticket, resolve it with the specialists, and write the reply."""
    routed = await triage.run(ctx, ticket)
    route: Route = TypeAdapter(Route).validate_python(routed.route)
    resolution = resolution_of(route, routed.output)
    brief = ReplyBrief(ticket=ticket, route=route, resolution=resolution)
    drafted = await reply_pipeline.run(ctx, brief)
    final = Reply.model_validate(drafted)
    return TicketOutcome(
        ticket_id=ticket.ticket_id,
        route=route,
        specialists=resolution.specialists,
        refund=resolution.refund,
        approval=approval_note(resolution.refund, resolution.policy),
        reply=final,
    )


__all__ = [
    "AGENTS",
    "POLICY_FILE",
    "Draft",
    "Reply",
    "ReplyBrief",
    "Resolution",
    "TicketOutcome",
    "handle_ticket",
    "reply_pipeline",
    "triage",
]
