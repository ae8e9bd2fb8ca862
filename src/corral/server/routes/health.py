"""Health: whether the server can reach its database (for load balancers and orchestrators)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from corral.errors import CorralError
from corral.server.problems import Problem
from corral.server.routing import route
from corral.server.security import PUBLIC
from corral.server.state import state_of
from corral.store.scripts import Script, Statement

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str


def _ping() -> Script[None]:
    yield Statement("SELECT 1")


@route(router, "GET", "/health", PUBLIC, response_model=Health, summary="Health check")
async def health(request: Request) -> Health:
    """`ok` when the database answers; 503 `store_unavailable` when it does not."""
    try:
        await state_of(request).store.read_script(lambda d: _ping())
    except CorralError as exc:
        raise Problem(503, "store_unavailable", f"the database does not answer: {exc}") from None
    return Health(status="ok", database="ok")
