"""`corral dev` and `corral keys` as people use them: real processes, real HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CORRAL = [sys.executable, "-m", "corral.cli"]

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _environment(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CORRAL_DATABASE_URL": f"sqlite:///{tmp_path / 'corral.db'}",
        "CORRAL_APP": "tests.server.workflows",
        "CORRAL_PRINCIPAL": "ada",
        "PYTHONPATH": str(REPO_ROOT),
    }


def test_corral_dev_serves_the_api_and_runs_what_it_starts(tmp_path: Path) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [*CORRAL, "dev", "--port", str(port)],
        env=_environment(tmp_path),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
        assert lines[0].startswith(f"Corral is running at http://127.0.0.1:{port}"), lines
        assert "'ada'" in lines[1]
        token = lines[2].strip()
        assert token.startswith("crl_")
        base = f"http://127.0.0.1:{port}/api/v1"
        headers = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx2.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "corral dev did not start serving"
            time.sleep(0.1)
        started = httpx2.post(
            f"{base}/runs", json={"workflow": "greet", "input": "Ada"}, headers=headers
        )
        assert started.status_code == 201, started.text
        run_id = started.json()["run_id"]
        while True:  # the worker inside `corral dev` runs it
            run = httpx2.get(f"{base}/runs/{run_id}", headers=headers).json()
            if run["status"] == "succeeded":
                break
            assert time.monotonic() < deadline + 30, run
            time.sleep(0.1)
        assert run["result"] == "hello Ada"
        assert run["started_by"] == "ada"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail("corral dev did not stop on SIGTERM")
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_keys_are_shown_once_listed_without_secrets_and_revoked(tmp_path: Path) -> None:
    env = _environment(tmp_path)

    def corral(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CORRAL, *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True
        )

    made = corral("keys", "create", "--tenant", "acme", "--role", "approver", "--name", "finn")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("crl_")
    assert "shown this once" in made.stderr
    listed = corral("keys", "list", "--tenant", "acme", "--json")
    [key] = json.loads(listed.stdout)["keys"]
    assert (key["role"], key["name"], key["revoked_at"]) == ("approver", "finn", None)
    assert token not in listed.stdout
    assert token.split("_")[2] not in listed.stdout  # the secret is never stored or shown
    assert json.loads(corral("keys", "list", "--json").stdout) == {"keys": []}  # another tenant
    bad_role = corral("keys", "create", "--role", "root")
    assert bad_role.returncode == 2
    assert "unknown role 'root'" in bad_role.stderr
    revoked = corral("keys", "revoke", key["key_id"], "--tenant", "acme")
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(corral("keys", "list", "--tenant", "acme", "--json").stdout)["keys"][0][
        "revoked_at"
    ]
    assert corral("keys", "revoke", "nosuchkey123").returncode == 2
