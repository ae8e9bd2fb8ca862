"""Finding the user's workflows: `--app MODULE[:ATTR]`, or the demo workflows by default.

`ATTR` may name a `Corral` instance (its registered workflows are taken), a `Workflow`, an agent
or pattern (anything with `__corral_workflows__`: its workflow and every one it may start), or a
list or tuple of those. A bare `MODULE` contributes every `Workflow`, agent and pattern at its top
level, and the workflows of every `Corral` instance there. Whatever is loaded, a workflow can
always be named on the command line as `package.module:function`; the engine imports it on
demand.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from types import ModuleType
from typing import Any

from corral import Corral, UsageError, Workflow
from corral.engine import ProvidesWorkflows

DEMO_MODULE = "corral.demo.workflows"


def ensure_cwd_on_path() -> None:
    """Let `corral run mymod:flow` and `--app mymod` import from the current directory.

    The `corral` script's own folder (the virtualenv's bin) is first on sys.path, not the
    directory it is run from, unlike `python -m`.
    """
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def load_workflows(app: str | None) -> list[Workflow[Any, Any]]:
    """The workflows of `--app`; without it, those of the demo module if it is installed."""
    if app is None:
        return _demo_workflows()
    module_name, _, attr = app.partition(":")
    module = _import_app(app, module_name)
    if not attr:
        return _module_workflows(module)
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise UsageError(
                f"--app {app!r}: module {module_name!r} has no attribute {attr!r}", app=app
            )
        target = getattr(target, part)
    return _workflows_of(app, target)


def _import_app(app: str, module_name: str) -> ModuleType:
    if not module_name or module_name.endswith((".py", "/")) or "/" in module_name:
        raise UsageError(
            f"--app {app!r} is not a module name: give the dotted module name, e.g. "
            "`--app myproject.flows` or `--app flows:corral` (run from the folder that holds it)",
            app=app,
        )
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise UsageError(
                f"--app {app!r}: no module named {exc.name!r} in the current directory "
                f"({os.getcwd()}) or on sys.path",
                app=app,
            ) from None
        raise UsageError(
            f"--app {app!r}: importing {module_name!r} failed: {_describe(exc)}", app=app
        ) from None
    except Exception as exc:
        raise UsageError(
            f"--app {app!r}: importing {module_name!r} failed: {_describe(exc)}", app=app
        ) from None


def _describe(exc: BaseException) -> str:
    """`Type: message (file, line N)`: what went wrong and where, without a whole traceback."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{type(exc).__name__}: {exc.msg} ({exc.filename}, line {exc.lineno})"
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" ({last.filename}, line {last.lineno})"
    return text


def _demo_workflows() -> list[Workflow[Any, Any]]:
    try:
        module = importlib.import_module(DEMO_MODULE)
    except ModuleNotFoundError as exc:
        # Only the absence of the demo itself is expected; a broken demo is reported.
        if exc.name in ("corral.demo", DEMO_MODULE):
            return []
        raise UsageError(
            f"the demo workflows ({DEMO_MODULE}) failed to import: {_describe(exc)}"
        ) from None
    except Exception as exc:
        raise UsageError(
            f"the demo workflows ({DEMO_MODULE}) failed to import: {_describe(exc)}"
        ) from None
    return _module_workflows(module)


def _module_workflows(module: ModuleType) -> list[Workflow[Any, Any]]:
    found: dict[int, Workflow[Any, Any]] = {}
    for value in list(vars(module).values()):
        if isinstance(value, Corral):
            for wf in value.workflows:
                found.setdefault(id(wf), wf)
        else:
            for wf in _provided(value):
                found.setdefault(id(wf), wf)
    return list(found.values())


def _provided(value: Any) -> list[Workflow[Any, Any]]:
    """A workflow itself; what an agent or pattern provides (its own and its children's)."""
    if isinstance(value, Workflow):
        return [value]
    # A class has the protocol's methods too (unbound): only instances provide workflows.
    if isinstance(value, ProvidesWorkflows) and not isinstance(value, type):
        return list(value.__corral_workflows__())
    return []


def _workflows_of(app: str, target: Any) -> list[Workflow[Any, Any]]:
    if isinstance(target, Corral):
        return list(target.workflows)
    items = list(target) if isinstance(target, list | tuple) else [target]
    provided = [_provided(item) for item in items]
    if all(provided):
        found: dict[int, Workflow[Any, Any]] = {}
        for workflows in provided:
            for wf in workflows:
                found.setdefault(id(wf), wf)
        return list(found.values())
    raise UsageError(
        f"--app {app!r} is a {type(target).__name__}; expected a corral.Corral instance, a "
        "workflow, an agent or pattern, or a list of those",
        app=app,
    )
