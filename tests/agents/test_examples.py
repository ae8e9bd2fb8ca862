"""Each pattern's example runs as `python examples/<file>.py`: exit 0, and the story it tells."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

EXPECTED = {
    "supervisor_workers.py": [
        "Brief: tides: 2 fact(s); moons: 1 fact(s); orbits: 1 fact(s)",
        "Supervisor: Editor's summary: the moon's pull",
    ],
    "hierarchy.py": ["the intern was out of reach (refused)", "tool:ask_intern          failed"],
    "pipeline.py": [
        "Published: 'Tides' (14 words)",
        "Refused: pipeline 'articles': the output of stage 'researcher' is not a valid input "
        "of stage 'write' (Notes): points: Field required",
        "pipeline.failed:articles   failed",
    ],
    "group_chat.py": ["ended by: until after 5 rounds"],
    "router.py": [
        "-> refunds (rule)",
        "-> tech (classifier)",
        "-> front_desk (default)",
        "route:support      succeeded",
    ],
    "handoff.py": ["answered by refunds: I've refunded", "handoff:refunds      succeeded"],
}


def test_every_example_is_checked() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str, tmp_path: Path) -> None:
    # -W error: an example that leaks a resource or warns fails here, as the tests would.
    done = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / name)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for line in EXPECTED[name]:
        assert line in done.stdout, f"{line!r} not in the output of {name}:\n{done.stdout}"
