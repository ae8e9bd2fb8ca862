"""Remote mode: the real CLI (in-process) against a real server (uvicorn on 127.0.0.1).

The server runs on an event loop of its own thread (tests/server/harness.py's `serving`), so
the CLI's blocking HTTP calls and the server answer at the same time; the test drives runs
through that loop (`served.call(...)`), as a worker of the server's database would.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
import pytest
from psycopg import sql

from corral.store import open_store
from corral.testing import FakeClock

if TYPE_CHECKING:
    from tests.cli.conftest import Invoke, Outcome
    from tests.server.harness import ApiServer

T = TypeVar("T")
POSTGRES_URL = os.environ.get(
    "CORRAL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@dataclass
class Served:
    """A server on its own thread's loop; `call` runs a coroutine there and waits for it."""

    api: ApiServer
    loop: asyncio.AbstractEventLoop

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def key(self, role: Any, *, tenant: str = "default", principal: str | None = None) -> str:
        return self.call(self.api.key(role, tenant=tenant, principal=principal))


def serve_in_thread(database_url: str) -> Iterator[Served]:
    """Serve the API tests' workflows on `database_url` until the generator is closed. (The
    `cli` fixture has put the repository root on the import path for `tests.server`.)"""
    from tests.server.harness import serving
    from tests.server.workflows import WORKFLOWS

    ready: list[Served] = []
    started = threading.Event()
    failed: list[BaseException] = []
    stop: list[asyncio.Event] = []

    async def main() -> None:
        store = open_store(database_url)
        await store.open()
        try:
            async with serving(store, FakeClock(), workflows=WORKFLOWS) as api:
                stop.append(asyncio.Event())
                ready.append(Served(api, asyncio.get_running_loop()))
                started.set()
                await stop[0].wait()
        finally:
            await store.close()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as error:
            failed.append(error)
            started.set()

    thread = threading.Thread(target=run, name="corral test server", daemon=True)
    thread.start()
    assert started.wait(60)
    assert not failed, failed
    served = ready[0]
    try:
        yield served
    finally:
        served.loop.call_soon_threadsafe(stop[0].set)
        thread.join(60)


@pytest.fixture
def served(tmp_path: Path, cli: Invoke) -> Iterator[Served]:
    yield from serve_in_thread(f"sqlite:///{tmp_path / 'server.db'}")


@pytest.fixture
def remote(cli: Invoke, served: Served) -> Any:
    """`remote(role, *args)`: the CLI with --server and a fresh key of `role` (default tenant)."""

    def invoke(role: str, *args: str, principal: str | None = None, **env: str) -> Outcome:
        key = served.key(role, principal=principal)
        environment = {"CORRAL_SERVER": served.api.base_url, "CORRAL_API_KEY": key, **env}
        return cli(*args, env=environment).no_traceback()

    return invoke


def test_runs_end_to_end(remote: Any, served: Served) -> None:
    started = remote("operator", "run", "greet", "--input", '"Ada"')
    assert started.exit_code == 0, started.stderr
    run_id = started.stdout.strip()
    assert f"started run {run_id} of greet@" in started.stderr
    served.call(served.api.corral().run_until_idle())

    listed = remote("viewer", "runs", "list")
    assert listed.exit_code == 0
    assert run_id in listed.stdout
    assert "succeeded" in listed.stdout
    as_json = remote("viewer", "runs", "list", "--status", "succeeded", "--json").json()
    assert [run["run_id"] for run in as_json["runs"]] == [run_id]
    assert as_json["runs"][0]["result"] == "hello Ada"

    shown = remote("viewer", "runs", "show", run_id)
    assert shown.exit_code == 0, shown.stderr
    assert "succeeded" in shown.stdout
    assert "hello Ada" in shown.stdout
    steps = remote("viewer", "runs", "show", run_id, "--json").json()
    assert steps["run_id"] == run_id
    assert steps["status"] == "succeeded"

    # The same idempotency key returns the first run; --wait sees it finished.
    first = remote("operator", "run", "greet", "-i", '"Bo"', "--idempotency-key", "k-1")
    served.call(served.api.corral().run_until_idle())
    again = remote("operator", "run", "greet", "-i", '"Bo"', "--idempotency-key", "k-1", "--wait")
    assert again.exit_code == 0, again.stderr
    assert again.stdout.splitlines()[0] == first.stdout.strip()
    assert "nothing new was started" in again.stderr
    assert 'result: "hello Bo"' in again.stdout

    # A run nobody executes: --wait gives up at --timeout with exit 4, as locally.
    pending = remote("operator", "run", "greet", "-i", '"Cy"', "--timeout", "0")
    assert pending.exit_code == 4, pending.stderr
    assert "status: pending" in pending.stdout

    # A run waiting for a signal: signalled, then cancelled.
    waiting = remote("operator", "run", "wait_for_go", "-i", '"o-1"').stdout.strip()
    served.call(served.api.corral().run_until_idle())
    signalled = remote("operator", "signal", waiting, "go", "--data", '{"ok": true}')
    assert signalled.exit_code == 0, signalled.stderr
    assert f"sent signal 'go' to run {waiting}" in signalled.stdout
    other = remote("operator", "run", "wait_for_go", "-i", '"o-2"').stdout.strip()
    cancelled = remote("operator", "runs", "cancel", other)
    assert (cancelled.exit_code, cancelled.stdout.strip()) == (0, f"cancelled run {other}")
    finished = remote("operator", "runs", "cancel", run_id)
    assert finished.exit_code == 2
    assert "run_finished" in finished.stderr


def test_wait_reports_a_run_parked_on_a_signal(remote: Any, served: Served) -> None:
    first = remote("operator", "run", "wait_for_go", "-i", '"o-9"', "--idempotency-key", "x")
    served.call(served.api.corral().run_until_idle())
    waited = remote(
        "operator", "run", "wait_for_go", "-i", '"o-9"', "--idempotency-key", "x", "--wait"
    )
    assert waited.exit_code == 4, waited.stderr
    assert waited.stdout.splitlines() == [first.stdout.strip(), "status: waiting"]
    assert "send it with: corral signal" in waited.stderr
    assert " go " in waited.stderr


def test_approvals_are_decided_remotely(remote: Any, served: Served) -> None:
    api = served.api
    run_id = remote("operator", "run", "wait_for_go", "-i", '"refund 7"').stdout.strip()
    served.call(api.principal("finn", roles=("approver",), groups=("finance",)))

    approval_id = served.call(api.ask_approval(run_id=run_id)).approval_id
    inbox = remote("viewer", "approvals", "list")
    assert inbox.exit_code == 0
    assert approval_id in inbox.stdout
    assert " refund " in inbox.stdout  # the tool, beside its agent "refunds"
    shown = remote("viewer", "approvals", "show", approval_id)
    assert '"order": "A-1"' in shown.stdout
    assert "pending" in shown.stdout

    viewer = remote("viewer", "approvals", "approve", approval_id, "--reason", "ok")
    assert viewer.exit_code == 2
    assert "role is too low" in viewer.stderr
    approved = remote(
        "approver",
        "approvals",
        "approve",
        approval_id,
        "--reason",
        "verified",
        "--edit",
        '{"order": "A-1", "contact": "ops@example.com"}',
        principal="finn",
    )
    assert approved.exit_code == 0, approved.stderr
    assert approved.stdout.strip() == (
        f"approved {approval_id} with edited arguments as finn; a worker resumes the run"
    )
    decided = remote("viewer", "approvals", "show", approval_id, "--json").json()
    assert (decided["status"], decided["decided_by"]) == ("approved", "finn")
    assert decided["edited_arguments"] == {"order": "A-1", "contact": "ops@example.com"}
    again = remote("approver", "approvals", "reject", approval_id, "-r", "no", principal="finn")
    assert again.exit_code == 1
    assert "already_decided" in again.stderr
    every = remote("viewer", "approvals", "list", "--status", "all", "--json").json()
    assert [a["approval_id"] for a in every["approvals"]] == [approval_id]


POLICY_V1 = """\
name: refunds
rules:
  - name: small-refunds
    match: {tools: [issue_refund]}
    effect: allow
"""


def test_policies_apply_diff_rollback_and_test(remote: Any, tmp_path: Path, served: Served) -> None:
    (tmp_path / "refunds.yaml").write_text(POLICY_V1)
    applied = remote("admin", "policy", "apply", "refunds.yaml")
    assert applied.exit_code == 0, applied.stderr
    assert applied.stdout.startswith("applied policy refunds: version 1 is active")
    (tmp_path / "refunds.yaml").write_text(POLICY_V1.replace("effect: allow", "effect: deny"))
    assert remote("admin", "policy", "apply", "refunds.yaml", "--json").json() == {
        "policy": "refunds",
        "version": 2,
        "changed": True,
    }
    listed = remote("viewer", "policy", "list")
    assert "refunds" in listed.stdout
    assert "2" in listed.stdout
    diff = remote("viewer", "policy", "diff", "refunds", "1", "2")
    assert diff.exit_code == 0
    assert "-    effect: allow" in diff.stdout
    assert "+    effect: deny" in diff.stdout
    shown = remote("viewer", "policy", "show", "refunds", "--version", "1")
    assert shown.stdout == POLICY_V1
    assert "v1 of 2 (not active" in shown.stderr
    rolled = remote("admin", "policy", "rollback", "refunds", "1")
    assert rolled.stdout.startswith("rolled policy refunds back to version 1's text: version 3")

    (tmp_path / "cases.yaml").write_text(
        "cases:\n"
        "  - name: refunds are allowed\n"
        "    call: {agent: refunds, tool: issue_refund, args: {}}\n"
        "    expect: allow\n"
    )
    tested = remote("viewer", "policy", "test", "cases.yaml")
    assert tested.exit_code == 0, tested.stdout + tested.stderr
    assert "pass  refunds are allowed: allow" in tested.stdout

    viewer = remote("viewer", "policy", "apply", "refunds.yaml")
    assert viewer.exit_code == 2
    assert "error (forbidden)" in viewer.stderr
    assert "role is too low" in viewer.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [\n")
    assert remote("admin", "policy", "apply", "bad.yaml").exit_code == 2


def test_costs_search_and_views_of_an_agent_run(remote: Any, served: Served) -> None:
    started = remote("operator", "run", "agent:support", "-i", "Where is my order A-1")
    assert started.exit_code == 0, started.stderr
    run_id = started.stdout.strip()
    served.call(served.api.corral().run_until_idle())

    costs = remote("viewer", "costs")
    assert costs.exit_code == 0, costs.stderr
    assert "support" in costs.stdout
    assert "billing" in costs.stdout
    by_model = remote("viewer", "costs", "--by", "model", "--json").json()
    assert by_model["tenant"] is None
    assert by_model["rows"][0]["model_calls"] == 4

    found = remote("viewer", "runs", "search", "late")
    assert found.exit_code == 0
    assert run_id in found.stdout
    trace = remote("viewer", "runs", "trace", run_id)
    assert "invoke_agent support" in trace.stdout
    assert "execute_tool lookup_order" in trace.stdout
    assert "9 spans" in trace.stdout
    summary = remote("viewer", "runs", "summary", run_id)
    assert summary.exit_code == 0
    assert "support" in summary.stdout
    cost = remote("viewer", "runs", "cost", run_id)
    assert cost.stdout.startswith(f"run {run_id}: $")
    assert "4 model calls" in cost.stdout
    diff = remote("viewer", "runs", "diff", run_id, "1", "--json").json()
    assert diff["seq"] == 1
    same = remote("viewer", "runs", "compare", run_id, run_id).json()
    assert same["identical"] is True


def test_governance_keys_webhooks_and_the_rest(remote: Any, served: Served) -> None:
    workflows = remote("viewer", "workflows")
    assert "greet" in workflows.stdout
    assert "agent:support" in workflows.stdout
    paused = remote("operator", "pause", "agent", "support", "--reason", "incident 12")
    assert paused.stdout.startswith("paused agent:support in the key's tenant")
    assert "agent:support: paused by" in remote("viewer", "pause", "list").stdout
    assert remote("operator", "resume", "agent", "support").stdout.startswith("resumed agent")
    not_paused = remote("operator", "resume", "agent", "support")
    assert not_paused.exit_code == 0
    assert "was not paused" in not_paused.stderr
    assert remote("viewer", "breakers", "--json").json() == {"breakers": [], "stale_hidden": 0}
    verified = remote("admin", "audit", "verify", "--json").json()
    assert verified["ok"] is True
    assert verified["entries_checked"] > 0
    metrics = remote("admin", "metrics")
    assert metrics.exit_code == 0
    assert "# TYPE" in metrics.stdout

    made = remote("admin", "keys", "create", "--role", "viewer", "--name", "grafana", "--json")
    key = made.json()
    assert key["role"] == "viewer"
    assert key["token"].startswith("crl_")
    assert "grafana" in remote("admin", "keys", "list").stdout
    assert remote("admin", "keys", "revoke", key["key_id"]).stdout == (
        f"revoked key {key['key_id']}\n"
    )
    for command in (("keys", "list"), ("webhooks", "list"), ("runs", "search", "late")):
        tenant = remote("admin", *command, "--tenant", "acme")
        assert tenant.exit_code == 2, command
        assert "--tenant cannot be used with --server" in tenant.stderr

    hook = remote(
        "admin", "webhooks", "add", "https://hooks.example.com/x", "-e", "run.failed", "--json"
    ).json()
    assert hook["secret"]
    assert hook["events"] == ["run.failed"]
    assert hook["webhook_id"] in remote("admin", "webhooks", "list").stdout
    assert remote("admin", "webhooks", "test", hook["webhook_id"]).stdout.startswith("queued ")
    deliveries = remote("admin", "webhooks", "deliveries", hook["webhook_id"], "--json").json()
    assert len(deliveries["deliveries"]) == 1
    paused = remote("admin", "webhooks", "pause", hook["webhook_id"])
    assert paused.stdout == f"paused webhook {hook['webhook_id']}\n"
    [listed] = remote("admin", "webhooks", "list", "--json").json()["webhooks"]
    assert listed["active"] is False
    remote("admin", "webhooks", "resume", hook["webhook_id"])
    [listed] = remote("admin", "webhooks", "list", "--json").json()["webhooks"]
    assert listed["active"] is True
    removed = remote("admin", "webhooks", "remove", hook["webhook_id"])
    assert removed.stdout == f"removed webhook {hook['webhook_id']}\n"


def test_errors_name_the_key_the_server_and_the_command(
    cli: Invoke, remote: Any, served: Served
) -> None:
    server = {"CORRAL_SERVER": served.api.base_url}
    secret = "crl_nokey12345_" + "s" * 40
    refused = cli("runs", "list", env={**server, "CORRAL_API_KEY": secret}).no_traceback()
    assert refused.exit_code == 2
    assert "error (unauthorized)" in refused.stderr
    assert "refused the key" in refused.stderr
    assert secret not in refused.stdout + refused.stderr

    no_key = cli("runs", "list", env={**server, "CORRAL_API_KEY": None})
    assert no_key.exit_code == 2
    assert "--server needs an API key" in no_key.stderr

    with socket.socket() as probe:  # a port nobody listens on once this closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    down = cli("runs", "list", env={"CORRAL_SERVER": url, "CORRAL_API_KEY": secret})
    assert down.exit_code == 3
    assert f"cannot reach the Corral server at {url}" in down.stderr

    worker = remote("operator", "worker")
    assert worker.exit_code == 2
    assert "`corral worker` works on a database directly; it has no remote mode" in worker.stderr
    redact = remote("operator", "runs", "redact", "r-1")
    assert redact.exit_code == 2
    assert "`corral runs redact`" in redact.stderr
    as_someone = remote("operator", "--as", "ada", "runs", "list")
    assert as_someone.exit_code == 2
    assert "--as cannot be used with --server" in as_someone.stderr

    theirs = served.call(served.api.corral("acme").start("greet", "Ada")).run_id
    missing = remote("viewer", "runs", "show", theirs)
    assert missing.exit_code == 2
    assert "error (not_found)" in missing.stderr
    assert "not found" in missing.stderr.lower() or "no such run" in missing.stderr


def test_remote_mode_on_postgresql(cli: Invoke) -> None:
    schema = f"test_{uuid.uuid4().hex[:12]}"
    try:
        for served in serve_in_thread(f"{POSTGRES_URL}?schema={schema}"):
            env = {"CORRAL_SERVER": served.api.base_url, "CORRAL_API_KEY": served.key("operator")}
            run_id = cli("run", "greet", "-i", '"Pg"', env=env).stdout.strip()
            served.call(served.api.corral().run_until_idle())
            shown = cli("runs", "show", run_id, "--json", env=env).json()
            assert (shown["status"], shown["result"]) == ("succeeded", "hello Pg")
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
