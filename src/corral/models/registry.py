"""Model strings: `openai:gpt-4.1-mini`, `anthropic:claude-sonnet-4-5`, `scripted`.

`resolve_model` turns a string (or None, or a model object) into a `Model`. The provider's
client is imported only when a string names it. A missing API key is reported here, naming the
setting to set, rather than as an HTTP 401 from the provider.
"""

from __future__ import annotations

from collections.abc import Callable

from corral.errors import ModelNotConfigured, UnknownModel
from corral.models.model import Model
from corral.models.scripted import ScriptedModel
from corral.models.settings import ModelSettings


def _openai(name: str, settings: ModelSettings) -> Model:
    from corral.models.openai import OpenAIModel

    key = settings.openai_api_key
    if not key and not settings.openai_base_url:
        raise ModelNotConfigured(
            f"model 'openai:{name}' needs an API key: set OPENAI_API_KEY (or "
            "CORRAL_OPENAI_API_KEY); for an OpenAI-compatible server (vLLM, Ollama, llama.cpp, "
            "LM Studio) set OPENAI_BASE_URL instead",
            model=f"openai:{name}",
            setting="OPENAI_API_KEY",
        )
    return OpenAIModel(
        name,
        api_key=key or "not-needed",
        base_url=settings.openai_base_url,
        timeout=settings.request_timeout,
        max_retries=settings.max_retries,
    )


def _anthropic(name: str, settings: ModelSettings) -> Model:
    from corral.models.anthropic import AnthropicModel

    key = settings.anthropic_api_key
    if not key and not settings.anthropic_base_url:
        raise ModelNotConfigured(
            f"model 'anthropic:{name}' needs an API key: set ANTHROPIC_API_KEY (or "
            "CORRAL_ANTHROPIC_API_KEY)",
            model=f"anthropic:{name}",
            setting="ANTHROPIC_API_KEY",
        )
    return AnthropicModel(
        name,
        api_key=key or "not-needed",
        base_url=settings.anthropic_base_url,
        timeout=settings.request_timeout,
        max_retries=settings.max_retries,
    )


def _scripted(name: str, settings: ModelSettings) -> Model:
    if name not in ("", "default"):
        raise UnknownModel(
            f"unknown scripted model {name!r}: the string form is 'scripted' (the default "
            "scripted model); pass a ScriptedModel object for a script of your own",
            model=f"scripted:{name}",
        )
    return ScriptedModel.default()


PROVIDERS: dict[str, Callable[[str, ModelSettings], Model]] = {
    "openai": _openai,
    "anthropic": _anthropic,
    "scripted": _scripted,
}


def resolve_model(spec: str | Model | None, settings: ModelSettings | None = None) -> Model:
    """The model for `spec`: a model object as is; a `provider:name` string; None for the
    configured default (`CORRAL_MODEL`), which is the scripted model when nothing is set."""
    if isinstance(spec, Model):
        return spec
    settings = settings or ModelSettings()
    if spec is None:
        spec = settings.default_model or "scripted"
    provider, _, name = spec.partition(":")
    factory = PROVIDERS.get(provider)
    if factory is None:
        raise UnknownModel(
            f"unknown model {spec!r}: the provider prefix {provider!r} is not one of "
            f"{', '.join(sorted(PROVIDERS))} (write e.g. 'openai:gpt-4.1-mini')",
            model=spec,
        )
    if provider != "scripted" and not name:
        raise UnknownModel(
            f"model {spec!r} names no model after the provider (write e.g. '{provider}:…')",
            model=spec,
        )
    return factory(name, settings)
