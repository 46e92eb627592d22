"""The console (`/admin`) in a real browser: asks for an admin key, refuses an ordinary one;
Keys (list, today's spend against quotas, make with the key shown once, edit, revoke) and
Spending (the charts' numbers equal the ledger's sums), Requests (filtered, paged); hostile
names shown as text;
English and Chinese; desktop and phone width, with screenshots.

Real chromium against a server needing keys whose upstream is the simulator, after a
week of traffic made through the real API (`tests/console_traffic.py`). Set
CONSOLE_SCREENSHOTS=/some/folder to keep the screenshots (docs/console.png is one).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2
import pytest
from flask import Flask
from sqlalchemy import func, select

from chatproxy.access.keys import issue_key
from chatproxy.store.database import db
from chatproxy.store.models import RequestLogRow, UsageDay
from chatproxy.store.request_log import request_log
from chatproxy.store.schema import upgrade_database
from tests.browser import DESKTOP, PHONE, WATCH_PAGE, browser, expect
from tests.conftest import (
    TEST_DATABASE_URL,
    TEST_SCHEMA,
    LiveServer,
    _fresh_postgresql_schema,
    serve,
)
from tests.console_traffic import HOSTILE_NAMES, Week, seed_week

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

__all__ = ["browser"]  # a fixture, used by name


@pytest.fixture(scope="module")
def console_server(
    make_app: Callable[..., Flask], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A server that needs keys, its upstream the simulator, for the whole module.

    Its database is its own: the charts are checked against the ledger's sums,
    which the answers of earlier tests, still being settled, would move meanwhile.
    """
    if TEST_DATABASE_URL:
        url = _fresh_postgresql_schema(TEST_DATABASE_URL, f"{TEST_SCHEMA}_console")
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('console') / 'console.db'}"
    upgrade_database({"DATABASE_URL": url})
    with serve(make_app(CHATPROXY_AUTH="keys", DATABASE_URL=url)) as server:
        yield server


@pytest.fixture(scope="module")
def week(console_server: LiveServer) -> Week:
    return seed_week(console_server.app, console_server.url)


@pytest.fixture
def open_console(browser: Browser, console_server: LiveServer) -> Iterator[Callable[..., Page]]:
    """Open /admin in a fresh context; at the end, fail on a page error or a CSP violation
    (the server's own Content-Security-Policy applies)."""
    contexts, pages, errors = [], [], []

    def open_(viewport: dict[str, int] = DESKTOP, **options: Any) -> Page:
        context = browser.new_context(viewport=viewport, **options)
        contexts.append(context)
        page = context.new_page()
        pages.append(page)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.add_init_script(WATCH_PAGE)
        page.goto(f"{console_server.url}/admin#keys")
        return page

    yield open_
    violations = [v for page in pages for v in page.evaluate("window.__cspViolations")]
    for context in contexts:
        context.close()
    assert not errors, f"the console threw: {errors}"
    assert not violations, f"the console broke its Content-Security-Policy: {violations}"


def log_in(page: Page, key: str) -> None:
    expect(page.locator("#console-login")).to_be_visible()
    page.fill("#console-key-input", key)
    page.press("#console-key-input", "Enter")


def shoot(page: Page, name: str, tmp_path: Path, full_page: bool = True) -> Path:
    """A screenshot (of the whole page, or what is in view), kept in CONSOLE_SCREENSHOTS
    when set."""
    folder = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def chart_sums(page: Page, canvas: str) -> dict[str, float]:
    """Each dataset of the chart on `canvas` summed: {label: sum}, as Chart.js holds them."""
    return page.evaluate(
        """(id) => {
            const chart = window.Chart.getChart(document.getElementById(id));
            const sums = {};
            for (const set of chart.data.datasets) {
                sums[set.label] = set.data.reduce((a, b) => a + b, 0);
            }
            return sums;
        }""",
        canvas,
    )


def ledger(server: LiveServer, days: int, column: Any) -> dict[str, tuple[int, float]]:
    """(tokens, cost) per `column` over the last `days` UTC days, summed from the ledger."""
    today = datetime.now(UTC).date()
    with server.app.app_context():
        rows = db.session.execute(
            select(
                column,
                func.sum(UsageDay.prompt_tokens + UsageDay.completion_tokens),
                func.sum(UsageDay.cost),
            )
            .where(UsageDay.day > today - timedelta(days=days))
            .group_by(column)
        )
        return {name: (int(tokens), float(cost)) for name, tokens, cost in rows}


def test_an_ordinary_key_is_refused_and_an_admin_key_opens_the_console(
    open_console: Callable[..., Page], console_server: LiveServer, week: Week
) -> None:
    with console_server.app.app_context():
        plain = issue_key(f"plain-{week.admin_name}")
    page = open_console()
    log_in(page, plain)
    expect(page.locator("#console-login-error")).to_contain_text("not an admin key")
    expect(page.locator("#keys")).to_be_hidden()
    log_in(page, week.admin_key)
    expect(page.locator("#keys")).to_be_visible()
    expect(page.locator("#console-key-name")).to_contain_text(week.admin_name)
    # The key went in a header only: nothing in the URL, no cookie.
    assert week.admin_key not in page.url
    assert page.context.cookies() == []


def test_keys_show_todays_spend_and_hostile_names_as_text(
    open_console: Callable[..., Page], console_server: LiveServer, week: Week, tmp_path: Path
) -> None:
    page = open_console()
    log_in(page, week.admin_key)
    for hostile in HOSTILE_NAMES:
        name = next(n for n in week.keys if n.startswith(hostile))
        row = page.locator(".key-row", has=page.locator(".key-name", has_text=name))
        expect(row.locator(".key-name")).to_have_text(name)
        expect(row.locator(".quota-track")).to_have_count(2)  # tokens and USD per day
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator("#keys-body img, #keys-body script").count() == 0
    alice = next(name for name in week.keys if name.startswith("alice-"))
    tokens, _ = ledger(console_server, 1, UsageDay.key_name)[alice]
    row = page.locator(".key-row", has=page.locator(".key-name", has_text=alice))
    expect(row.locator(".key-today-plain")).to_contain_text(f" · {tokens:,} tokens · $")
    shoot(page, "console-keys-desktop", tmp_path)


def test_the_charts_numbers_equal_the_ledgers_sums(
    open_console: Callable[..., Page], console_server: LiveServer, week: Week, tmp_path: Path
) -> None:
    page = open_console()
    log_in(page, week.admin_key)
    page.click("a[href='#spending']")
    for days in (30, 90):
        page.click(f"[data-days='{days}']")
        for by, column in (("model", UsageDay.model), ("key", UsageDay.key_name)):
            page.click(f"[data-by='{by}']")
            expect(page.locator(f"[data-by='{by}']")).to_have_attribute("aria-pressed", "true")
            expected = ledger(console_server, days, column)
            page.wait_for_function(
                "([n]) => window.Chart.getChart(document.getElementById('tokens-chart'))"
                ".data.datasets.length === n",
                arg=[min(len(expected), 9)],
            )
            tokens, cost = chart_sums(page, "tokens-chart"), chart_sums(page, "cost-chart")
            if len(expected) <= 9:  # else the smallest are summed as "others"
                assert tokens == {name: t for name, (t, _) in expected.items()}
                for name, (_, usd) in expected.items():
                    assert cost[name] == pytest.approx(usd, rel=1e-6, abs=1e-9)
            assert sum(tokens.values()) == sum(t for t, _ in expected.values())
    for hostile in HOSTILE_NAMES:  # a key's name is a chart label, drawn as text
        assert any(label.startswith(hostile) for label in chart_sums(page, "tokens-chart"))
    spent_today = ledger(console_server, 1, UsageDay.key_name)
    expect(page.locator("#top-keys tr")).to_have_count(min(5, len(spent_today)))
    most = max(spent_today, key=lambda name: spent_today[name][1])
    expect(page.locator("#top-keys tr").first.locator(".top-name")).to_have_text(most)
    shoot(page, "console-spending-desktop", tmp_path)


def test_a_key_made_in_the_console_is_shown_once_edited_and_revoked(
    open_console: Callable[..., Page], console_server: LiveServer, week: Week
) -> None:
    page = open_console()
    log_in(page, week.admin_key)
    name = f"made-in-console-{week.admin_name}"
    page.click("#new-key")
    page.fill("#key-editor input[name=name]", name)
    page.fill("#key-editor input[name=rpm]", "40")
    page.check("#key-editor input[name=models][value='gpt-4o']")
    page.click("#key-editor-save")
    expect(page.locator("#made-key")).to_be_visible()
    key = page.locator("#made-key-value").inner_text()
    assert key.startswith("cpk-")
    models = httpx2.get(
        f"{console_server.url}/v1/models", headers={"Authorization": f"Bearer {key}"}
    ).json()
    assert [m["id"] for m in models["data"]] == ["gpt-4o"]
    page.click("#made-key-close")
    expect(page.locator("#made-key-value")).to_have_text("")

    row = page.locator(".key-row", has=page.locator(".key-name", has_text=name))
    expect(row).to_contain_text("40 requests/min")
    row.locator(".key-edit").click()
    page.fill("#key-editor input[name=rpm]", "")
    page.fill("#key-editor input[name=tokens_per_day]", "5000")
    page.click("#key-editor-save")
    expect(row).to_contain_text("5,000 tokens/day")
    expect(row).not_to_contain_text("requests/min")

    row.locator(".key-revoke").click()
    expect(row.locator(".key-revoke")).to_have_text("Really revoke?")
    row.locator(".key-revoke").click()
    expect(row).to_be_hidden()
    page.check("#show-revoked")
    expect(row.locator(".tag-revoked")).to_be_visible()
    refused = httpx2.get(
        f"{console_server.url}/v1/models", headers={"Authorization": f"Bearer {key}"}
    )
    assert refused.status_code == 401


def test_the_console_in_chinese_on_a_phone(
    open_console: Callable[..., Page], week: Week, tmp_path: Path
) -> None:
    page = open_console(viewport=PHONE, is_mobile=True, locale="zh-CN")
    log_in(page, week.admin_key)
    expect(page.locator("#keys-title")).to_have_text("密钥")
    expect(page.locator(".key-row").first).to_be_visible()
    # Nothing wider than the phone's screen.
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    shoot(page, "console-keys-phone", tmp_path)
    page.click("a[href='#spending']")
    expect(page.locator("#spending-title")).to_have_text("花费")
    page.wait_for_function(
        "() => window.Chart.getChart(document.getElementById('cost-chart')) !== undefined"
    )
    page.locator("#spending").scroll_into_view_if_needed()
    shoot(page, "console-spending-phone", tmp_path)
    page.click(".language-option[data-language='en']")
    expect(page.locator("#spending-title")).to_have_text("Spending")


def test_requests_are_listed_filtered_and_paged(
    open_console: Callable[..., Page], console_server: LiveServer, week: Week, tmp_path: Path
) -> None:
    hostile = next(name for name in week.keys if name.startswith(HOSTILE_NAMES[0]))
    with console_server.app.app_context():  # the week's rows, written in the background
        request_log(db.engine, 30).flush()
    page = open_console()
    log_in(page, week.admin_key)
    page.click("a[href='#requests']")
    expect(page.locator(".request-row")).to_have_count(50)
    shoot(page, "console-requests-desktop", tmp_path, full_page=False)
    expect(page.locator("#requests-older")).to_be_visible()
    page.click("#requests-older")
    expect(page.locator(".request-row")).not_to_have_count(50)
    assert page.locator(".request-row").count() > 50

    page.fill("#request-filters input[name=key]", hostile)
    page.click("#request-filters button[type=submit]")
    rows = page.locator(".request-row")
    expect(rows.first.locator(".request-key")).to_have_text(hostile)
    with console_server.app.app_context():
        expected = db.session.scalar(select(func.count()).where(RequestLogRow.key_name == hostile))
    expect(rows).to_have_count(min(50, expected))
    assert page.evaluate("() => window.__pwned") is None
    page.fill("#request-filters input[name=status]", "599")
    page.click("#request-filters button[type=submit]")
    expect(page.locator("#requests-body")).to_contain_text("No request matches.")


def test_the_requests_on_a_phone(
    open_console: Callable[..., Page], week: Week, tmp_path: Path
) -> None:
    page = open_console(viewport=PHONE, is_mobile=True)
    log_in(page, week.admin_key)
    page.click("a[href='#requests']")
    expect(page.locator(".request-row").first).to_be_visible()
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    shoot(page, "console-requests-phone", tmp_path, full_page=False)


def test_traffic_and_health(
    open_console: Callable[..., Page], console_server: LiveServer, week: Week, tmp_path: Path
) -> None:
    with console_server.app.app_context():
        request_log(db.engine, 30).flush()
    page = open_console()
    log_in(page, week.admin_key)
    page.click("a[href='#traffic']")
    page.wait_for_function(
        "() => window.Chart.getChart(document.getElementById('outcomes-chart')) !== undefined"
    )
    shown = sum(chart_sums(page, "outcomes-chart").values())
    first = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    with console_server.app.app_context():
        logged = db.session.scalar(select(func.count()).where(RequestLogRow.at >= first))
    assert shown == logged
    expect(page.locator("#upstreams-body tr").first).to_contain_text("in use")
    expect(page.locator("#streams-now")).to_contain_text("in flight now")
    shoot(page, "console-traffic-desktop", tmp_path)
    phone = open_console(viewport=PHONE, is_mobile=True, locale="zh-CN")
    log_in(phone, week.admin_key)
    phone.click("a[href='#traffic']")
    expect(phone.locator("#traffic-title")).to_have_text("流量")
    expect(phone.locator("#upstreams-body tr").first).to_contain_text("使用中")
    shoot(phone, "console-traffic-phone", tmp_path, full_page=False)


def test_personas_files_read_only_and_made_in_the_console(
    open_console: Callable[..., Page], console_server: LiveServer, week: Week, tmp_path: Path
) -> None:
    page = open_console()
    log_in(page, week.admin_key)
    page.click("a[href='#personas']")
    assistant = page.locator("[data-persona-id='assistant']")
    expect(assistant).to_contain_text("file")
    expect(assistant.locator(".persona-edit")).to_have_count(0)

    persona_id = f"hostile-{week.admin_name}"
    page.click("#new-persona")
    page.fill("#persona-editor input[name=id]", persona_id)
    page.fill("#persona-editor input[name=name]", HOSTILE_NAMES[1])
    page.fill("#persona-editor textarea[name=prompt]", "<b>Answer</b> in French.")
    page.click("#persona-editor-save")
    card = page.locator(f"[data-persona-id='{persona_id}']")
    expect(card.locator(".persona-name")).to_have_text(HOSTILE_NAMES[1])
    expect(card.locator(".persona-prompt")).to_have_text("<b>Answer</b> in French.")
    assert page.evaluate("() => window.__pwned") is None
    offered = httpx2.get(
        f"{console_server.url}/api/personas",
        headers={"Authorization": f"Bearer {week.admin_key}"},
    ).json()["data"]
    assert any(p["id"] == persona_id and p["name"] == HOSTILE_NAMES[1] for p in offered)
    shoot(page, "console-personas-desktop", tmp_path)

    card.locator(".persona-delete").click()
    card.locator(".persona-delete").click()
    expect(card).to_have_count(0)
