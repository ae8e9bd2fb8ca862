"""A real server for API tests: uvicorn on 127.0.0.1 (a free port), on the test's store.

`ApiServer` starts `create_app` under uvicorn as a task of the test's event loop, so tests speak
HTTP to it over a real socket (`httpx2`), and makes keys straight in the store (as `corral keys
create` does), for any tenant and role.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx2
import uvicorn
from fastapi import APIRouter

from corral import Corral, Workflow
from corral.governance.approvals import ApprovalRequest, request_approval
from corral.governance.documents import ApprovalSpec
from corral.governance.identity import Principal, Role, add_principal
from corral.governance.keys import create_key
from corral.server import ServerConfig, create_app
from corral.store import Store
from corral.testing import FakeClock

SECRET = b"tests-only-secret-tests-only-secret"


@dataclass
class ApiServer:
    """A running server and what tests need around it."""

    store: Store
    clock: FakeClock
    base_url: str
    workflows: list[Workflow[Any, Any]] = field(default_factory=list)

    async def key(
        self, role: Role, *, tenant: str = "default", principal: str | None = None
    ) -> str:
        """A fresh key's token."""
        made = await self.store.run_script(
            lambda d: create_key(
                tenant=tenant,
                role=role,
                principal=principal,
                name=f"{role} key",
                actor="tests",
                now=self.clock.now(),
                expires_at=None,
                dialect=d,
            )
        )
        return made.token

    async def principal(
        self,
        name: str,
        *,
        roles: tuple[Role, ...],
        groups: tuple[str, ...] = (),
        tenant: str = "default",
    ) -> None:
        person = Principal(tenant=tenant, name=name, roles=roles, groups=groups)
        await self.store.run_script(
            lambda d: add_principal(person, actor="tests", now=self.clock.now(), dialect=d)
        )

    def client(self, token: str | None = None) -> httpx2.AsyncClient:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return httpx2.AsyncClient(base_url=self.base_url, headers=headers, timeout=10.0)

    async def ask_approval(self, *, tenant: str = "default", run_id: str) -> ApprovalRequest:
        """A pending approval of a refund tool call on step 1 of `run_id`, for finance."""
        now = self.clock.now()
        return await self.store.run_script(
            lambda d: request_approval(
                tenant=tenant,
                run_id=run_id,
                step_seq=1,
                agent="refunds",
                tool="refund",
                arguments={"order": "A-1", "contact": "ada@example.com"},
                parameters={"type": "object"},
                reason="refunds over 100 need finance",
                policy="payments",
                policy_version=1,
                rule="big-refunds",
                spec=ApprovalSpec(approvers=("finance",), deadline=3600),
                now=now,
                dialect=d,
            )
        )

    def corral(self, tenant: str = "default") -> Corral:
        """A `Corral` on the same store (to start runs, run a worker): not to be closed."""
        return Corral(store=self.store, clock=self.clock, workflows=self.workflows, tenant=tenant)


@contextlib.asynccontextmanager
async def serving(
    store: Store,
    clock: FakeClock,
    *,
    workflows: Iterable[Workflow[Any, Any]] = (),
    max_body_bytes: int = 1 << 20,
    cursor_ttl: float = 3600.0,
    extra_routers: Sequence[APIRouter] = (),
    indexer: bool = False,
) -> AsyncIterator[ApiServer]:
    """Serve `create_app` on 127.0.0.1 for the duration of the block.

    The background indexer is off unless asked for (searches and cost reports index first, so
    tests see no background writes); the webhook dispatcher is always off (tests deliver with
    `dispatch_once`, on the FakeClock).
    """
    wanted = list(workflows)
    config = ServerConfig(
        database_url=store.url,
        secret=SECRET,
        max_body_bytes=max_body_bytes,
        cursor_ttl=cursor_ttl,
        webhook_dispatcher=False,
        indexer=indexer,
    )
    app = create_app(
        config, workflows=wanted, store=store, clock=clock, extra_routers=extra_routers
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield ApiServer(store, clock, f"http://127.0.0.1:{port}", wanted)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
