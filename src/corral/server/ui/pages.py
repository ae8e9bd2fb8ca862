"""(being built)"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

router = APIRouter(include_in_schema=False)


def mount(app: FastAPI) -> None:
    """Add the UI's pages and static files to `app`."""
    app.include_router(router)
