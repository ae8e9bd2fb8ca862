"""`--app MODULE[:ATTR]` and the default demo workflows."""

from __future__ import annotations

import importlib.abc
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from corral import RunContext, UsageError, workflow
from corral.agents import Agent
from corral.control.app_loading import DEMO_MODULE, load_workflows
from corral.models import ScriptedModel

if TYPE_CHECKING:
    from tests.cli.conftest import Invoke


def names(cli: Invoke, app: str) -> list[str]:
    listed = cli("workflows", "--json", env={"CORRAL_APP": app})
    assert listed.exit_code == 0, listed.stderr
    return [wf["name"] for wf in listed.json()["workflows"]]


def test_a_module_contributes_every_top_level_workflow(cli: Invoke) -> None:
    assert names(cli, "tests.cli.sample_app") == [
        "approval",
        "boom",
        "count",
        "flaky",
        "greet",
        "nap",
        "parent",
        "reserve",
        "wire",
    ]


def test_attr_may_be_a_corral_instance_a_workflow_or_a_list(cli: Invoke) -> None:
    assert names(cli, "tests.cli.sample_app:corral") == ["greet"]
    assert names(cli, "tests.cli.sample_app:nap") == ["nap"]
    assert names(cli, "tests.cli.sample_app:pair") == ["boom", "greet"]


def test_the_option_wins_over_the_environment(cli: Invoke) -> None:
    listed = cli("--app", "tests.cli.sample_app:nap", "workflows", "--json")
    assert [wf["name"] for wf in listed.json()["workflows"]] == ["nap"]


def test_workflows_table(cli: Invoke) -> None:
    table = cli("workflows").stdout
    row = next(line for line in table.splitlines() if "greet" in line)
    assert row.split() == ["greet", "1", "GreetIn", "GreetOut"]


def test_a_missing_module_is_a_usage_error(cli: Invoke, tmp_path: Path) -> None:
    bad = cli("workflows", env={"CORRAL_APP": "no_such_app_module"}).no_traceback()
    assert bad.exit_code == 2
    assert "no module named 'no_such_app_module'" in bad.stderr
    assert str(tmp_path) in bad.stderr  # where it looked


def test_a_missing_attribute_is_a_usage_error(cli: Invoke) -> None:
    bad = cli("workflows", env={"CORRAL_APP": "tests.cli.sample_app:nothing"}).no_traceback()
    assert bad.exit_code == 2
    assert "has no attribute 'nothing'" in bad.stderr


def test_an_attribute_of_the_wrong_kind_is_a_usage_error(cli: Invoke) -> None:
    bad = cli("workflows", env={"CORRAL_APP": "tests.cli.sample_app:GreetIn"}).no_traceback()
    assert bad.exit_code == 2
    assert (
        "expected a corral.Corral instance, a workflow, an agent or pattern, or a list of those"
        in bad.stderr
    )


def test_a_file_path_is_refused_with_the_right_form(cli: Invoke) -> None:
    bad = cli("workflows", env={"CORRAL_APP": "flows.py"}).no_traceback()
    assert bad.exit_code == 2
    assert "not a module name" in bad.stderr


def test_a_module_that_fails_to_import_says_what_and_where(cli: Invoke, tmp_path: Path) -> None:
    (tmp_path / "broken_flows_cli_test.py").write_text("x = 1\ndef oops(:\n", encoding="utf-8")
    bad = cli("workflows", env={"CORRAL_APP": "broken_flows_cli_test"}).no_traceback()
    assert bad.exit_code == 2
    assert "SyntaxError" in bad.stderr
    assert "broken_flows_cli_test.py, line 2" in bad.stderr

    (tmp_path / "raising_flows_cli_test.py").write_text(
        "import json\n\nraise RuntimeError('no config')\n", encoding="utf-8"
    )
    bad = cli("workflows", env={"CORRAL_APP": "raising_flows_cli_test"}).no_traceback()
    assert bad.exit_code == 2
    assert "RuntimeError: no config" in bad.stderr
    assert "raising_flows_cli_test.py, line 3" in bad.stderr


def test_a_missing_dependency_of_the_app_is_named(cli: Invoke, tmp_path: Path) -> None:
    (tmp_path / "needs_dep_cli_test.py").write_text(
        "import no_such_dependency_xyz\n", encoding="utf-8"
    )
    bad = cli("workflows", env={"CORRAL_APP": "needs_dep_cli_test"}).no_traceback()
    assert bad.exit_code == 2
    assert "importing 'needs_dep_cli_test' failed" in bad.stderr
    assert "no_such_dependency_xyz" in bad.stderr


def test_without_app_and_without_the_demo_no_workflows_are_loaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, DEMO_MODULE, None)  # makes the import fail as if absent
    assert load_workflows(None) == []


async def _demo_flow(ctx: RunContext, n: int) -> int:
    return n


def test_without_app_the_demo_workflows_are_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    demo = types.ModuleType(DEMO_MODULE)
    demo_flow = workflow(name="demo_flow")(_demo_flow)
    demo.__dict__["demo_flow"] = demo_flow
    monkeypatch.setitem(sys.modules, DEMO_MODULE, demo)
    assert load_workflows(None) == [demo_flow]


def test_agents_at_module_level_contribute_their_workflows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    helper = Agent("helper", model=ScriptedModel(["ok"]))
    boss = Agent("boss", model=ScriptedModel(["ok"]), delegates=[helper])
    app = types.ModuleType("agents_app_cli_test")
    app.__dict__.update({"boss": boss, "Agent": Agent})  # the class itself is skipped
    monkeypatch.setitem(sys.modules, "agents_app_cli_test", app)
    assert sorted(wf.name for wf in load_workflows("agents_app_cli_test")) == [
        "agent:boss",
        "agent:helper",
    ]
    assert sorted(wf.name for wf in load_workflows("agents_app_cli_test:boss")) == [
        "agent:boss",
        "agent:helper",
    ]


def test_the_default_app_holds_the_support_fleet() -> None:
    names = {wf.name for wf in load_workflows(None)}
    assert {"handle_ticket", "router:triage", "pipeline:reply", "agent:refunds"} <= names
    assert {"fulfil_order", "ship_item"} <= names


class _BrokenDemoFinder(importlib.abc.MetaPathFinder):
    """Makes the demo module fail to import the way one with a missing dependency does."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname == DEMO_MODULE:
            raise ModuleNotFoundError("No module named 'demo_dependency'", name="demo_dependency")


def test_a_broken_demo_is_reported_not_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, DEMO_MODULE, raising=False)
    monkeypatch.setattr(sys, "meta_path", [_BrokenDemoFinder(), *sys.meta_path])
    with pytest.raises(UsageError, match=r"demo workflows .*demo_dependency"):
        load_workflows(None)
