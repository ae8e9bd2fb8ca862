"""Who is calling, and whether they may: API keys, roles, tenants.

Every route declares the role it needs with `route(...)` (viewer, operator, approver, admin; or
`PUBLIC` for the health check and the login page). The declaration is both the check (a FastAPI
dependency) and data (`route_role`), which the authorization-matrix test reads from the router,
so a route cannot be added without a role.

A caller presents a key as `Authorization: Bearer crl_…` or, in the web UI, in the session
cookie the login page sets. The key's tenant is the only tenant the request can see: a resource
of another tenant answers exactly like one that does not exist (404). Failures answer 401 (no
key, or one that is malformed, unknown, wrong, revoked or expired: the same detail for all, so a
caller cannot probe which) or 403 (the key's role is below the route's).

On PostgreSQL, row-level security backs the tenant filter: once a key is accepted, the rest of
the request is in its tenant's scope (`corral.store.tenant_scope`), so a query that forgot its
tenant filter still sees and changes that tenant's rows only.

Audit: a known key's failures are recorded in its tenant's chain (`key.refused`); every request
that changes something (not GET/HEAD) is recorded with its answer's status (`key.used`), by the
middleware `audit_changes`. Reads only update the key's `last_used_at`, at most once a minute.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from corral.governance.identity import Role
from corral.governance.keys import ApiKey, check_token, record_failure, record_use, touch
from corral.server.problems import Problem
from corral.server.state import state_of
from corral.store import enter_tenant_scope

log = logging.getLogger("corral.server.security")

PUBLIC: Final = "public"
"""The role of a route that needs no key."""
ROLE_KEY = "x-corral-role"
"""Where a route's declared role is kept (its OpenAPI extension)."""
SESSION_COOKIE = "corral_session"
UI_HEADER = "X-Corral-UI"
"""The header the UI's scripts send with every change (see `requires`: CSRF)."""
TOUCH_EVERY = 60.0
_READS = frozenset({"GET", "HEAD", "OPTIONS"})

bearer = HTTPBearer(auto_error=False, description="An API key: `corral keys create`.")
session_cookie = APIKeyCookie(
    name=SESSION_COOKIE, auto_error=False, description="The web UI's session (its login page)."
)


@dataclass(frozen=True, slots=True)
class Caller:
    """The key a request came with."""

    key: ApiKey

    @property
    def tenant(self) -> str:
        return self.key.tenant

    @property
    def principal(self) -> str:
        return self.key.principal

    @property
    def role(self) -> Role:
        return self.key.role


def _unauthorized() -> Problem:
    return Problem(
        401,
        "unauthorized",
        "a valid API key is required: send it as 'Authorization: Bearer crl_…'",
        headers={"WWW-Authenticate": 'Bearer realm="corral"'},
    )


async def authenticate(request: Request, token: str | None) -> Caller:
    """The caller a token names; `Problem` 401 otherwise (a known key's failure is audited)."""
    if not token:
        raise _unauthorized()
    state = state_of(request)
    now = state.now()
    checked = await state.store.read_script(lambda d: check_token(token, now=now))
    if checked.key is None:
        known, failure = checked.known, checked.failure or "refused"
        if known is not None:
            await state.store.run_script(
                lambda d: record_failure(known, failure, now=now, dialect=d)
            )
        log.info("refused a key (%s) for %s %s", failure, request.method, request.url.path)
        raise _unauthorized()
    caller = Caller(checked.key)
    request.state.caller = caller
    last = checked.key.last_used_at
    if request.method in _READS and (last is None or now - last >= TOUCH_EVERY):
        await state.store.run_script(lambda d: touch(caller.key.key_id, now=now))
    # The rest of the request works in the key's tenant. No block to leave: the scope is set in
    # the request's own context (this is an async dependency, run in the task that then runs
    # the endpoint and its response; a sync endpoint's thread gets a copy of it) and ends with
    # it. The middleware outside (`audit_changes`) runs the route in a task of its own, so
    # the scope does not reach back into it.
    enter_tenant_scope(caller.tenant)
    return caller


def token_of(credentials: HTTPAuthorizationCredentials | None, cookie: str | None) -> str | None:
    if credentials is not None and credentials.scheme.lower() == "bearer":
        return credentials.credentials
    return cookie


def requires(role: Role) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the caller, who must hold `role` (or a higher one)."""

    async def caller_with_role(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        cookie: Annotated[str | None, Depends(session_cookie)],
    ) -> Caller:
        token = token_of(credentials, cookie)
        # A change made with the UI's session cookie must come from the UI's own scripts: a
        # cross-site form cannot set this header (no CORS is allowed), so no CSRF.
        from_cookie = token is not None and token == cookie
        if from_cookie and request.method not in _READS and request.headers.get(UI_HEADER) != "1":
            raise Problem(
                403, "csrf", f"changes made with the session cookie need the {UI_HEADER} header"
            )
        caller = await authenticate(request, token)
        if not caller.key.has_role(role):
            raise Problem(
                403,
                "forbidden",
                f"this needs the {role} role; the key {caller.key.key_id} has {caller.role}",
            )
        return caller

    caller_with_role.__name__ = f"requires_{role}"
    return caller_with_role


def role_extra(role: Role | str) -> dict[str, Any]:
    """The OpenAPI extension that declares a route's role (see `route_role`)."""
    return {ROLE_KEY: role}


def route_role(route: APIRoute) -> str | None:
    """The role a route declares (`PUBLIC` for none needed); None if it declares nothing."""
    extra = route.openapi_extra or {}
    value = extra.get(ROLE_KEY)
    return None if value is None else str(value)


async def audit_changes(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Middleware: record each change made with a key, with the status it was answered."""
    response = await call_next(request)
    caller: Caller | None = getattr(request.state, "caller", None)
    if caller is not None and request.method not in _READS:
        state = state_of(request)
        now = state.now()
        action = f"{request.method} {request.url.path}"
        try:
            await state.store.run_script(
                lambda d: record_use(
                    caller.key, action=action, status=response.status_code, now=now, dialect=d
                )
            )
        except Exception:  # the change is made; failing to record it must not hide that
            log.exception("could not audit %s by key %s", action, caller.key.key_id)
    return response


__all__ = [
    "PUBLIC",
    "ROLE_KEY",
    "SESSION_COOKIE",
    "UI_HEADER",
    "Caller",
    "audit_changes",
    "authenticate",
    "requires",
    "role_extra",
    "route_role",
]
