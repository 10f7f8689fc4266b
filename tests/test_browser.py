"""The dashboard in a real browser (Playwright driving Debian's headless Chromium) against
the whole system: sign in, submit a job from the page, watch it complete without a reload,
see its four images rendered, sign out. Screenshots go to test-artifacts/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.common.databases import REQUIRE_SERVICES
from webhook_app.tools.stack import Stack

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
# Slow enough that the list shows the job before it completes.
KNOBS = {"SANDBOX_PREVIEW_DELAY": "1", "SANDBOX_FINAL_DELAY": "2"}
FOUR_IMAGES_RENDERED = """() => {
  const images = [...document.querySelectorAll('img[data-test=image]')];
  return images.length === 4 && images.every((i) => i.complete && i.naturalWidth > 0);
}"""


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    missing = None
    if not Path(CHROMIUM).exists():
        missing = f"no Chromium at {CHROMIUM} (scripts/test installs Debian's chromium as root)"
    else:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            missing = "the playwright package is not installed (pip install -e '.[test]')"
    if missing:
        if REQUIRE_SERVICES:
            pytest.fail(f"{missing}, and REQUIRE_SERVICES=1")
        pytest.skip(missing)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_a_job_seen_from_the_dashboard(stack: Stack, chromium: Any) -> None:
    from playwright.sync_api import expect

    stack.start_all(**KNOBS)
    context = chromium.new_context(viewport=DESKTOP)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)

    page.goto(f"{stack.url}/")
    expect(page).to_have_url(f"{stack.url}/login?next=/")
    page.fill("#token", "not the token")
    page.click("button[type=submit]")
    expect(page.get_by_role("alert")).to_contain_text("not accepted")
    problems.clear()  # the refused sign-in answers 401, which the console reports
    page.fill("#token", stack.token)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{stack.url}/")

    prompt = "a lighthouse at dawn, from the dashboard"
    page.fill("input[name=prompt]", prompt)
    page.select_option("select[name=aspect_ratio]", "16:9")
    page.click("[data-test=new-job] button[type=submit]")
    row = page.locator(".job-row", has_text=prompt)
    status = row.locator("[data-test=status]")
    first_seen = status.inner_text()
    assert first_seen != "completed"
    job_id = row.get_attribute("data-job-id")
    page.evaluate("window.stillTheSamePage = true")

    expect(status).to_have_text("completed", timeout=90_000)
    assert page.evaluate("window.stillTheSamePage") is True, "the page was reloaded"
    thumbs = row.locator(".thumbs img")
    expect(thumbs).to_have_count(4)
    page.wait_for_function(
        "(id) => [...document.querySelectorAll(`[data-job-id='${id}'] .thumbs img`)]"
        ".every((i) => i.complete && i.naturalWidth > 0)",
        arg=job_id,
    )
    screenshot(page, "dashboard-list-desktop")

    row.locator("a.cover").click()
    expect(page).to_have_url(f"{stack.url}/jobs/{job_id}")
    page.wait_for_function(FOUR_IMAGES_RENDERED, timeout=30_000)
    job = stack.client().get_job(str(job_id))
    # the sizes arrive just after completion; the page refreshes itself until they do
    expect(page.locator("figcaption").first).to_contain_text("x", timeout=30_000)
    for item in job["items"]:
        expect(page.locator("figcaption", has_text=str(item["dp_item_id"]))).to_have_count(1)
    expect(page.locator(".timeline li")).to_have_count(5)
    expect(page.locator("[data-test=delivery-body]").last).to_contain_text('"dpItemId"')
    page.wait_for_function(FOUR_IMAGES_RENDERED)
    screenshot(page, "dashboard-job-desktop")

    page.set_viewport_size(PHONE)
    page.reload()
    page.wait_for_function(FOUR_IMAGES_RENDERED)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the job page scrolls sideways on a phone ({width}px)"
    screenshot(page, "dashboard-job-phone")
    page.goto(f"{stack.url}/")
    expect(page.locator(".job-row", has_text=prompt)).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(page, "dashboard-list-phone")

    page.click("[data-test=logout]")
    expect(page).to_have_url(f"{stack.url}/login")
    page.goto(f"{stack.url}/jobs/{job_id}")
    expect(page).to_have_url(f"{stack.url}/login?next=/jobs/{job_id}")
    assert problems == []
    context.close()
