"""Named crash points: a no-op unless armed, then the process kills itself with SIGKILL there.

Arm one with the environment variable `CORRAL_CRASH_AT=NAME` (the first pass) or
`CORRAL_CRASH_AT=NAME:K` (the K-th pass through that point in this process). The durability
suites start worker subprocesses armed this way and check that every run still ends as the
crash-free run does.
"""

from __future__ import annotations

import os
import signal
from typing import Final, Literal

CrashPoint = Literal[
    "step.before_intent",
    "step.after_dispatch",
    "step.after_effect",
    "step.after_commit",
    "run.before_finish",
]
CRASH_POINTS: Final[tuple[CrashPoint, ...]] = (
    "step.before_intent",
    "step.after_dispatch",
    "step.after_effect",
    "step.after_commit",
    "run.before_finish",
)
ENV_VAR: Final = "CORRAL_CRASH_AT"


def _parse(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    name, _, count = spec.partition(":")
    if name not in CRASH_POINTS:
        raise ValueError(
            f"{ENV_VAR}={spec!r}: unknown crash point; known: {', '.join(CRASH_POINTS)}"
        )
    return name, int(count) if count else 1


_armed = _parse(os.environ.get(ENV_VAR))
_passes = 0


def crash_point(name: CrashPoint) -> None:
    """Kill this process here if `name` is the armed crash point and this is the armed pass."""
    global _passes
    if _armed is None or _armed[0] != name:
        return
    _passes += 1
    if _passes == _armed[1]:
        os.kill(os.getpid(), signal.SIGKILL)
