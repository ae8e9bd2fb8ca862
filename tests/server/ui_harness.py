"""What the UI tests share: the demo's refund held for finance, and a browser-like client.

`refund_waiting` sets a store up as `corral demo` does (ada administers the tenant, finn
approves for finance, the support policy is applied), starts the ticket whose $1,249 refund the
policy holds for finance, and runs a worker until the run waits for the approval.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from corral.control.app_loading import load_workflows
from corral.demo.fleet import POLICY_FILE, handle_ticket
from corral.demo.support_data import ticket
from corral.demo.support_tools import LEDGER_ENV, PACE_ENV
from corral.governance.approvals import list_approvals
from corral.governance.policy_store import apply_policy
from corral.server.security import SESSION_COOKIE
from corral.store import Store
from corral.testing import FakeClock

from .harness import ApiServer, serving

DEMO_APP = "corral.demo.workflows"
LARGE_REFUND_TICKET = "T-1003"
"""The ticket whose refund ($1,249) is over the policy's limit: it waits for finance."""


@dataclass(frozen=True)
class WaitingRefund:
    """The demo's refund, held at the approval gate."""

    root_run_id: str
    """The `handle_ticket` run."""
    refund_run_id: str
    """The `agent:refunds` child run whose `issue_refund` call waits."""
    approval_id: str


@contextlib.asynccontextmanager
async def demo_server(
    store: Store, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ApiServer]:
    """A server that knows the demo's workflows, on the test's store; the demo's tools write
    to a refund ledger of the test's own, without simulated latency."""
    monkeypatch.setenv(LEDGER_ENV, str(tmp_path / "refunds.db"))
    monkeypatch.setenv(PACE_ENV, "0")
    async with serving(store, clock, workflows=load_workflows(DEMO_APP)) as server:
        yield server


async def govern_like_the_demo(api: ApiServer) -> None:
    """ada administers the tenant, finn approves for finance, the support policy applies."""
    await api.principal("ada", roles=("admin",))
    await api.principal("finn", roles=("approver",), groups=("finance",))
    await apply_policy(
        api.store,
        "default",
        POLICY_FILE.read_text(encoding="utf-8"),
        source=str(POLICY_FILE),
        actor="human:ada",
        now=api.clock.now(),
    )


async def refund_waiting(api: ApiServer) -> WaitingRefund:
    """Start the large refund's ticket and work until it waits for finance's approval."""
    await govern_like_the_demo(api)
    corral = api.corral()
    started = await corral.start(handle_ticket, ticket(LARGE_REFUND_TICKET))
    await corral.run_until_idle()
    root = await corral.get_run(started.run_id)
    assert root.status == "waiting", root.error
    pending = await api.store.read_script(lambda d: list_approvals("default", "pending"))
    assert len(pending) == 1, pending
    return WaitingRefund(
        root_run_id=started.run_id,
        refund_run_id=pending[0].run_id,
        approval_id=pending[0].approval_id,
    )


def browser(api: ApiServer, token: str | None = None) -> httpx2.AsyncClient:
    """A client that asks for pages as a browser does, with the session cookie of `token`."""
    cookies = {} if token is None else {SESSION_COOKIE: token}
    return httpx2.AsyncClient(
        base_url=api.base_url,
        headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
        cookies=cookies,
        timeout=10.0,
        follow_redirects=False,
    )


__all__ = [
    "DEMO_APP",
    "WaitingRefund",
    "browser",
    "demo_server",
    "govern_like_the_demo",
    "refund_waiting",
]
