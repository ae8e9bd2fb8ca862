"""Model settings, read from the environment (and a `.env` file if present).

Each provider's key and base URL can be given under the provider's own variable name
(`OPENAI_API_KEY`, `ANTHROPIC_BASE_URL` — what their SDKs read) or with Corral's prefix
(`CORRAL_OPENAI_API_KEY`), which wins. `CORRAL_MODEL` picks the model agents use when they do
not name one; unset, they use the scripted model.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ModelSettings(BaseSettings):
    """Where models are and how to reach them."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    default_model: str | None = Field(
        default=None, validation_alias=AliasChoices("CORRAL_MODEL", "default_model")
    )
    openai_api_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CORRAL_OPENAI_API_KEY", "OPENAI_API_KEY", "openai_api_key"),
    )
    openai_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "CORRAL_OPENAI_BASE_URL", "OPENAI_BASE_URL", "openai_base_url"
        ),
    )
    anthropic_api_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "CORRAL_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY", "anthropic_api_key"
        ),
    )
    anthropic_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "CORRAL_ANTHROPIC_BASE_URL", "ANTHROPIC_BASE_URL", "anthropic_base_url"
        ),
    )
    request_timeout: float = Field(
        default=60.0,
        validation_alias=AliasChoices("CORRAL_MODEL_TIMEOUT", "request_timeout"),
    )
    """Seconds for one HTTP request to a model before the client gives up."""
    max_retries: int = Field(
        default=0, validation_alias=AliasChoices("CORRAL_MODEL_MAX_RETRIES", "max_retries")
    )
    """Retries the provider SDK makes itself within one attempt. 0 by default: Corral retries
    model steps itself (durably, journaled, under retry budgets and circuit breakers); SDK
    retries on top would multiply the load an outage sees."""
