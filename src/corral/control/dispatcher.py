"""Sending webhook deliveries: signed POSTs, retried with backoff, by one or many dispatchers.

`dispatch_once` is one round of the dispatcher (enqueue, claim, send, record: see
`corral.control.webhooks`); `run_dispatcher` repeats it until told to stop, and is what the
server runs in the background. Any number of servers may run one: deliveries are claimed, so
each is sent by one at a time, and a claim that lapses is taken over (at-least-once).

What a receiver gets:

```
POST <url>
Content-Type: application/json
Corral-Event-Id: approval.requested:1b4e28ba-2fa1-11d2-883f-0016d3cca427
Corral-Event-Type: approval.requested
Corral-Delivery-Id: 6f1d…
Corral-Delivery-Attempt: 1
Corral-Signature: t=1763717400,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd

{"id": "approval.requested:1b4e…", "type": "approval.requested", "tenant": "acme",
 "time": "2025-11-21T09:30:00Z", "data": {"approval_id": "1b4e…", "tool": "refund", …}}
```

Verifying a delivery: `v1` is the hex HMAC-SHA256, keyed with the webhook's secret (the whole
`whsec_…` string, UTF-8), of the bytes `<t>.<body>`, where `t` is the header's Unix time and
`body` the raw request body, byte for byte (parse the JSON after checking). Compare in constant
time, and refuse a `t` more than 5 minutes from the receiver's clock: a captured request
replayed later fails, since changing `t` breaks the signature. `verify_signature` is the
reference; in any language:

```python
def verify(secret: str, header: str, body: bytes, now: float) -> bool:
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    signed_at = int(fields.get("t", "0"))
    if abs(now - signed_at) > 300:
        return False
    mac = hmac.new(secret.encode(), f"{signed_at}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(mac.hexdigest(), fields.get("v1", ""))
```
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import hmac
import logging
import math
import random
import uuid
from dataclasses import dataclass
from typing import Final

import httpx2

from corral import __version__
from corral.control.webhooks import (
    Claimed,
    Outcome,
    claim_deliveries,
    enqueue_events,
    record_attempt,
)
from corral.engine.clock import Clock
from corral.store import Store

log = logging.getLogger("corral.webhooks")

MAX_ATTEMPTS: Final = 10
"""Attempts before a delivery is dead (retries over 45 to 90 minutes, with the default delays)."""
BASE_DELAY: Final = 10.0
"""Seconds before the second attempt; each later wait doubles, up to `MAX_DELAY`."""
MAX_DELAY: Final = 3600.0
MAX_RETRY_AFTER: Final = 86400.0
"""The longest `Retry-After` honoured; a longer one waits this long."""
SEND_TIMEOUT: Final = 10.0
"""Seconds a receiver has to answer."""
BATCH_SIZE: Final = 50
"""Deliveries claimed per round."""
CONCURRENCY: Final = 8
"""Deliveries sent at once by one dispatcher."""
REPLAY_WINDOW: Final = 300.0
"""How far a signature's time may be from the receiver's clock (`verify_signature`)."""
RETRIED_STATUSES: Final = frozenset({408, 429})
SIGNATURE_HEADER: Final = "Corral-Signature"
EVENT_ID_HEADER: Final = "Corral-Event-Id"


@dataclass(frozen=True, slots=True)
class DispatchReport:
    """What one dispatcher round did."""

    enqueued: int = 0
    delivered: int = 0
    retrying: int = 0
    dead: int = 0


# -- signing and sending -----------------------------------------------------------------------


def sign(secret: str, signed_at: int, body: bytes) -> str:
    """The `Corral-Signature` header of `body` sent at `signed_at` (Unix seconds)."""
    mac = hmac.new(secret.encode(), f"{signed_at}.".encode() + body, hashlib.sha256)
    return f"t={signed_at},v1={mac.hexdigest()}"


def verify_signature(
    secret: str, header: str, body: bytes, *, now: float, tolerance: float = REPLAY_WINDOW
) -> bool:
    """Whether `header` signs `body` with `secret`, at a time within `tolerance` of `now`: what
    a receiver checks (see the module's docstring)."""
    fields = dict(part.strip().split("=", 1) for part in header.split(",") if "=" in part)
    try:
        signed_at = int(fields.get("t", ""))
    except ValueError:
        return False
    if abs(now - signed_at) > tolerance:
        return False
    expected = sign(secret, signed_at, body).rpartition("v1=")[2]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def retry_delay(attempt: int, rng: random.Random) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): `BASE_DELAY` doubled
    for each attempt before, at most `MAX_DELAY`, then jittered down by up to half so that
    deliveries that failed together do not all come back together."""
    ceiling = min(BASE_DELAY * 2.0 ** (attempt - 1), MAX_DELAY)
    return ceiling * (0.5 + rng.random() / 2)


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """The wait a `Retry-After` header asks for (seconds, or an HTTP date), within
    [0, `MAX_RETRY_AFTER`]; None if absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        seconds = float(text)
    else:
        try:
            seconds = email.utils.parsedate_to_datetime(text).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _failed(
    claimed: Claimed,
    *,
    now: float,
    retry: bool,
    rng: random.Random,
    status_code: int | None = None,
    error: str,
    wait: float | None = None,
) -> Outcome:
    if not retry or claimed.attempt >= MAX_ATTEMPTS:
        return Outcome(at=now, status="dead", status_code=status_code, error=error)
    delay = retry_delay(claimed.attempt, rng) if wait is None else wait
    return Outcome(
        at=now,
        status="pending",
        status_code=status_code,
        error=error,
        next_attempt_at=now + delay,
    )


async def send_delivery(
    http: httpx2.AsyncClient, claimed: Claimed, *, now: float, rng: random.Random
) -> Outcome:
    """POST a claimed delivery, signed, and say what came of it (never raises for the
    receiver's failures: they are the outcome)."""
    body = claimed.body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"Corral-Webhooks/{__version__}",
        EVENT_ID_HEADER: claimed.event_id,
        "Corral-Event-Type": claimed.event_type,
        "Corral-Delivery-Id": claimed.delivery_id,
        "Corral-Delivery-Attempt": str(claimed.attempt),
        SIGNATURE_HEADER: sign(claimed.secret, int(now), body),
    }
    try:
        async with http.stream(
            "POST", claimed.url, content=body, headers=headers, timeout=SEND_TIMEOUT
        ) as response:
            excerpt = await _excerpt(response)
    except httpx2.InvalidURL as exc:
        return _failed(claimed, now=now, retry=False, rng=rng, error=f"invalid URL: {exc}")
    except httpx2.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}".rstrip(": ")[:500]
        return _failed(claimed, now=now, retry=True, rng=rng, error=error)
    code = response.status_code
    if 200 <= code < 300:
        return Outcome(at=now, status="delivered", status_code=code)
    error = f"HTTP {code}" + (f": {excerpt}" if excerpt else "")
    if 300 <= code < 400:
        where = response.headers.get("location", "elsewhere")
        error = f"HTTP {code}: redirects are not followed; point the webhook at {where}"
    retried = code in RETRIED_STATUSES or code >= 500
    wait = parse_retry_after(response.headers.get("retry-after"), now=now) if retried else None
    return _failed(
        claimed, now=now, retry=retried, rng=rng, status_code=code, error=error, wait=wait
    )


async def _excerpt(response: httpx2.Response, limit: int = 300) -> str:
    """The start of a response's body, for the attempt's record (never all of a large one)."""
    if 200 <= response.status_code < 300:
        return ""
    taken = b""
    async for chunk in response.aiter_bytes():
        taken += chunk
        if len(taken) >= limit:
            break
    return taken[:limit].decode("utf-8", "replace").strip()


# -- the dispatcher ----------------------------------------------------------------------------


async def dispatch_once(
    store: Store,
    clock: Clock,
    http: httpx2.AsyncClient,
    *,
    rng: random.Random | None = None,
    limit: int = BATCH_SIZE,
) -> DispatchReport:
    """One round: enqueue new events, claim the due deliveries, send them (`CONCURRENCY` at a
    time) and record each attempt."""
    jitter = rng or random.Random()
    now = clock.now()
    enqueued = await store.run_script(lambda d: enqueue_events(now=now, dialect=d))
    claimer = uuid.uuid4().hex
    claimed = await store.run_script(
        lambda d: claim_deliveries(now=now, claimer=claimer, limit=limit, dialect=d)
    )
    gate = asyncio.Semaphore(CONCURRENCY)

    async def deliver(delivery: Claimed) -> Outcome:
        async with gate:
            outcome = await send_delivery(http, delivery, now=clock.now(), rng=jitter)
            kept = await store.run_script(lambda d: record_attempt(delivery, outcome))
            if not kept:
                log.warning("delivery %s was taken over while it was sent", delivery.delivery_id)
            return outcome

    results = await asyncio.gather(*(deliver(c) for c in claimed), return_exceptions=True)
    errors = [result for result in results if isinstance(result, BaseException)]
    if errors:  # the others are recorded; an unrecorded one is sent again once its claim lapses
        raise errors[0]
    outcomes = [result for result in results if isinstance(result, Outcome)]
    return DispatchReport(
        enqueued=enqueued,
        delivered=sum(o.status == "delivered" for o in outcomes),
        retrying=sum(o.status == "pending" for o in outcomes),
        dead=sum(o.status == "dead" for o in outcomes),
    )


async def run_dispatcher(
    store: Store, clock: Clock, *, stop: asyncio.Event, interval: float = 1.0
) -> None:
    """Dispatch rounds every `interval` seconds until `stop` is set (the server runs this in
    the background; any number of servers may run one). A failing round (the database is
    away) is logged and the next one tries again."""
    async with httpx2.AsyncClient(timeout=SEND_TIMEOUT, follow_redirects=False) as http:
        while not stop.is_set():
            try:
                report = await dispatch_once(store, clock, http)
                if report.dead:
                    log.warning("%d webhook deliveries failed for good", report.dead)
            except Exception:  # a round must not end the loop: the next one retries
                log.exception("a webhook dispatch round failed")
            await clock.wait(stop, interval)


__all__ = [
    "EVENT_ID_HEADER",
    "MAX_ATTEMPTS",
    "SIGNATURE_HEADER",
    "DispatchReport",
    "dispatch_once",
    "parse_retry_after",
    "retry_delay",
    "run_dispatcher",
    "send_delivery",
    "sign",
    "verify_signature",
]
