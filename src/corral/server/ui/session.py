"""Signing in to the UI with an API key, signing out, and the UI's static files.

A person pastes a key on the login page; its script posts it here (`POST /login`, JSON, with
the `X-Corral-UI` header), the key is checked as any API request's is (`security.authenticate`:
unknown, revoked or expired keys are refused, a known key's failure is audited), and the answer
sets the session cookie to the key: HttpOnly (no script reads it), SameSite=Strict (no other
site sends it), Secure when the server is configured for HTTPS (`ServerConfig.secure_cookies`)
or the request came over HTTPS. Signing out clears it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from corral.server.problems import Problem
from corral.server.routing import route
from corral.server.security import PUBLIC, SESSION_COOKIE, UI_HEADER, authenticate
from corral.server.state import state_of
from corral.server.ui.rendering import (
    CONTENT_TYPES,
    LOGIN_PATH,
    render,
    static_file,
)

router = APIRouter(include_in_schema=False, tags=["ui"])
"""JSON answers and files: its problems are the API's (problem+json), for the login script."""


class SignIn(BaseModel):
    """The key a person pasted on the login page."""

    model_config = ConfigDict(extra="forbid", strict=True)

    token: str = Field(min_length=1, max_length=400)


class Session(BaseModel):
    """Who the session acts as."""

    tenant: str
    principal: str
    role: str


class SignedOut(BaseModel):
    signed_out: bool = True


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this server (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _secure(request: Request) -> bool:
    """Mark the cookie Secure when the server is configured for HTTPS, or was reached over it
    (directly, or through a proxy uvicorn trusts for `X-Forwarded-Proto`)."""
    return state_of(request).config.secure_cookies or request.url.scheme == "https"


def _from_ui(request: Request) -> None:
    if request.headers.get(UI_HEADER) != "1":
        raise Problem(403, "csrf", f"signing in and out needs the {UI_HEADER} header")


@route(router, "GET", LOGIN_PATH, PUBLIC, response_class=HTMLResponse, response_model=None)
async def login_page(
    request: Request,
    next_path: Annotated[str | None, Query(alias="next", max_length=2000)] = None,
) -> HTMLResponse:
    return render(request, "login.html", caller=None, next_path=safe_next(next_path))


@route(router, "POST", LOGIN_PATH, PUBLIC, response_model=Session)
async def sign_in(body: SignIn, request: Request, response: Response) -> Session:
    """Check the key and keep it in the session cookie."""
    _from_ui(request)
    token = body.token.strip()
    try:
        caller = await authenticate(request, token)
    except Problem as refused:
        if refused.status != 401:
            raise
        raise Problem(
            401,
            "unauthorized",
            "that key is not valid: check it was pasted whole (crl_…), and that it is not "
            "revoked or expired",
        ) from None
    response.set_cookie(
        SESSION_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request), path="/"
    )
    return Session(tenant=caller.tenant, principal=caller.principal, role=caller.role)


@route(router, "POST", "/logout", PUBLIC, response_model=SignedOut)
async def sign_out(request: Request, response: Response) -> SignedOut:
    _from_ui(request)
    response.delete_cookie(
        SESSION_COOKIE, httponly=True, samesite="strict", secure=_secure(request), path="/"
    )
    return SignedOut()


@route(router, "GET", "/ui/static/{name}", PUBLIC, response_class=Response, response_model=None)
async def static(
    name: Annotated[str, Path(max_length=100, pattern=r"^[a-z0-9_-]+\.[a-z]+$")],
) -> Response:
    """One of the UI's own files (CSS, JS, the icon); nothing else is served."""
    content = static_file(name)
    if content is None:
        raise Problem(404, "not_found", f"no static file {name!r}")
    suffix = name[name.rindex(".") :]
    return Response(
        content,
        media_type=CONTENT_TYPES.get(suffix, "application/octet-stream"),
        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )


__all__ = ["Session", "SignIn", "router", "safe_next"]
