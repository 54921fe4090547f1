"""The console in a real browser (Chromium, headless) against a real ``tether serve``: start a
run and watch it complete live, approve a held call, see the audit verified. Screenshots go to
``test-artifacts/console/``."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from peers import executable

from .process import ServerProcess, start_server, tether

POLICIES = Path(__file__).resolve().parents[1] / "governance" / "policies"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def governed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    directory = tmp_path_factory.mktemp("console")
    shutil.copytree(POLICIES, directory / "policies")
    (directory / "policies" / "console.cedar").write_text(
        '@id("alice-starts-the-stepper")\n'
        'permit (principal == User::"alice", action == Action::"start_run", '
        'resource == Agent::"stepper");\n')
    config = directory / "tether.toml"
    config.write_text('[governance]\npolicy_dir = "policies"\naudit_dir = "audit"\n')
    process = start_server(directory, config=config)
    bob = tether("keys", "issue", "bob", "--tenant", "acme", cwd=directory, config=config)
    assert bob.returncode == 0, bob.stderr
    yield process, bob.stdout.strip()
    assert process.stop() == 0, process.stderr()


def test_console_runs_approvals_and_audit(governed: tuple[ServerProcess, str]) -> None:
    from playwright.sync_api import expect, sync_playwright

    server, bob_key = governed
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable("chromium"),
                                             args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()

            def sign_in(key: str) -> None:
                page.goto(f"{server.url}/console/login")
                page.get_by_label("API key").fill(key)
                page.get_by_label("API key").press("Enter")
                expect(page.get_by_role("heading", name="Runs")).to_be_visible()

            # Anonymous visitors are sent to sign in.
            page.goto(f"{server.url}/console")
            expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
            sign_in(server.key)
            expect(page.get_by_text("No runs match")).to_be_visible()

            # Start a run from the form and watch its timeline fill in live.
            page.get_by_label("Agent to run").select_option("stepper")
            page.get_by_label("Input (JSON)").fill('{"steps": 4, "pause": 0.3}')
            page.get_by_role("button", name="Start run").click()
            timeline = page.get_by_role("list", name="Timeline")
            expect(timeline.locator("li")).to_have_count(4, timeout=15_000)
            expect(page.locator("[data-status=completed]")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "run-completed.png"), full_page=True)

            # A refund over 500 waits for a supervisor.
            page.goto(f"{server.url}/console")
            page.get_by_label("Agent to run").select_option("support")
            page.get_by_label("Input (JSON)").fill('{"question": "refund A-1"}')
            page.get_by_role("button", name="Start run").click()
            expect(page.locator("[data-status=waiting]")).to_be_visible(timeout=15_000)
            run_url = page.url

            page.get_by_role("button", name="Sign out").click()
            sign_in(bob_key)
            page.get_by_role("link", name="Approvals").click()
            section = page.locator("section.approval")
            expect(section).to_have_count(1)
            expect(section).to_contain_text('"amount": 900')
            page.screenshot(path=str(ARTIFACTS / "approval-pending.png"), full_page=True)
            reason = section.get_by_label("Reason", exact=False)
            reason.fill("the customer is right")
            reason.press("Tab")  # keyboard: from the reason to Approve
            page.keyboard.press("Enter")
            expect(page.get_by_text("Nothing waits for a decision")).to_be_visible()

            page.goto(run_url)
            expect(page.locator("[data-status=completed]")).to_be_visible(timeout=15_000)
            page.screenshot(path=str(ARTIFACTS / "approved-run.png"), full_page=True)

            page.get_by_role("link", name="Audit").click()
            expect(page.locator("#verification")).to_contain_text("Verified", timeout=15_000)
            expect(page.get_by_role("cell", name="approval.decided")).to_have_count(1)
            page.screenshot(path=str(ARTIFACTS / "audit-verified.png"), full_page=True)
        finally:
            browser.close()
