"""The web UI in a real browser (Playwright driving Debian's Chromium): finn signs in, finds the
demo's $1,249 refund waiting for finance on the dashboard, opens it in the approvals inbox,
approves it with a reason, and watches the run complete on its page while a worker resumes it
(the page updates itself over the event stream: it is never reloaded). A second run is followed
with the event stream blocked, so the page falls back to polling. Screenshots of the dashboard,
the approvals inbox and the run page are saved to `test-artifacts/ui/`, at 1440 and 390 pixels
wide (the 390 px pages must not scroll sideways).

Playwright's sync API cannot run inside the test's event loop, so the async one is used: the
server, the browser and the worker (`Corral.run_until_idle`) share the loop.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    Route,
    ViewportSize,
    async_playwright,
    expect,
)

from corral.demo.fleet import handle_ticket
from corral.demo.support_data import ticket
from corral.store import Store
from corral.testing import FakeClock

from .harness import ApiServer
from .ui_harness import WaitingRefund, demo_server, refund_waiting

pytestmark = pytest.mark.timeout(90)

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's Chromium, installed by the project's set-up (never a browser Playwright downloads)."""
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
WIDE: ViewportSize = {"width": 1440, "height": 900}
NARROW: ViewportSize = {"width": 390, "height": 844}
"""An iPhone-sized screen: every page must fit it without scrolling sideways."""
WAIT_MS = 15_000


@pytest.fixture
async def demo_api(
    store: Store, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ApiServer]:
    async with demo_server(store, clock, tmp_path, monkeypatch) as server:
        yield server


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser
        finally:
            await browser.close()


def watch_for_errors(page: Page) -> list[str]:
    """Script errors and Content-Security-Policy refusals the page reports."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"script error: {error}"))

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            errors.append(f"CSP: {message.text}")

    page.on("console", on_console)
    return errors


async def fits(page: Page) -> bool:
    """The page is no wider than the window (nothing to scroll sideways)."""
    width: int = await page.evaluate("document.documentElement.scrollWidth")
    return width <= page.viewport_size["width"] if page.viewport_size else True


async def snap(page: Page, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_approve_the_demo_refund_and_watch_the_run_complete(
    demo_api: ApiServer, chromium: Browser
) -> None:
    api = demo_api
    refund = await refund_waiting(api)
    finn = await api.key("approver", principal="finn")
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)

    context = await chromium.new_context(base_url=api.base_url, viewport=WIDE)
    page = await context.new_page()
    errors = watch_for_errors(page)

    # Signing in: the dashboard sends a browser without a session to the login page.
    await page.goto("/")
    await expect(page).to_have_url(f"{api.base_url}/login?next=%2F")
    await page.get_by_label("API key").fill("crl_not_a_key")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("[data-message]")).to_contain_text("that key is not valid")
    await page.get_by_label("API key").fill(finn)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(f"{api.base_url}/")

    # The dashboard: the refund waits for finance.
    await expect(page.get_by_role("heading", name="Approvals waiting")).to_be_visible()
    waiting = page.locator(f'a[href="/approvals#approval-{refund.approval_id}"]')
    await expect(waiting).to_contain_text("issue_refund")
    await expect(waiting).to_contain_text('"amount_cents": 124900')
    await snap(page, "dashboard")
    await waiting.click()

    # The inbox: the exact call, and the decision form.
    card = page.locator(f"#approval-{refund.approval_id}")
    await expect(card).to_contain_text("Refunds over $500 are checked by finance")
    await expect(card).to_contain_text("large-refunds-need-approval")
    await expect(card.locator("pre.json")).to_contain_text('"amount_cents": 124900')
    await snap(page, "approvals")
    await check_refusals(card, refund)
    await card.get_by_label("Reason").fill("receipt checked")
    await card.get_by_role("button", name="Approve").click()
    await expect(card).to_contain_text("Approved by finn: “receipt checked”")
    await expect(card.locator(".badge")).to_have_text("approved")

    # The run page, from the card's run link and the breadcrumb up to the root run.
    await card.get_by_role("link", name=refund.refund_run_id[:8]).click()
    await page.get_by_role("link", name=f"root run {refund.root_run_id[:8]}").click()
    await expect(page).to_have_url(f"{api.base_url}/runs/{refund.root_run_id}")
    status = page.locator("#run-status .badge")
    await expect(status).not_to_have_attribute("data-status", "succeeded")
    # Following the run over the event stream (not the slower polling beside it).
    await expect(page.locator("[data-live-indicator]")).to_have_text("live")
    await page.evaluate("window.notReloaded = true")

    await api.corral().run_until_idle()  # a worker resumes the approved call
    api.clock.advance(1.0)  # the event stream's next read (it polls the store every second)

    await expect(status).to_have_attribute("data-status", "succeeded", timeout=WAIT_MS)
    await expect(page.locator(".banner.succeeded")).to_contain_text("Completed.")
    await expect(page.locator("[data-live-indicator]")).to_have_text("finished")
    assert await page.evaluate("window.notReloaded") is True  # updated in place
    summary = page.locator("#summary-heading + dl")
    await expect(summary).to_contain_text("finn approved")
    step = page.locator("details.step", has_text="tool:issue_refund").last
    await step.locator(":scope > summary").click()
    await expect(step).to_contain_text("Conversation diff")
    await snap(page, "run")

    # Without the event stream (a proxy that drops it, say), the page polls the run instead.
    await page.route("**/api/v1/events", refuse)
    other = await api.corral().start(handle_ticket, ticket("T-1001"))
    await page.goto(f"/runs/{other.run_id}")
    await expect(page.locator("[data-live-indicator]")).to_have_text("live (checking every 2 s)")
    await page.evaluate("window.notReloaded = true")
    await api.corral().run_until_idle()
    await expect(status).to_have_attribute("data-status", "succeeded", timeout=WAIT_MS)
    assert await page.evaluate("window.notReloaded") is True
    await page.unroute("**/api/v1/events")

    # The same pages on a phone: nothing wider than the screen.
    await page.set_viewport_size(NARROW)
    for path, name in (
        ("/", "dashboard-390"),
        (f"/runs/{refund.root_run_id}", "run-390"),
        ("/approvals?status=approved", "approvals-390"),
    ):
        await page.goto(path)
        assert await fits(page), f"{path} is wider than 390 px"
        await snap(page, name)

    # Signing out ends the session.
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(f"{api.base_url}/login")
    await page.goto("/approvals")
    await expect(page).to_have_url(f"{api.base_url}/login?next=%2Fapprovals")
    await context.close()
    assert errors == []
    for name in ("dashboard", "approvals", "run"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 10_000, name


async def refuse(route: Route) -> None:
    await route.fulfill(status=404, content_type="application/problem+json", body="{}")


async def check_refusals(card: Locator, refund: WaitingRefund) -> None:
    """Bad decisions are refused with a reason: no reason, arguments that are not JSON (in the
    page), arguments the tool's schema refuses (by the server, whose detail is shown)."""
    message = card.locator("[data-message]")
    await card.get_by_role("button", name="Approve").click()
    await expect(message).to_have_text("Give a reason: it is recorded with your decision.")

    await card.get_by_text("Edit the arguments before approving").click()
    arguments = card.get_by_label("Arguments (JSON object, checked against the tool's schema)")
    original = await arguments.input_value()
    await arguments.fill('{"order_id": "A-1003", ')
    await expect(card.locator("[data-json-error]")).to_contain_text("not valid JSON")
    await expect(arguments).to_have_attribute("aria-invalid", "true")
    await card.get_by_label("Reason").fill("receipt checked")
    await card.get_by_role("button", name="Approve").click()
    await expect(message).to_contain_text("The arguments are not valid JSON")

    edited = json.loads(original) | {"amount_cents": "all of it"}
    await arguments.fill(json.dumps(edited, indent=2))
    await card.get_by_role("button", name="Approve").click()
    await expect(message).to_contain_text("edited arguments of 'issue_refund' are invalid")
    await expect(message).to_contain_text("amount_cents")
    await arguments.fill(original)
    await expect(arguments).not_to_have_attribute("aria-invalid", "true")
    assert refund.approval_id in (await card.get_attribute("id") or "")
