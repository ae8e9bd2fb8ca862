"""The support fleet's world: customer tickets, the shop's orders and its refund policy.

Everything is in memory and fixed, so the fleet on the scripted model behaves the same on every
run and on every worker. The shop's calendar is fixed too (`TODAY`): "delivered 103 days ago"
must not change with the day the demo is run.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field

TODAY = dt.date(2025, 6, 12)
"""The shop's "today": policy windows are counted from it, not from the wall clock."""

RETURN_WINDOW_DAYS = 30
LATE_AFTER_DAYS = 7
LARGE_REFUND_CENTS = 50_000
"""Refunds above this (500.00) wait for finance's approval: the verdict says so, and the `support`
policy (support_policy.yaml) enforces it with an approval gate on `issue_refund`."""

Route = Literal["order_status", "refund", "policy", "escalation"]
"""Where triage sends a ticket."""


class Ticket(BaseModel):
    """A customer's message to support."""

    ticket_id: str = Field(pattern=r"^T-\d{4}$")
    customer: str
    subject: str
    text: str


class Order(BaseModel):
    """An order as the shop's order system holds it."""

    order_id: str
    customer: str
    item: str
    category: Literal["kitchen", "furniture", "electronics"]
    item_cents: int
    shipping_cents: int
    status: Literal["in_transit", "delivered", "delayed"]
    carrier: str
    tracking: str
    shipped_on: dt.date
    due_on: dt.date
    delivered_on: dt.date | None = None
    note: str = ""


ORDERS: dict[str, Order] = {
    order.order_id: order
    for order in (
        Order(
            order_id="A-1001",
            customer="ada@example.com",
            item="Stovetop kettle",
            category="kitchen",
            item_cents=4599,
            shipping_cents=499,
            status="in_transit",
            carrier="Parcelwise",
            tracking="PW-88213",
            shipped_on=dt.date(2025, 6, 9),
            due_on=dt.date(2025, 6, 13),
            note="left the regional hub this morning",
        ),
        Order(
            order_id="A-1002",
            customer="grace@example.com",
            item="Ceramic teapot",
            category="kitchen",
            item_cents=3850,
            shipping_cents=499,
            status="delivered",
            carrier="Parcelwise",
            tracking="PW-87790",
            shipped_on=dt.date(2025, 6, 6),
            due_on=dt.date(2025, 6, 10),
            delivered_on=dt.date(2025, 6, 10),
        ),
        Order(
            order_id="A-1003",
            customer="alan@example.com",
            item="Three-seat sofa, walnut",
            category="furniture",
            item_cents=124900,
            shipping_cents=0,
            status="delivered",
            carrier="Freightly",
            tracking="FR-20417",
            shipped_on=dt.date(2025, 6, 1),
            due_on=dt.date(2025, 6, 5),
            delivered_on=dt.date(2025, 6, 5),
        ),
        Order(
            order_id="A-1005",
            customer="linus@example.com",
            item="Noise-cancelling headphones",
            category="electronics",
            item_cents=19900,
            shipping_cents=999,
            status="delayed",
            carrier="Parcelwise",
            tracking="PW-86002",
            shipped_on=dt.date(2025, 5, 26),
            due_on=dt.date(2025, 5, 29),
            note="missed a connection at the sorting centre; re-routed",
        ),
        Order(
            order_id="A-1006",
            customer="margaret@example.com",
            item="Espresso grinder",
            category="kitchen",
            item_cents=18900,
            shipping_cents=499,
            status="delivered",
            carrier="Parcelwise",
            tracking="PW-71944",
            shipped_on=dt.date(2025, 2, 26),
            due_on=dt.date(2025, 3, 1),
            delivered_on=dt.date(2025, 3, 1),
        ),
    )
}

TICKETS: list[Ticket] = [
    Ticket(
        ticket_id="T-1001",
        customer="ada@example.com",
        subject="Where is my kettle?",
        text="Hi, I ordered a kettle last week (order A-1001) and it hasn't arrived yet. "
        "Where is it?",
    ),
    Ticket(
        ticket_id="T-1002",
        customer="grace@example.com",
        subject="Teapot arrived broken",
        text="The teapot from order A-1002 arrived with a cracked lid. I'd like a refund, please.",
    ),
    Ticket(
        ticket_id="T-1003",
        customer="alan@example.com",
        subject="Refund for the sofa",
        text="The sofa from order A-1003 doesn't fit through our door. I'd like to send it back "
        "for a full refund of $1,249.00.",
    ),
    Ticket(
        ticket_id="T-1004",
        customer="kim@example.com",
        subject="Returning opened electronics?",
        text="Before I buy: can I return headphones once I've opened the box? How long do I have?",
    ),
    Ticket(
        ticket_id="T-1005",
        customer="linus@example.com",
        subject="THIRD TIME ASKING",
        text="THIS IS THE THIRD TIME I'M WRITING!!! Order A-1005 was due two weeks ago and "
        "nobody answers. Unacceptable!!",
    ),
    Ticket(
        ticket_id="T-1006",
        customer="margaret@example.com",
        subject="Return a grinder",
        text="I'd like to return the espresso grinder from order A-1006, it's too loud.",
    ),
]


def ticket(ticket_id: str) -> Ticket:
    """The demo ticket `ticket_id` (T-1001 … T-1006)."""
    for known in TICKETS:
        if known.ticket_id == ticket_id:
            return known
    raise KeyError(
        f"no demo ticket {ticket_id!r}; known: {', '.join(t.ticket_id for t in TICKETS)}"
    )


def money(cents: int) -> str:
    """`4599` → `$45.99`."""
    return f"${cents // 100:,}.{cents % 100:02d}"
