"""Personal data in payloads: redacted in what the CLI shows, and in storage on request."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.cli.conftest import Invoke

CONTACT = '{"name": "Ada ada@example.com, card 4111 1111 1111 1111"}'


def test_output_is_redacted_unless_switched_off(cli: Invoke) -> None:
    run_id = cli("run", "greet", "-i", CONTACT, "--wait", "--json").json()["run_id"]
    shown = cli("runs", "show", run_id, "--json").json()
    assert shown["input"]["name"] == "Ada [redacted:email], card [redacted:card]"
    raw = cli("runs", "show", run_id, "--json", env={"CORRAL_REDACT": "none"}).json()
    assert raw["input"]["name"] == "Ada ada@example.com, card 4111 1111 1111 1111"


def test_stored_payloads_of_finished_runs_are_redacted_and_audited(cli: Invoke) -> None:
    run_id = cli("run", "greet", "-i", CONTACT, "--wait", "--json").json()["run_id"]
    done = cli("runs", "redact", run_id).no_traceback()
    assert done.exit_code == 0, done.stderr
    assert "payload(s) changed" in done.stdout
    stored = cli("runs", "show", run_id, "--json", env={"CORRAL_REDACT": "none"}).json()
    assert "ada@example.com" not in str(stored)
    assert "4111" not in str(stored)
    entries = cli("audit", "list", "--json").json()["entries"]
    assert entries[0]["kind"] == "payload.redacted"
    assert cli("audit", "verify").exit_code == 0
    nothing = cli("runs", "redact").no_traceback()
    assert nothing.exit_code == 2
