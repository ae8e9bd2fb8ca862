"""API keys of the caller's tenant: make (the token is answered once), list, revoke. Admins only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from corral.governance.identity import Role
from corral.governance.keys import create_key, list_keys, revoke_key
from corral.server.problems import not_found
from corral.server.routing import CallerDep, route
from corral.server.shapes import CreateKey, KeyOut, NewKeyOut
from corral.server.state import state_of

router = APIRouter(tags=["keys"])

KeyId = Annotated[str, Path(min_length=1, max_length=64)]


@route(
    router,
    "POST",
    "/keys",
    "admin",
    status_code=201,
    response_model=NewKeyOut,
    summary="Make a key",
)
async def make_key(body: CreateKey, caller: CallerDep, request: Request) -> NewKeyOut:
    """A new key of the caller's tenant. `token` is in this answer only: store it now."""
    state = state_of(request)
    now = state.now()
    role: Role = body.role  # type: ignore[assignment]  # the model's pattern allows roles only
    expires_at = None if body.expires_in_days is None else now + body.expires_in_days * 86400
    made = await state.store.run_script(
        lambda d: create_key(
            tenant=caller.tenant,
            role=role,
            principal=body.principal,
            name=body.name,
            actor=caller.principal,
            now=now,
            expires_at=expires_at,
            dialect=d,
        )
    )
    return NewKeyOut(**KeyOut.of(made.key).model_dump(), token=made.token)


@route(router, "GET", "/keys", "admin", response_model=list[KeyOut], summary="List keys")
async def keys(caller: CallerDep, request: Request) -> list[KeyOut]:
    """The tenant's keys, oldest first (never their secrets)."""
    found = await state_of(request).store.read_script(lambda d: list_keys(caller.tenant))
    return [KeyOut.of(key) for key in found]


@route(router, "DELETE", "/keys/{key_id}", "admin", response_model=KeyOut, summary="Revoke a key")
async def revoke(key_id: KeyId, caller: CallerDep, request: Request) -> KeyOut:
    """Revoke a key of the tenant: it is refused from now on. Revoking it again answers it."""
    state = state_of(request)
    now = state.now()
    revoked = await state.store.run_script(
        lambda d: revoke_key(caller.tenant, key_id, actor=caller.principal, now=now, dialect=d)
    )
    if revoked is None:
        raise not_found("such key")
    return KeyOut.of(revoked)
