"""The demo's workflows: the support fleet (`handle_ticket` and its agents), and fulfil an order
(check stock, charge, ship in parallel, await delivery).

The CLI registers the workflows of this module when no `--app` is given (the agents, router and
pipeline below with every workflow they may start), so `corral run handle_ticket --input ...`,
`corral run fulfil_order --input ...` and `corral worker` work out of the box.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, Field

from corral import RunContext, current_step, step, workflow
from corral.demo import payments
from corral.demo.fleet import (
    handle_ticket,
    order_lookup,
    policy_check,
    refunds,
    reply_drafting,
    reply_pipeline,
    reply_review,
    support_supervisor,
    triage,
    triage_classifier,
)

__all__ = [
    "fulfil_order",
    "handle_ticket",
    "order_lookup",
    "policy_check",
    "refunds",
    "reply_drafting",
    "reply_pipeline",
    "reply_review",
    "ship_item",
    "support_supervisor",
    "triage",
    "triage_classifier",
]


class Order(BaseModel):
    order_id: str
    customer: str
    items: list[str] = Field(min_length=1)
    amount_cents: int = Field(gt=0)


class Shipment(BaseModel):
    item: str
    tracking: str


class Receipt(BaseModel):
    order_id: str
    charge_id: str
    shipments: list[Shipment]
    delivered_by: str


@step
async def check_stock(items: list[str]) -> list[str]:
    """Every item is in stock in the demo warehouse."""
    return sorted(items)


@step
async def charge_card(customer: str, amount_cents: int) -> str:
    """Charge through the provider with this step's idempotency key: a retry charges once."""
    info = current_step()
    assert info is not None  # a step always knows itself
    return await asyncio.to_thread(payments.charge, info.idempotency_key, customer, amount_cents)


@step
async def book_courier(item: str) -> str:
    info = current_step()
    assert info is not None
    return "TRK-" + info.run_id[:6].upper() + "-" + item.upper()


@workflow(name="ship_item")
async def ship_item(ctx: RunContext, item: str) -> Shipment:
    """A child run per item, so each shipment has its own journal and can be retried alone."""
    return Shipment(item=item, tracking=await book_courier(item))


@workflow(name="fulfil_order")
async def fulfil_order(ctx: RunContext, order: Order) -> Receipt:
    """Check stock, charge the card, ship every item in parallel, then wait for delivery."""
    items = await check_stock(order.items)
    charge_id = await charge_card(order.customer, order.amount_cents)
    shipments = await asyncio.gather(*(ctx.run_child(ship_item, item) for item in items))
    # Parked durably: the run holds no worker while it waits, for a week if need be.
    delivery = await ctx.wait_for_signal("delivery_confirmed", timeout=7 * 24 * 3600)
    return Receipt(
        order_id=order.order_id,
        charge_id=charge_id,
        shipments=list(shipments),
        delivered_by=str(delivery.get("by", "unknown")),
    )
