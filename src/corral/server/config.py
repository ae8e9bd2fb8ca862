"""What a server is configured with (`corral server`'s options, or `CORRAL_SERVER_*`)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field

MAX_BODY_BYTES = 1 << 20
"""The largest request body accepted by default (1 MiB): larger ones get 413."""
CURSOR_TTL = 3600.0
"""How long a page cursor stays valid, in seconds: an older one gets `cursor_expired`."""


def _secret_from_env() -> bytes:
    configured = os.environ.get("CORRAL_SERVER_SECRET")
    return configured.encode() if configured else secrets.token_bytes(32)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """A server's settings.

    `secret` signs page cursors and UI sessions. Every server process behind one load balancer
    needs the same one (`CORRAL_SERVER_SECRET`); without it each process makes its own, and a
    cursor from one process is refused by another as invalid (the client starts the list again).
    """

    database_url: str
    secret: bytes = field(default_factory=_secret_from_env, repr=False)
    max_body_bytes: int = MAX_BODY_BYTES
    cursor_ttl: float = CURSOR_TTL
    secure_cookies: bool = False
    """Mark the UI's session cookie `Secure` (serve the UI over HTTPS, e.g. behind a proxy)."""
    webhook_dispatcher: bool = True
    """Deliver webhooks from this process (`corral.control.dispatcher`): safe on any number of
    servers at once, as each delivery is claimed by one."""
    indexer: bool = True
    """Keep the search index and the cost roll-up up to date from this process
    (`corral.observe.indexer`), so searches and cost reports find little to index first: safe
    on any number of servers at once."""


__all__ = ["CURSOR_TTL", "MAX_BODY_BYTES", "ServerConfig"]
