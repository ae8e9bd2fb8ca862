"""`corral policy apply|list|show|diff|rollback|test`, end to end (in-process, and one real
process)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.cli.conftest import Invoke

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples" / "policies"
SUPPORT_POLICY = REPO_ROOT / "src" / "corral" / "demo" / "support_policy.yaml"

V1 = """name: refunds
rules:
  - name: large
    match: {tools: [issue_refund]}
    when: args.amount_cents > 50000
    effect: require_approval
    approval: {approvers: [finance], deadline: 4h}
"""
V2 = V1.replace("50000", "20000")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_apply_list_show_diff_rollback(cli: Invoke, tmp_path: Path) -> None:
    policy = write(tmp_path / "refunds.yaml", V1)
    applied = cli("--as", "ada", "policy", "apply", str(policy)).no_traceback()
    assert applied.exit_code == 0, applied.stderr
    assert "applied policy refunds: version 1 is active" in applied.stdout
    again = cli("--as", "ada", "policy", "apply", str(policy), "--json")
    assert again.json() == {"policy": "refunds", "version": 1, "changed": False}
    write(policy, V2)
    assert cli("--as", "bo", "policy", "apply", str(policy), "--json").json()["version"] == 2

    listed = cli("policy", "list")
    assert listed.exit_code == 0
    row = next(line for line in listed.stdout.splitlines() if line.strip().startswith("refunds"))
    assert "human:bo" in row
    [entry] = cli("policy", "list", "--json").json()["policies"]
    assert (entry["policy"], entry["version"], entry["versions"]) == ("refunds", 2, 2)
    assert entry["created_by"] == "human:bo"

    shown = cli("policy", "show", "refunds", "--version", "1")
    assert shown.exit_code == 0
    assert shown.stdout == V1
    assert "v1 of 2 (not active)" in shown.stderr
    detail = cli("policy", "show", "refunds", "--json").json()
    assert (detail["version"], detail["document"], detail["created_by"]) == (2, V2, "human:bo")

    diff = cli("policy", "diff", "refunds", "1", "2")
    assert diff.exit_code == 0
    assert "--- refunds@v1" in diff.stdout
    assert "-    when: args.amount_cents > 50000" in diff.stdout
    assert "+    when: args.amount_cents > 20000" in diff.stdout

    rolled = cli("--as", "cy", "policy", "rollback", "refunds", "1")
    assert rolled.exit_code == 0, rolled.stderr
    assert "version 3 is active" in rolled.stdout
    restored = cli("policy", "show", "refunds", "--json").json()
    assert (restored["version"], restored["restored_from"], restored["document"]) == (3, 1, V1)
    assert restored["created_by"] == "human:cy"
    assert cli("policy", "diff", "refunds", "1", "3").stderr.strip().endswith("are the same")


def test_a_bad_policy_is_refused_with_file_and_line_and_the_active_one_stays(
    cli: Invoke, tmp_path: Path
) -> None:
    good = write(tmp_path / "refunds.yaml", V1)
    assert cli("policy", "apply", str(good)).exit_code == 0
    cases = {
        "syntax.yaml": (V1.replace("[finance]", "[finance"), "line 7", "YAML syntax error"),
        "unknown.yaml": (V1 + "    reasn: typo\n", "line 8", "unknown field 'reasn'"),
        "cel.yaml": (V1.replace("> 50000", "> > 5"), "line 5", "invalid CEL"),
        "effect.yaml": (V1.replace("require_approval", "maybe"), "line 6", "Input should be"),
    }
    for name, (text, line, reason) in cases.items():
        bad = write(tmp_path / name, text)
        refused = cli("policy", "apply", str(bad)).no_traceback()
        assert refused.exit_code == 2, (name, refused.stdout)
        assert f"error (policy_invalid): {bad}, {line}: " in refused.stderr, refused.stderr
        assert reason in refused.stderr
    active = cli("policy", "show", "refunds", "--json").json()
    assert (active["version"], active["document"]) == (1, V1)
    missing = cli("policy", "apply", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == 2
    assert "no such file" in missing.stderr


def test_unknown_policies_and_versions_exit_2_naming_what_exists(
    cli: Invoke, tmp_path: Path
) -> None:
    unknown = cli("policy", "show", "refunds")
    assert unknown.exit_code == 2
    assert "no policy 'refunds'" in unknown.stderr
    cli("policy", "apply", str(write(tmp_path / "r.yaml", V1)))
    assert "its policies: refunds" in cli("policy", "show", "refund").stderr
    version = cli("policy", "rollback", "refunds", "4")
    assert version.exit_code == 2
    assert "has no version 4; its versions are 1 to 1" in version.stderr
    assert cli("policy", "diff", "refunds", "1", "2").exit_code == 2
    assert cli("policy", "list", "--json").json()["policies"][0]["version"] == 1


def test_policy_test_runs_the_example_cases(cli: Invoke) -> None:
    ran = cli("policy", "test", str(EXAMPLES / "support_tests.yaml")).no_traceback()
    assert ran.exit_code == 0, ran.stdout + ran.stderr
    assert "FAIL" not in ran.stdout
    assert ran.stdout.strip().endswith("8 passed, 0 failed")
    assert "pass  a large refund waits for finance: require_approval" in ran.stdout


def test_policy_test_reports_failures_and_exits_1(cli: Invoke, tmp_path: Path) -> None:
    shutil.copy(SUPPORT_POLICY, tmp_path / "support.yaml")
    cases = write(
        tmp_path / "cases.yaml",
        "policies: [support.yaml]\ncases:\n"
        "  - name: wrong on purpose\n"
        "    call: {agent: refunds, tool: issue_refund, args: {amount_cents: 60000}}\n"
        "    expect: {effect: require_approval, rule: huge-refunds-are-not-for-agents}\n"
        "  - name: right\n"
        "    call: {agent: order_lookup, tool: lookup_order}\n"
        "    expect: allow\n",
    )
    ran = cli("policy", "test", str(cases))
    assert ran.exit_code == 1
    assert "FAIL  wrong on purpose: got rule large-refunds-need-approval" in ran.stdout
    assert "pass  right: allow" in ran.stdout
    assert "1 passed, 1 failed" in ran.stdout
    report = cli("policy", "test", str(cases), "--json")
    assert report.exit_code == 1
    assert [c["passed"] for c in report.json()["cases"]] == [False, True]


def test_policy_test_against_the_active_policies(cli: Invoke, tmp_path: Path) -> None:
    cases = write(
        tmp_path / "cases.yaml",
        "cases:\n  - name: large refund\n"
        "    call: {tool: issue_refund, args: {amount_cents: 60000}, now: 2026-01-01T09:00:00Z}\n"
        "    expect: require_approval\n",
    )
    before = cli("policy", "test", str(cases))
    assert before.exit_code == 1  # no policies yet: allowed
    cli("policy", "apply", str(write(tmp_path / "r.yaml", V1)))
    assert cli("policy", "test", str(cases)).exit_code == 0


def test_policy_test_bad_input_exits_2_with_file_and_line(cli: Invoke, tmp_path: Path) -> None:
    bad_case = write(
        tmp_path / "cases.yaml",
        "policies: []\ncases:\n  - name: x\n    call: {tool: t}\n    expect: maybe\n",
    )
    ran = cli("policy", "test", str(bad_case)).no_traceback()
    assert ran.exit_code == 2
    assert f"{bad_case}, line 5: cases[0].expect.effect" in ran.stderr
    missing_policy = write(
        tmp_path / "cases2.yaml",
        "policies: [nope.yaml]\ncases:\n  - {name: x, call: {tool: t}, expect: allow}\n",
    )
    ran = cli("policy", "test", str(missing_policy))
    assert ran.exit_code == 2
    assert "nope.yaml: no such file" in ran.stderr
    bad_policy = write(tmp_path / "bad.yaml", "name: b\nrules:\n  - name: r\n    efect: deny\n")
    cases3 = write(
        tmp_path / "cases3.yaml",
        "policies: [bad.yaml]\ncases:\n  - {name: x, call: {tool: t}, expect: allow}\n",
    )
    ran = cli("policy", "test", str(cases3))
    assert ran.exit_code == 2
    assert f"{bad_policy}, line 3" in ran.stderr


def test_help_has_examples(cli: Invoke) -> None:
    shown = cli("policy", "--help")
    assert shown.exit_code == 0
    assert "corral policy test examples/policies/support_tests.yaml" in shown.stdout
    for command in ("apply", "list", "show", "diff", "rollback", "test"):
        assert cli("policy", command, "--help").exit_code == 0


def test_apply_in_a_real_process(corral_exe: Invoke, tmp_path: Path) -> None:
    applied = corral_exe("--as", "ada", "policy", "apply", str(SUPPORT_POLICY))
    assert applied.exit_code == 0, applied.stderr
    listed = corral_exe("policy", "list", "--json")
    assert listed.json()["policies"][0]["created_by"] == "human:ada"
