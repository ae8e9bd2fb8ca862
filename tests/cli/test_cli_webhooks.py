"""`corral webhooks`: add (the secret printed once), list, test, deliveries, pause and resume,
remove; bad event types and URLs are usage errors."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from corral.cli.session import Settings
from corral.cli.webhooks import register


def webhooks_cli(db_url: str) -> typer.Typer:
    """The `webhooks` commands under a root that sets what `corral`'s root options set."""
    app = typer.Typer()

    @app.callback()
    def root(ctx: typer.Context, tenant: str = typer.Option("default", "--tenant")) -> None:
        ctx.obj = Settings(database_url=db_url, app=None, tenant=tenant, principal="ada")

    register(app)
    return app


def test_add_list_test_deliveries_and_remove(db_url: str) -> None:
    app, runner = webhooks_cli(db_url), CliRunner()
    added = runner.invoke(
        app,
        ["webhooks", "add", "https://chat.example.com/hook", "-e", "approval.requested",
         "--event", "run.failed", "--description", "#ops"],
    )  # fmt: skip
    assert added.exit_code == 0, added.stderr
    secret = added.stdout.strip()
    assert secret.startswith("whsec_")
    assert "shown this once" in added.stderr

    listed = runner.invoke(app, ["webhooks", "list", "--json"])
    [webhook] = json.loads(listed.stdout)["webhooks"]
    assert webhook["url"] == "https://chat.example.com/hook"
    assert webhook["events"] == ["approval.requested", "run.failed"]
    assert secret not in listed.stdout
    table = runner.invoke(app, ["webhooks", "list"])
    assert webhook["webhook_id"] in table.stdout
    assert "#ops" in table.stdout
    webhook_id = webhook["webhook_id"]

    tested = runner.invoke(app, ["webhooks", "test", webhook_id])
    assert tested.exit_code == 0
    assert "queued webhook.test:" in tested.stdout
    deliveries = runner.invoke(app, ["webhooks", "deliveries", webhook_id, "--json"])
    [delivery] = json.loads(deliveries.stdout)["deliveries"]
    assert (delivery["event_type"], delivery["status"], delivery["attempts"]) == (
        "webhook.test",
        "pending",
        0,
    )
    shown = runner.invoke(app, ["webhooks", "deliveries", webhook_id])
    assert delivery["event_id"] in shown.stdout

    def listed_webhooks() -> list[dict[str, object]]:
        webhooks: list[dict[str, object]] = json.loads(
            runner.invoke(app, ["webhooks", "list", "--json"]).stdout
        )["webhooks"]
        return webhooks

    paused = runner.invoke(app, ["webhooks", "pause", webhook_id])
    assert (paused.exit_code, paused.stdout) == (0, f"paused webhook {webhook_id}\n")
    assert listed_webhooks()[0]["active"] is False
    assert "paused" in runner.invoke(app, ["webhooks", "list"]).stdout
    not_ours = runner.invoke(app, ["--tenant", "acme", "webhooks", "resume", webhook_id])
    assert (not_ours.exit_code, "no webhook" in not_ours.stderr) == (2, True)
    resumed = runner.invoke(app, ["webhooks", "resume", webhook_id])
    assert (resumed.exit_code, resumed.stdout) == (0, f"resumed webhook {webhook_id}\n")
    assert listed_webhooks()[0]["active"] is True

    elsewhere = runner.invoke(app, ["--tenant", "acme", "webhooks", "remove", webhook_id])
    assert elsewhere.exit_code == 2
    assert "no webhook" in elsewhere.stderr
    removed = runner.invoke(app, ["webhooks", "remove", webhook_id])
    assert removed.exit_code == 0
    assert f"removed webhook {webhook_id}" in removed.stdout
    assert listed_webhooks() == []


def test_bad_event_types_and_urls_are_usage_errors(db_url: str) -> None:
    app, runner = webhooks_cli(db_url), CliRunner()
    unknown = runner.invoke(app, ["webhooks", "add", "https://x.example.com", "-e", "run.done"])
    assert unknown.exit_code == 2
    assert "unknown event type 'run.done'" in unknown.stderr
    ftp = runner.invoke(app, ["webhooks", "add", "ftp://x.example.com", "-e", "run.failed"])
    assert ftp.exit_code == 2
    assert "must start with http:// or https://" in ftp.stderr
    bad_status = runner.invoke(app, ["webhooks", "deliveries", "wh_x", "--status", "lost"])
    assert bad_status.exit_code == 2
