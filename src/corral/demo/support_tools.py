"""The support fleet's tools, and the refund ledger that stands in for a payment provider.

`issue_refund` changes the world, so it passes its idempotency key (`run_id:seq`, the same on
every attempt of one call) to the ledger, and the ledger applies a refund once per key, as real
payment providers do. The ledger also counts every request it receives, so a request repeated
after a crash is visible: two requests, one refund.

The ledger is a SQLite file of its own (not Corral's database): it is "the outside world", which
worker processes share. `CORRAL_DEMO_LEDGER` names the file; `CORRAL_DEMO_PACE` scales the
tools' simulated latency (1 by default; 0 makes them instant, as the tests do).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from corral.demo.support_data import (
    LARGE_REFUND_CENTS,
    LATE_AFTER_DAYS,
    ORDERS,
    RETURN_WINDOW_DAYS,
    TODAY,
    Order,
    money,
)
from corral.errors import ToolRetry
from corral.tools import ToolContext, tool

LEDGER_ENV = "CORRAL_DEMO_LEDGER"
PACE_ENV = "CORRAL_DEMO_PACE"
DEFAULT_LEDGER = Path(".corral/demo-refunds.db")
CONFIRM_SECONDS = 1.0
"""How long the "provider" takes to confirm a refund it has already applied: the window in which
the demo kills the worker, so the refund is applied but its step's result is not journaled."""

RefundReason = Literal["damaged", "late", "changed_mind", "question"]


class PolicyVerdict(BaseModel):
    """What the refund policy says about one order (or, without an order, in general)."""

    order_id: str | None
    reason: RefundReason
    eligible: bool
    refund_cents: int
    rule: str
    needs_approval: bool = False
    alternative: str = ""


class RefundReceipt(BaseModel):
    """A refund the ledger applied."""

    refund_id: str
    order_id: str
    amount_cents: int
    reason: str
    idempotency_key: str


# -- the tools -------------------------------------------------------------------------------


@tool(scopes=["orders:read"])
async def lookup_order(order_id: str) -> Order:
    """Look an order up in the order system: item, price, shipping status, tracking.

    Args:
        order_id: The order's id, like A-1001.
    """
    await _pause(0.3)
    order = ORDERS.get(order_id.strip().upper())
    if order is None:
        raise ToolRetry(f"no order {order_id!r}; order ids look like A-1001")
    return order


@tool(scopes=["policies:read"])
async def check_refund_policy(
    order_id: str | None = None, reason: str = "question"
) -> PolicyVerdict:
    """Apply the refund policy to an order, or state it in general when no order is given.

    Args:
        order_id: The order the customer asks about, if any.
        reason: damaged, late, changed_mind or question.
    """
    await _pause(0.2)
    return policy_verdict(order_id, reason)


@tool(risk="high", scopes=["payments:refund"])
async def issue_refund(
    order_id: str, amount_cents: int, reason: str, ctx: ToolContext
) -> RefundReceipt:
    """Refund money to the customer's original payment method.

    Args:
        order_id: The order to refund, like A-1002.
        amount_cents: How much, in cents.
        reason: Why, in a few words (shown on the customer's statement).
    """
    order = ORDERS.get(order_id)
    if order is None:
        raise ToolRetry(f"no order {order_id!r} to refund")
    paid = order.item_cents + order.shipping_cents
    if not 0 < amount_cents <= paid:
        raise ToolRetry(f"refund of {amount_cents} cents is outside 1..{paid} for order {order_id}")
    # No approval check here: a refund over $500 never reaches this body unapproved. The
    # `support` policy (support_policy.yaml) stops the call before the step runs it, and the
    # approved call runs with exactly the arguments a person approved.
    receipt = await asyncio.to_thread(
        record_refund, ctx.idempotency_key, order_id, amount_cents, reason
    )
    await _pause(CONFIRM_SECONDS)  # the provider confirms: the refund is applied already
    return receipt


# -- the policy -------------------------------------------------------------------------------


def policy_verdict(order_id: str | None, reason: str) -> PolicyVerdict:
    """The shop's refund policy, as a function (the `check_refund_policy` tool's body)."""
    why: RefundReason = reason if reason in ("damaged", "late", "changed_mind") else "question"  # type: ignore[assignment]
    order = ORDERS.get(order_id or "")
    if order is None:
        return PolicyVerdict(
            order_id=None,
            reason="question",
            eligible=False,
            refund_cents=0,
            rule=f"Unused items can be returned within {RETURN_WINDOW_DAYS} days of delivery "
            "for a full refund. Opened electronics can be returned within the same "
            f"{RETURN_WINDOW_DAYS} days if all parts and accessories are included.",
        )
    if why == "damaged":
        return _verdict(
            order,
            why,
            order.item_cents,
            "Items damaged in transit are refunded in "
            "full; the customer keeps or recycles the item.",
        )
    if why == "late":
        days_late = (TODAY - order.due_on).days
        if order.status != "delivered" and days_late > LATE_AFTER_DAYS:
            return _verdict(
                order,
                why,
                order.shipping_cents,
                f"Deliveries more than {LATE_AFTER_DAYS} days late get their shipping fee "
                f"refunded ({days_late} days late); the parcel keeps travelling.",
            )
        return PolicyVerdict(
            order_id=order.order_id,
            reason=why,
            eligible=False,
            refund_cents=0,
            rule=f"Not late by more than {LATE_AFTER_DAYS} days.",
        )
    delivered = order.delivered_on
    if delivered is None:
        return PolicyVerdict(
            order_id=order.order_id,
            reason=why,
            eligible=False,
            refund_cents=0,
            rule="Returns start once the order is delivered.",
        )
    age = (TODAY - delivered).days
    if age <= RETURN_WINDOW_DAYS:
        return _verdict(
            order,
            why,
            order.item_cents,
            f"Returned within {RETURN_WINDOW_DAYS} days "
            f"of delivery ({age} days): full refund of the item once it is back.",
        )
    return PolicyVerdict(
        order_id=order.order_id,
        reason=why,
        eligible=False,
        refund_cents=0,
        rule=f"The return window is {RETURN_WINDOW_DAYS} days; this order was delivered "
        f"{age} days ago.",
        alternative="The 2-year warranty covers faults: we can arrange a free repair.",
    )


def _verdict(order: Order, reason: RefundReason, cents: int, rule: str) -> PolicyVerdict:
    return PolicyVerdict(
        order_id=order.order_id,
        reason=reason,
        eligible=True,
        refund_cents=cents,
        rule=f"{rule} Refund: {money(cents)}.",
        needs_approval=cents > LARGE_REFUND_CENTS,
    )


async def _pause(seconds: float) -> None:
    """Simulated latency of the shop's systems, scaled by CORRAL_DEMO_PACE."""
    pace = float(os.environ.get(PACE_ENV, "1") or 0)
    if pace > 0:
        await asyncio.sleep(seconds * pace)


# -- the ledger -------------------------------------------------------------------------------


def ledger_path() -> Path:
    """The ledger file: CORRAL_DEMO_LEDGER, or .corral/demo-refunds.db."""
    return Path(os.environ.get(LEDGER_ENV) or DEFAULT_LEDGER)


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS refunds (idempotency_key TEXT PRIMARY KEY,"
        " refund_id TEXT NOT NULL, order_id TEXT NOT NULL, amount_cents INTEGER NOT NULL,"
        " reason TEXT NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS requests (idempotency_key TEXT NOT NULL, pid INTEGER NOT NULL,"
        " at REAL NOT NULL)"
    )
    return conn


def record_refund(
    idempotency_key: str, order_id: str, amount_cents: int, reason: str, path: Path | None = None
) -> RefundReceipt:
    """Apply a refund once per idempotency key; every request is counted, duplicates too."""
    refund_id = "RF-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:8].upper()
    with closing(_connect(path or ledger_path())) as conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO requests VALUES (?, ?, ?)", (idempotency_key, os.getpid(), time.time())
        )
        conn.execute(
            "INSERT INTO refunds VALUES (?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING",
            (idempotency_key, refund_id, order_id, amount_cents, reason),
        )
        row = conn.execute(
            "SELECT refund_id, order_id, amount_cents, reason FROM refunds"
            " WHERE idempotency_key = ?",
            (idempotency_key,),
        ).fetchone()
        conn.execute("COMMIT")
    return RefundReceipt(
        refund_id=row[0],
        order_id=row[1],
        amount_cents=row[2],
        reason=row[3],
        idempotency_key=idempotency_key,
    )


class LedgerEntry(BaseModel):
    """One applied refund and how many requests for it the ledger received."""

    idempotency_key: str
    refund_id: str
    order_id: str
    amount_cents: int
    requests: int
    pids: list[int]


def ledger_entries(path: Path | None = None) -> list[LedgerEntry]:
    """Every refund applied, oldest first, with the requests that asked for it."""
    file = path or ledger_path()
    if not file.exists():
        return []
    with closing(_connect(file)) as conn:
        rows = conn.execute(
            "SELECT r.idempotency_key, r.refund_id, r.order_id, r.amount_cents,"
            " COUNT(q.idempotency_key), GROUP_CONCAT(q.pid) FROM refunds r"
            " JOIN requests q ON q.idempotency_key = r.idempotency_key"
            " GROUP BY r.idempotency_key ORDER BY MIN(q.at)"
        ).fetchall()
    return [
        LedgerEntry(
            idempotency_key=key,
            refund_id=refund_id,
            order_id=order_id,
            amount_cents=amount,
            requests=count,
            pids=[int(p) for p in str(pids).split(",")],
        )
        for key, refund_id, order_id, amount, count, pids in rows
    ]
