"""Declaring a route: its path, method and the role it needs, in one call (`route`).

```python
router = APIRouter()

@route(router, "GET", "/runs/{run_id}", "viewer", response_model=RunOut)
async def get_run(run_id: str, caller: CallerDep, request: Request) -> RunOut: ...
```

The role becomes the route's guard (`security.requires`) and its OpenAPI extension
`x-corral-role`, which the authorization matrix reads back (`security.route_role`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request

from corral.governance.identity import Role
from corral.server.problems import Problem, problem_responses
from corral.server.security import PUBLIC, Caller, requires, role_extra

F = TypeVar("F", bound=Callable[..., Any])

API_PREFIX = "/api/v1"


def route(
    router: APIRouter, method: str, path: str, role: Role | str, **options: Any
) -> Callable[[F], F]:
    """Add the decorated function to `router` as `method path`, guarded by `role` (`PUBLIC`:
    no key needed)."""

    def decorate(endpoint: F) -> F:
        guards = [] if role == PUBLIC else [Depends(requires(role))]  # type: ignore[arg-type]
        errors = (400, 422) if role == PUBLIC else (400, 401, 403, 404, 409, 413, 422)
        responses = {**problem_responses(*errors, 500, 503), **options.pop("responses", {})}
        router.add_api_route(
            path,
            endpoint,
            methods=[method],
            dependencies=guards,
            openapi_extra=role_extra(role),
            responses=responses,
            **options,
        )
        return endpoint

    return decorate


def current_caller(request: Request) -> Caller:
    """The caller the route's guard admitted."""
    caller: Caller | None = getattr(request.state, "caller", None)
    if caller is None:  # a guarded route always has one; a public one never asks
        raise Problem(401, "unauthorized", "a valid API key is required")
    return caller


CallerDep = Annotated[Caller, Depends(current_caller)]

__all__ = ["API_PREFIX", "CallerDep", "current_caller", "route"]
