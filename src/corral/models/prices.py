"""What a model call cost in USD, from the prices bundled with `genai-prices` (offline).

Model strings are Corral's `provider:name` (`openai:gpt-4.1-mini`, `anthropic:claude-sonnet-4-5`).
The scripted test model is free. A model `genai-prices` does not know costs `None`: the caller
decides (budgets then count its tokens but not its dollars).

The bundled price table is used as installed; nothing is fetched (`genai-prices` can update its
prices over the network, which Corral never asks it to do), so a cost is the same on every
host running the same version.
"""

from __future__ import annotations

import datetime as dt

import genai_prices

from corral.models.messages import Usage

FREE_PROVIDERS = frozenset({"scripted"})
"""Providers whose calls cost nothing (the scripted model of tests and demos)."""


def cost_usd(model: str, usage: Usage, *, at: float | None = None) -> float | None:
    """The price of `usage` on `model` (`provider:name`) in USD, or None if the price is unknown.

    `at` (seconds since the epoch) picks the price in force then, for models whose price
    changed; the default is now.
    """
    provider, separator, name = model.partition(":")
    if not separator:
        provider, name = "", model
    if provider in FREE_PROVIDERS:
        return 0.0
    if not name:
        return None
    when = dt.datetime.fromtimestamp(at, tz=dt.UTC) if at is not None else None
    price_usage = genai_prices.Usage(
        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens
    )
    try:
        calculation = genai_prices.calc_price(
            price_usage, name, provider_id=provider or None, genai_request_timestamp=when
        )
    except LookupError:
        return None
    return float(calculation.total_price)


def known(model: str) -> bool:
    """Whether `cost_usd` can price `model`."""
    return cost_usd(model, Usage(input_tokens=1, output_tokens=1)) is not None
