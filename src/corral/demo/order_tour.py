"""The order tour (`corral demo --order`): one run survives `kill -9` of its worker, then is
resumed and inspected. No model is involved: the workflow is plain Python with durable steps.

Every step is a real `corral` command in a real process, printed as you would type it, against
the demo's database (./.corral/corral.db unless another is given), so you can carry on with the
same commands afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

from rich.console import Console
from rich.panel import Panel

from corral.demo import payments
from corral.store import DEFAULT_DATABASE_URL

console = Console(highlight=False)
LEASE_TTL = 2.0
_database_url = DEFAULT_DATABASE_URL


def corral(*args: str, crash_at: str | None = None, quiet: bool = False) -> tuple[int, str]:
    """Run `corral ARGS` in a new process; print the command and its output."""
    console.print(f"[bold cyan]$ corral {' '.join(_quote(a) for a in args)}[/]")
    env = dict(os.environ)
    env.pop("CORRAL_CRASH_AT", None)
    env.pop("CORRAL_APP", None)
    env["CORRAL_DATABASE_URL"] = _database_url
    if crash_at:
        env["CORRAL_CRASH_AT"] = crash_at
    done = subprocess.run(
        [sys.executable, "-m", "corral.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if not quiet:
        for stream in (done.stdout, done.stderr):
            if stream.strip():
                console.print(stream.rstrip(), markup=False)
    return done.returncode, done.stdout


def _quote(arg: str) -> str:
    return f"'{arg}'" if any(c in arg for c in ' {}"') else arg


def say(text: str) -> None:
    console.print()
    console.print(f"[bold]{text}[/]")


def main(database_url: str = DEFAULT_DATABASE_URL) -> int:
    """Run the order tour on `database_url`; 0 when the run survived and finished."""
    global _database_url
    _database_url = database_url
    order = {
        "order_id": f"ord-{uuid.uuid4().hex[:6]}",
        "customer": "ada@example.com",
        "items": ["kettle", "teapot", "mugs"],
        "amount_cents": 4599,
    }
    console.print(
        Panel.fit(
            f"Corral demo: a durable run on {database_url}.\n"
            "No model or API key is involved: the workflow is plain Python with durable steps.",
            title="corral",
        )
    )

    say("1. Start a run of the sample workflow `fulfil_order`.")
    code, out = corral("run", "fulfil_order", "--input", json.dumps(order))
    if code != 0:
        return code
    run_id = out.strip().splitlines()[-1]

    say(
        "2. A worker executes it and is killed with SIGKILL inside the charge step: after the "
        "card was charged, before the result reached the journal (crash point "
        "step.after_effect, armed by CORRAL_CRASH_AT)."
    )
    code, _ = corral(
        "worker",
        "--until-idle",
        "--lease-ttl",
        str(LEASE_TTL),
        crash_at="step.after_effect:2",
        quiet=True,
    )
    killed = code == -signal.SIGKILL
    console.print(f"[red]worker process ended by {'SIGKILL' if killed else f'exit code {code}'}[/]")
    corral("runs", "show", run_id)

    say(
        f"3. The dead worker's lease runs out ({LEASE_TTL:g} s). A new worker claims the run "
        "and resumes it by replay: step 1 returns its journaled result without running; the "
        "charge runs again with the same idempotency key, so the provider charges once."
    )
    time.sleep(LEASE_TTL + 0.2)
    corral("worker", "--until-idle", "--lease-ttl", str(LEASE_TTL))
    corral("runs", "show", run_id)
    for key, count in payments.attempts(run_id):
        console.print(
            f"payment provider: key {key} — {count} request(s), [green]1 charge[/] applied"
        )

    say(
        "4. The run is parked, waiting for the signal `delivery_confirmed`: it holds no worker "
        "and no memory. Send the signal; a worker wakes the run and finishes it."
    )
    corral("signal", run_id, "delivery_confirmed", "--data", '{"by": "courier"}')
    corral("worker", "--until-idle")
    code, _ = corral("runs", "show", run_id)

    say("Try next:")
    for line in (
        "corral runs list",
        f"corral runs show {run_id} --json",
        "corral run fulfil_order --input '{...}' --wait",
        "corral --help",
    ):
        console.print(f"  [cyan]{line}[/]")
    return 0 if killed and code == 0 else 1
