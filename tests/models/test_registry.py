"""Model strings and settings to model objects: `resolve_model`."""

from __future__ import annotations

from typing import Any

import pytest

from corral.errors import ModelCallFailed, ModelNotConfigured, UnknownModel
from corral.models import Message, ModelRequest, ModelSettings, ScriptedModel, resolve_model
from corral.models.anthropic import AnthropicModel
from corral.models.openai import OpenAIModel
from corral.testing import (
    AnthropicCompatibleServer,
    OpenAICompatibleServer,
    ScriptItem,
    ServerFailure,
)

_SETTING_VARIABLES = [
    "CORRAL_MODEL",
    "OPENAI_API_KEY",
    "CORRAL_OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "CORRAL_OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "CORRAL_ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "CORRAL_ANTHROPIC_BASE_URL",
    "CORRAL_MODEL_TIMEOUT",
    "CORRAL_MODEL_MAX_RETRIES",
]


@pytest.fixture(autouse=True)
def no_model_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come only from what each test passes, not from the developer's shell."""
    for variable in _SETTING_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


def settings(**values: Any) -> ModelSettings:
    """Settings as the environment variables `values` would give (and no `.env` file)."""
    return ModelSettings(_env_file=None, **values)


REQUEST = ModelRequest(messages=[Message.user("hello")])


async def test_nothing_configured_is_the_default_scripted_model() -> None:
    model = resolve_model(None, settings())
    assert isinstance(model, ScriptedModel)
    assert model.name == "scripted:default"
    response = await model.complete(REQUEST)
    assert response.message.content.startswith("[scripted model]")


def test_a_model_object_is_used_as_is() -> None:
    model = ScriptedModel(["hi"])
    assert resolve_model(model) is model


def test_the_configured_default_model_is_used_when_none_is_named() -> None:
    model = resolve_model(None, settings(CORRAL_MODEL="openai:gpt-test", OPENAI_API_KEY="k"))
    assert isinstance(model, OpenAIModel)
    assert model.name == "openai:gpt-test"


def test_unknown_provider_prefix() -> None:
    with pytest.raises(UnknownModel) as raised:
        resolve_model("gemini:pro", settings())
    assert "'gemini'" in raised.value.message
    assert "anthropic, openai, scripted" in raised.value.message
    assert raised.value.ids == {"model": "gemini:pro"}


@pytest.mark.parametrize("spec", ["openai:", "anthropic"])
def test_provider_without_a_model_name(spec: str) -> None:
    with pytest.raises(UnknownModel, match="names no model"):
        resolve_model(spec, settings(OPENAI_API_KEY="k", ANTHROPIC_API_KEY="k"))


def test_scripted_string_only_names_the_default() -> None:
    assert isinstance(resolve_model("scripted:default", settings()), ScriptedModel)
    with pytest.raises(UnknownModel, match="pass a ScriptedModel object"):
        resolve_model("scripted:mine", settings())


@pytest.mark.parametrize(
    ("spec", "setting"),
    [("openai:gpt-test", "OPENAI_API_KEY"), ("anthropic:claude-test", "ANTHROPIC_API_KEY")],
)
def test_missing_key_names_the_setting(spec: str, setting: str) -> None:
    with pytest.raises(ModelNotConfigured) as raised:
        resolve_model(spec, settings())
    assert setting in raised.value.message
    assert raised.value.ids == {"model": spec, "setting": setting}


def test_keys_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "from-the-shell")
    model = resolve_model("anthropic:claude-test", ModelSettings(_env_file=None))
    assert isinstance(model, AnthropicModel)
    assert model.base_url == "https://api.anthropic.com"


async def test_openai_base_url_without_a_key_reaches_the_server() -> None:
    with OpenAICompatibleServer(["Hello from a local server."]) as server:
        model = resolve_model("openai:llama-test", settings(OPENAI_BASE_URL=server.base_url))
        try:
            response = await model.complete(REQUEST)
        finally:
            await model.aclose()
    assert isinstance(model, OpenAIModel)
    assert response.message.content == "Hello from a local server."
    assert response.model == "openai:llama-test"
    assert server.requests[0]["model"] == "llama-test"


async def test_anthropic_base_url_without_a_key_reaches_the_server() -> None:
    with AnthropicCompatibleServer(["Hello from Claude's stand-in."]) as server:
        model = resolve_model(
            "anthropic:claude-test", settings(CORRAL_ANTHROPIC_BASE_URL=server.base_url)
        )
        try:
            response = await model.complete(REQUEST)
        finally:
            await model.aclose()
    assert response.message.content == "Hello from Claude's stand-in."
    assert response.model == "anthropic:claude-test"


async def test_settings_set_the_sdk_retries() -> None:
    script: list[ScriptItem] = [ServerFailure(500), ServerFailure(500), "third time lucky"]
    with OpenAICompatibleServer(script) as server:
        values = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "k"}
        no_retries = resolve_model("openai:gpt-test", settings(**values, max_retries=0))
        two_retries = resolve_model("openai:gpt-test", settings(**values, max_retries=2))
        try:
            with pytest.raises(ModelCallFailed) as raised:
                await no_retries.complete(REQUEST)
            response = await two_retries.complete(REQUEST)
        finally:
            await no_retries.aclose()
            await two_retries.aclose()
    assert raised.value.ids["status"] == 500
    assert response.message.content == "third time lucky"
    assert len(server.requests) == 3
