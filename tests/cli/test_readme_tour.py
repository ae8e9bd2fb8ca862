"""The README's agent tour works as written: its `myagents.py`, and the commands after it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.cli.conftest import Invoke

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_agent_runs_as_written(cli: Invoke, tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"```python\n# myagents\.py\n(.*?)```", text, re.S)
    assert block, "README.md has no myagents.py block"
    (tmp_path / "myagents.py").write_text(block.group(1), encoding="utf-8")
    command = re.search(r"corral run (myagents:support -i '([^']*)' --follow)", text)
    assert command, "README.md has no `corral run myagents:support` command"
    done = cli("run", "myagents:support", "-i", command.group(2), "--follow").no_traceback()
    assert done.exit_code == 0, done.stderr
    assert "support → lookup_order(" in done.stderr
    run_id = done.stdout.split()[0]
    shown = cli("runs", "show", run_id, "--json").json()
    names = [step["name"] for step in shown["steps"]]
    assert names == ["model:support", "tool:lookup_order", "model:support"]
    assert "# model:support, tool:lookup_order, model:support" in text
