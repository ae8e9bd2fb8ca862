"""How the UI's pages are rendered: the Jinja2 templates, their filters, and page errors.

Pages are routes like the API's (declared with `route(...)` and a role), on a router whose
route class (`PageRoute`) turns the API's problems into what a browser should see: a request
without a valid session is sent to the login page (303), a missing run or a bad address gets
an HTML error page with the problem's detail. A client that does not ask for HTML (no
`text/html` in `Accept`) gets the problem+json answer the API gives, so scripts and the
authorization matrix see one behaviour.

Every page is sent with a Content-Security-Policy that allows only the UI's own scripts and
styles (`static/`): templates hold no inline script or style, and values reach the scripts as
escaped `data-` attributes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Callable, Coroutine, Mapping
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from corral.observe.search import MATCH_END, MATCH_START
from corral.server.problems import Problem
from corral.server.security import Caller
from corral.store import FINISHED_STATUSES

LOGIN_PATH = "/login"
STATIC_PATH = "/ui/static"
STATIC_FILES = ("corral.css", "corral.js", "live.js", "favicon.svg")
"""The files `static/` serves (nothing else is readable through the static route)."""
CONTENT_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self';"
        " frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
"""Sent with every page: no script, style or frame from anywhere but the server itself."""

LONG_JSON_LINES = 14
"""A JSON value longer than this many lines (pretty-printed) starts collapsed."""

STATUS_LABELS = {
    "needs_reconciliation": "needs reconciliation",
    "half_open": "half open",
}


# -- static files ------------------------------------------------------------------------------


@cache
def static_file(name: str) -> bytes | None:
    """The bytes of one of `STATIC_FILES` (None for any other name)."""
    if name not in STATIC_FILES:
        return None
    return resources.files("corral.server.ui").joinpath("static", name).read_bytes()


@cache
def static_url(name: str) -> str:
    """The address of a static file, with its content's digest (so a new release is fetched)."""
    content = static_file(name)
    if content is None:
        raise KeyError(name)
    return f"{STATIC_PATH}/{name}?v={hashlib.sha256(content).hexdigest()[:10]}"


# -- filters -----------------------------------------------------------------------------------


def moment_of(value: float | dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime.fromtimestamp(value, tz=dt.UTC)


def when(value: float | dt.datetime | None) -> Markup:
    """A `<time>` element: the UTC time, readable (the script shows it in local time)."""
    moment = moment_of(value)
    if moment is None:
        return Markup('<span class="muted">—</span>')
    text = moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{iso}">{text}</time>').format(
        iso=moment.isoformat(timespec="seconds"), text=text
    )


def duration(seconds: float | None) -> str:
    """`420 ms`, `3.2 s`, `4 min 05 s`, `2 h 10 min`; an em dash when unknown."""
    if seconds is None or math.isnan(seconds):
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    return f"{seconds / 86400:.1f} days"


def money(usd: float | None, digits: int = 4) -> str:
    if usd is None:
        return "—"
    if usd == 0:
        return "$0"
    return f"${usd:,.{digits}f}"


def pretty(value: Any) -> str:
    """A JSON value as people read it: indented, keys in their order, non-ASCII kept."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)


def compact(value: Any, limit: int = 90) -> str:
    """A JSON value on one line, cut at `limit` characters."""
    text = (
        value
        if isinstance(value, str)
        else json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
    )
    return text if len(text) <= limit else text[: limit - 1] + "…"


def json_block(value: Any, *, label: str = "", open_up_to: int = LONG_JSON_LINES) -> Markup:
    """A JSON value pretty-printed in a `<pre>`; inside a closed `<details>` when it is longer
    than `open_up_to` lines."""
    text = pretty(value)
    lines = text.count("\n") + 1
    kind = "text" if isinstance(value, str) else "json"
    block = Markup('<pre class="{kind}">{text}</pre>').format(kind=kind, text=text)
    if lines <= open_up_to:
        if label:
            return Markup(
                '<div class="field"><span class="label">{label}</span>{block}</div>'
            ).format(label=label, block=block)
        return block
    summary = f"{label}: " if label else ""
    return Markup(
        '<details class="json"><summary>{summary}{first} <span class="lines">({lines} lines)'
        "</span></summary>{block}</details>"
    ).format(summary=summary, first=compact(value, 60), lines=lines, block=block)


def snippet(text: str) -> Markup:
    """A search snippet, escaped, with its matched words marked."""
    escaped = str(escape(text))
    return Markup(escaped.replace(MATCH_START, "<mark>").replace(MATCH_END, "</mark>"))


def status_label(status: str) -> str:
    return STATUS_LABELS.get(status, status.replace("_", " "))


def badge(status: str) -> Markup:
    """A status in its colour (succeeded green, failed red, waiting amber, running blue…)."""
    return Markup('<span class="badge status-{cls}" data-status="{status}">{label}</span>').format(
        cls=status.replace("_", "-"), status=status, label=status_label(status)
    )


def short_id(identifier: str | None) -> str:
    return "" if identifier is None else identifier[:8]


def query(base: str, **params: Any) -> str:
    """`base?k=v&…` with the params that have a value."""
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return f"{base}?{urlencode(kept)}" if kept else base


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("corral.server.ui", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=when,
        duration=duration,
        money=money,
        pretty=pretty,
        compact=compact,
        json_block=json_block,
        snippet=snippet,
        badge=badge,
        status_label=status_label,
        short_id=short_id,
    )
    env.globals.update(static_url=static_url, query=query, finished=FINISHED_STATUSES)
    return env


templates = _environment()


def render(
    request: Request,
    template: str,
    *,
    status_code: int = 200,
    caller: Caller | None = None,
    **context: Any,
) -> HTMLResponse:
    """Render `template` with the page's context: who is signed in, and the current path."""
    viewer = caller if caller is not None else getattr(request.state, "caller", None)
    html = templates.get_template(template).render(
        viewer=viewer,
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


# -- errors ------------------------------------------------------------------------------------


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def login_redirect(request: Request) -> RedirectResponse:
    """To the login page, coming back here afterwards."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{LOGIN_PATH}?next={quote(here, safe='')}", status_code=303)


def error_page(request: Request, status_code: int, title: str, detail: str) -> HTMLResponse:
    return render(
        request, "error.html", status_code=status_code, title=title, detail=detail, code=status_code
    )


_TITLES = {
    400: "That request cannot be answered",
    403: "Your key may not see this",
    404: "Not found",
    409: "Conflict",
    422: "That address is not valid",
}


class PageRoute(APIRoute):
    """A page: problems become a redirect to the login page (401) or an HTML error page, for
    browsers; other clients get the API's problem+json."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except Problem as problem:
                if not wants_html(request):
                    raise
                if problem.status == 401:
                    return login_redirect(request)
                title = _TITLES.get(problem.status, "Something went wrong")
                return error_page(request, problem.status, title, problem.detail)
            except RequestValidationError as invalid:
                if not wants_html(request):
                    raise
                where = "; ".join(_where(error) for error in invalid.errors()[:5])
                return error_page(request, 422, _TITLES[422], where or "invalid parameters")

        return page


def _where(error: Mapping[str, Any]) -> str:
    location = ".".join(str(part) for part in error.get("loc", ()) if part != "query")
    return f"{location}: {error.get('msg', 'invalid')}"


__all__ = [
    "LOGIN_PATH",
    "SECURITY_HEADERS",
    "STATIC_FILES",
    "PageRoute",
    "error_page",
    "render",
    "static_file",
    "static_url",
    "templates",
    "wants_html",
]
