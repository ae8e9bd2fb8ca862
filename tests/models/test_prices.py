"""Costs of model calls in USD, from the prices bundled with genai-prices (no network)."""

from __future__ import annotations

import pytest

from corral.models import Usage
from corral.models.prices import cost_usd, known

USAGE = Usage(input_tokens=1_000_000, output_tokens=1_000_000)


@pytest.mark.parametrize(
    "model", ["openai:gpt-4.1-mini", "openai:gpt-4o", "anthropic:claude-sonnet-4-5"]
)
def test_known_models_cost_money(model: str) -> None:
    price = cost_usd(model, USAGE)
    assert price is not None
    assert price > 0
    assert known(model)


def test_the_price_follows_the_tokens() -> None:
    small = cost_usd("openai:gpt-4.1-mini", Usage(input_tokens=1000, output_tokens=0))
    large = cost_usd("openai:gpt-4.1-mini", Usage(input_tokens=2000, output_tokens=0))
    output = cost_usd("openai:gpt-4.1-mini", Usage(input_tokens=0, output_tokens=1000))
    assert small is not None
    assert large is not None
    assert output is not None
    assert large == pytest.approx(2 * small)
    assert output > small  # output tokens cost more than input tokens
    assert cost_usd("openai:gpt-4.1-mini", Usage(input_tokens=0, output_tokens=0)) == 0.0


def test_a_price_in_force_at_a_time() -> None:
    assert cost_usd("openai:gpt-4.1-mini", USAGE, at=1_750_000_000.0) == cost_usd(
        "openai:gpt-4.1-mini", USAGE
    )


def test_the_scripted_model_is_free() -> None:
    assert cost_usd("scripted:anything", USAGE) == 0.0
    assert cost_usd("scripted:", USAGE) == 0.0


@pytest.mark.parametrize("model", ["openai:no-such-model", "nowhere:gpt-4o", "openai:", ""])
def test_unknown_models_have_no_price(model: str) -> None:
    assert cost_usd(model, USAGE) is None
    assert not known(model)
