"""The switch that forbids model requests to the network, for test suites.

With it off, a client may only reach a server on a loopback address (the OpenAI- and
Anthropic-compatible servers that tests start on 127.0.0.1). Anything else raises
`ModelRequestsForbidden` before a byte is sent, so a test can never spend money or leak a
prompt by accident. The environment variable `CORRAL_ALLOW_NETWORK_MODELS=0` turns it off for a
whole process tree (worker processes started by tests inherit it).
"""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlsplit

from corral.errors import ModelRequestsForbidden

_ENV = "CORRAL_ALLOW_NETWORK_MODELS"
_allowed: bool | None = None


def allow_network_models(allowed: bool) -> None:
    """Allow (True) or forbid (False) model requests to non-loopback hosts in this process."""
    global _allowed
    _allowed = allowed


def network_models_allowed() -> bool:
    if _allowed is not None:
        return _allowed
    return os.environ.get(_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_model_request(model: str, url: str) -> None:
    """Raise `ModelRequestsForbidden` if `url` leaves the machine while the switch is off."""
    if network_models_allowed() or is_loopback(url):
        return
    raise ModelRequestsForbidden(
        f"model {model!r}: requests to {url} are forbidden here (network model requests are "
        f"switched off: {_ENV}=0 or allow_network_models(False)); point the client at a "
        "loopback server or a ScriptedModel",
        model=model,
        url=url,
    )
