"""The page in a real browser: chromium, a fresh context per page, the page's CSP, helpers.

Drives Debian's chromium headless through Playwright (the Python package; its
own browser downloads are not used; `CHROMIUM=/path` picks another binary)
against the app served over real HTTP in simulator mode. Every page runs under
the strict Content-Security-Policy the page is built for, unless a test asks
for the sanitizer on its own.

A browser test module imports the fixtures it uses (`browser`, `open_page`).

Playwright note: `wait_for_function` must be given a function (`"() => ..."`);
a bare expression is evaluated with eval, which the CSP refuses.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # reported by the `browser` fixture, with what to install
    expect = sync_playwright = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page, Route

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
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
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'"
)
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}
FINISH_TIMEOUT = 20_000  # ms; upstream faults may be retried before they show

# Collects what the console alone would hide: CSP violations and uncaught errors.
WATCH_PAGE = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(event.violatedDirective + " " + (event.blockedURI || event.sample));
});
"""


def unavailable(message: str) -> None:
    """A missing browser fails in CI and skips on a developer's machine, with the same message."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


# Module scope, not session: Playwright's sync API keeps an asyncio loop running
# on the main thread while it is open, which would break later tests that call
# asyncio.run().
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless, for this module's tests."""
    if sync_playwright is None:
        unavailable("the browser tests need the playwright Python package: pip install playwright")
    if not CHROMIUM.exists():
        unavailable(f"the browser tests need chromium at {CHROMIUM}: apt-get install chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser: Browser, live_server: Any, simulator: Any) -> Iterator[Callable[..., Page]]:
    """Open the Q&A page in a fresh browser context: `open_page(viewport=..., csp=True)`.

    `server=` opens another server's page than `live_server`'s; other keyword
    arguments go to the browser context (`locale="zh-CN"`, `is_mobile=True`,
    ...). At the end, fails if the page threw an error or broke its CSP.
    """
    simulator.reset()
    contexts, pages, errors = [], [], []

    def add_csp(route: Route) -> None:
        response = route.fetch()
        route.fulfill(
            response=response, headers={**response.headers, "content-security-policy": CSP}
        )

    def open_(
        viewport: dict[str, int] = DESKTOP, csp: bool = True, server: Any = None, **options: Any
    ) -> Page:
        home = (server or live_server).url.rstrip("/") + "/"
        context = browser.new_context(viewport=viewport, **options)
        contexts.append(context)
        page = context.new_page()
        pages.append(page)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.add_init_script(WATCH_PAGE)
        if csp:
            page.route(home, add_csp)
        page.goto(home)
        return page

    yield open_
    violations = [v for page in pages for v in page.evaluate("window.__cspViolations")]
    for context in contexts:
        context.close()
    assert not errors, f"the page threw: {errors}"
    assert not violations, f"the page broke its Content-Security-Policy: {violations}"


def ask(page: Page, question: str) -> Locator:
    """Type a question, press Enter, and return the locator of its answer."""
    turns = page.locator(".turn")
    index = turns.count()  # not .last: that would follow later questions
    page.fill("#question", question)
    page.press("#question", "Enter")
    return turns.nth(index).locator(".answer")


def wait_until(answer: Locator, state: str) -> None:
    """Wait for the answer to end in `state` (done, stopped or error)."""
    expect(answer).to_have_attribute("data-state", state, timeout=FINISH_TIMEOUT)
