"""The engine's public API must type-check in user code: types flow from steps and workflows.

Runs mypy (strict) on a small user module, in its own process (in-process mypy has upset the
test interpreter). mypy's cache lives in pytest's cache folder, so only the first run on a machine
pays the cold start.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest

import corral

USER_CODE = """
from typing import assert_type

from pydantic import BaseModel

from corral import Corral, RunContext, RunHandle, step


class In(BaseModel):
    n: int


class Out(BaseModel):
    total: int


async def add(x: int, y: int) -> int:
    return x + y


def sync_add(x: int, y: int) -> int:
    return x + y


@step
async def double(x: int) -> int:
    return 2 * x


corral = Corral("sqlite:////tmp/never-opened.db")


@corral.workflow
async def flow(ctx: RunContext, inp: In) -> Out:
    a = await ctx.step(add, inp.n, 1, name="add")
    assert_type(a, int)
    b = await ctx.step(sync_add, a, 1)
    assert_type(b, int)
    c = await double(b)
    assert_type(c, int)
    return Out(total=a + b + c)


async def main() -> Out:
    handle = await corral.start(flow, In(n=1))
    assert_type(handle, RunHandle[Out])
    return await handle.wait_for_result()
"""


def test_the_package_is_marked_typed() -> None:
    """Without `py.typed`, mypy skips an installed `corral` and every type above is Any."""
    assert files("corral").joinpath("py.typed").is_file()


def test_user_code_type_checks_strictly(tmp_path: Path, pytestconfig: pytest.Config) -> None:
    # A stable folder: mypy's cache is keyed by file path, and reports cached errors by it too.
    cache_provider = getattr(pytestconfig, "cache", None)  # absent with -p no:cacheprovider
    work = cache_provider.mkdir("typing") if cache_provider is not None else tmp_path
    module = work / "user_workflows.py"
    module.write_text(USER_CODE, encoding="utf-8")
    # Check against the source tree, as the repository's own mypy run does.
    config = work / "mypy.ini"
    config.write_text(f"[mypy]\nmypy_path = {Path(corral.__file__).parents[1]}\n", "utf-8")
    cache = work / "mypy-cache"
    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--config-file",
            str(config),
            "--cache-dir",
            str(cache),
            str(module),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert checked.returncode == 0, f"mypy --strict on user code:\n{checked.stdout}{checked.stderr}"
