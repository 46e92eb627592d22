"""Access keys on the page, in a real browser: asked for once, kept, changed and forgotten;
today's usage; the limits' 429s; the models a key may use; exports that carry the key.

Real chromium against the app in keys mode (CHATPROXY_AUTH=keys) in simulator
mode (fixtures in `tests/browser.py`). Each test makes its own keys, so each
sees only its own conversations, usage and limits.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask

from chatproxy.access.keys import issue_key, revoke_key
from tests.browser import PHONE, ask, browser, expect, open_page, wait_until
from tests.conftest import LiveServer, serve
from tests.servers import ROOT, server_env

if TYPE_CHECKING:
    from playwright.sync_api import Page

__all__ = ["browser", "open_page"]  # fixtures, used by name

NEEDS_A_KEY = "This chatproxy needs an access key"
REFUSED = "The access key is unknown, revoked or expired."
# Retry-After until midnight UTC, as the page words it.
WAIT = r"Try again in (\d+ h \d+ min|\d+ min|\d+ s)\."


@pytest.fixture(scope="module")
def keys_server(make_app: Callable[..., Flask]) -> Iterator[LiveServer]:
    """A server that needs access keys, in simulator mode, for the whole module."""
    with serve(make_app(CHATPROXY_AUTH="keys", CHATPROXY_UPSTREAM="simulator")) as server:
        yield server


def make_key(server: LiveServer, **limits: Any) -> tuple[str, str]:
    """A new key on `server`'s store, as `flask keys create` makes them: (name, key)."""
    name = f"page-{uuid.uuid4().hex[:10]}"
    with server.app.app_context():
        return name, issue_key(name, **limits)


def enter_key(page: Page, key: str) -> None:
    """Type `key` into the key dialog and save it."""
    expect(page.locator("#key-dialog")).to_be_visible()
    page.fill("#key-input", key)
    page.press("#key-input", "Enter")


def with_key(page: Page, key: str) -> Page:
    """`page` (just opened) given `key`: the dialog asked, the key was saved."""
    enter_key(page, key)
    expect(page.locator("#key-dialog")).to_be_hidden()
    return page


def held_key(page: Page) -> str | None:
    return page.evaluate("() => localStorage.getItem('chatproxy.key')")


def usage_of(page: Page, server: LiveServer, key: str) -> dict[str, Any]:
    """GET /api/usage with `key`, as another client would."""
    response = page.request.get(
        f"{server.url}/api/usage", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status == 200, response.text()
    return response.json()


def test_the_page_asks_for_a_key_refuses_a_wrong_one_and_keeps_the_right_one(
    open_page: Callable[..., Page], keys_server: LiveServer
) -> None:
    _, key = make_key(keys_server)
    page = open_page(server=keys_server)
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#key-dialog-title")).to_have_text(NEEDS_A_KEY)
    expect(page.locator("#key-dialog-command")).to_have_text("make key NAME=me")
    expect(page.locator("#key-dialog-others")).to_contain_text("ask whoever runs it")
    expect(page.locator("#key-input")).to_have_attribute("type", "password")
    expect(page.locator("#key-input")).to_be_focused()
    expect(page.locator("#open-banner")).to_have_count(0)

    enter_key(page, "cpk-not-a-key-of-this-server")
    expect(page.locator("#key-error")).to_have_text(f"This key was refused: {REFUSED}")
    expect(dialog).to_be_visible()
    assert held_key(page) is None

    enter_key(page, key)
    expect(dialog).to_be_hidden()
    assert held_key(page) == key
    expect(page.locator("#question")).to_be_focused()
    question = f"Keys work {uuid.uuid4().hex[:8]}"
    answer = ask(page, question)
    wait_until(answer, "done")
    expect(answer.locator(".answer-body")).to_contain_text(f"You asked: {question}")
    expect(page.locator(".conversation-item")).to_have_text([question])  # this key's only one

    page.reload()
    expect(page.locator(".conversation-item")).to_have_text([question])
    wait_until(page.locator(".answer"), "done")
    expect(page.locator("#usage")).to_be_visible()
    expect(dialog).to_be_hidden()  # everything loaded with the kept key: nothing asked


def test_the_command_the_dialog_names_makes_a_key_the_page_takes(
    open_page: Callable[..., Page], keys_server: LiveServer, database_url: str
) -> None:
    """A newcomer after `make run`: runs what the dialog shows, pastes what it prints."""
    page = open_page(server=keys_server)
    command = page.locator("#key-dialog-command").inner_text().split()
    assert command[:2] == ["make", "key"], command
    # As typed in the project's folder, in a clean environment (no OPENAI_API_KEY),
    # on the server's store; a name of this test's own, and this test's Python.
    name = f"me-{uuid.uuid4().hex[:8]}"
    tools = Path(sys.executable).parent
    made = subprocess.run(
        [*command[:2], f"NAME={name}", f"BIN={tools}", "-o", f"{tools}/.installed"],
        cwd=ROOT,
        env=server_env(DATABASE_URL=database_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]

    enter_key(page, key)

    expect(page.locator("#key-dialog")).to_be_hidden()
    assert held_key(page) == key
    wait_until(ask(page, "Hello with the key I just made"), "done")


def test_a_question_asked_before_the_key_waits_in_the_box(
    open_page: Callable[..., Page], keys_server: LiveServer
) -> None:
    _, key = make_key(keys_server)
    page = open_page(server=keys_server)
    page.click("#key-cancel")
    expect(page.locator("#key-dialog")).to_be_hidden()
    expect(page.locator("#conversation-list-note")).to_have_text(
        "The list could not be loaded. An access key is needed: use the Key button at the top."
    )

    page.fill("#question", "Asked too early")
    page.press("#question", "Enter")
    expect(page.locator("#key-dialog")).to_be_visible()  # the 401 asks for a key
    expect(page.locator(".turn")).to_have_count(0)
    expect(page.locator("#question")).to_have_value("Asked too early")

    with_key(page, key)
    expect(page.locator("#conversation-list-note")).to_have_text(
        "No conversations yet. Your questions will be kept here."
    )
    page.press("#question", "Enter")
    answer = page.locator(".answer")
    wait_until(answer, "done")
    expect(answer.locator(".answer-body")).to_contain_text("You asked: Asked too early")


def test_forget_key_asks_again_and_another_key_sees_its_own_conversations(
    open_page: Callable[..., Page], keys_server: LiveServer
) -> None:
    alice, alice_key = make_key(keys_server)
    _, bob_key = make_key(keys_server)
    page = with_key(open_page(server=keys_server), alice_key)
    question = f"Alice asks {uuid.uuid4().hex[:8]}"
    wait_until(ask(page, question), "done")

    page.click("#key-button")
    expect(page.locator("#key-dialog-title")).to_have_text("Access key")
    expect(page.locator("#key-state")).to_have_text(f"In use: the key “{alice}”.")
    page.keyboard.press("Escape")  # closes the dialog, keeps the key and the answer
    expect(page.locator("#key-dialog")).to_be_hidden()
    expect(page.locator(".turn")).to_have_count(1)

    page.click("#key-button")
    page.click("#key-forget")
    expect(page.locator("#key-dialog-title")).to_have_text(NEEDS_A_KEY)
    expect(page.locator("#key-state")).to_have_text("The key was forgotten. Enter one to go on.")
    expect(page.locator("#key-forget")).to_be_hidden()
    assert held_key(page) is None
    expect(page.locator(".turn")).to_have_count(0)  # alice's conversation is not shown
    expect(page.locator(".conversation-item")).to_have_count(0)
    expect(page.locator("#usage")).to_be_hidden()
    assert "#c=" not in page.url

    page.reload()
    expect(page.locator("#key-dialog")).to_be_visible()
    expect(page.locator("#key-dialog-title")).to_have_text(NEEDS_A_KEY)
    with_key(page, bob_key)
    expect(page.locator("#conversation-list-note")).to_have_text(
        "No conversations yet. Your questions will be kept here."
    )
    expect(page.locator(".conversation-item")).to_have_count(0)


def test_a_revoked_key_is_asked_for_again(
    open_page: Callable[..., Page], keys_server: LiveServer
) -> None:
    name, key = make_key(keys_server)
    page = with_key(open_page(server=keys_server), key)
    wait_until(ask(page, "Before the revocation"), "done")
    with keys_server.app.app_context():
        assert revoke_key(name)

    page.reload()
    expect(page.locator("#key-dialog")).to_be_visible()
    expect(page.locator("#key-state")).to_have_text(
        f"The key this browser had was refused: {REFUSED}"
    )
    expect(page.locator("#key-forget")).to_be_visible()


def test_the_usage_line_shows_todays_requests_and_tokens(
    open_page: Callable[..., Page], keys_server: LiveServer
) -> None:
    _, key = make_key(keys_server, rpm=60, tpm=200_000, tokens_per_day=1_000_000, usd_per_day=5)
    page = with_key(open_page(server=keys_server), key)
    today = page.locator("#usage-today")
    expect(today).to_have_text("Today: 0 requests · 0 of 1,000,000 tokens/day · $0 of $5.00/day")
    expect(page.locator("#usage-limits")).to_have_text(
        "Limits: 60 requests and 200,000 tokens a minute"
    )

    wait_until(ask(page, "hello"), "done")
    expect(today).to_contain_text("Today: 1 request · ")
    wait_until(ask(page, "and again"), "done")
    usage = usage_of(page, keys_server, key)["today"]
    assert usage["requests"] == 2 and usage["total_tokens"] > 0
    cost = page.evaluate("cost => window.chatproxyApi.formatCost(cost)", usage["cost"])
    assert re.fullmatch(r"\$0\.000\d+", cost), cost
    expect(today).to_have_text(
        f"Today: 2 requests · {usage['total_tokens']:,} of 1,000,000 tokens/day"
        f" · {cost} of $5.00/day"
    )

    page.click(".language-option[data-language='zh-CN']")
    tokens = f"{usage['total_tokens']:,}"
    expect(today).to_have_text(
        f"今天：2 次请求 · {tokens} / 每日 1,000,000 个 token · {cost} / 每日 $5.00"
    )
    expect(page.locator("#usage-limits")).to_have_text("上限：每分钟 60 次请求、200,000 个 token")


def test_a_key_without_limits_shows_plain_usage(
    open_page: Callable[..., Page], keys_server: LiveServer
) -> None:
    _, key = make_key(keys_server)
    page = with_key(open_page(server=keys_server), key)
    wait_until(ask(page, "hello"), "done")
    usage = usage_of(page, keys_server, key)["today"]
    expect(page.locator("#usage-today")).to_have_text(
        re.compile(rf"^Today: 1 request · {usage['total_tokens']:,} tokens · \$0\.0000\d+$")
    )
    expect(page.locator("#usage-limits")).to_be_hidden()


def test_a_key_limited_to_two_requests_a_minute_is_told_to_wait(
    open_page: Callable[..., Page], keys_server: LiveServer
) -> None:
    _, key = make_key(keys_server, rpm=2)
    page = with_key(open_page(server=keys_server), key)
    wait_until(ask(page, "one"), "done")
    wait_until(ask(page, "two"), "done")
    third = ask(page, "three")
    wait_until(third, "error")
    expect(third.locator(".note-error")).to_have_text(
        re.compile(r"^Too many requests for this access key: 2 per minute\. Try again in \d+ s\.$")
    )


def test_a_spent_daily_quota_says_so_in_both_languages(
    open_page: Callable[..., Page], keys_server: LiveServer
) -> None:
    _, key = make_key(keys_server, tokens_per_day=10)
    page = with_key(open_page(server=keys_server), key)
    wait_until(ask(page, "one"), "done")  # the answer that crosses the quota is not cut
    refused = ask(page, "two")
    wait_until(refused, "error")
    note = refused.locator(".note-error")
    expect(note).to_have_text(
        re.compile(rf"^This access key used its 10 tokens for today \(UTC\)\. {WAIT}$")
    )
    expect(page.locator("#question")).to_have_value("two")  # not kept: ready to send again
    expect(page.locator("#send")).to_be_enabled()

    page.click(".language-option[data-language='zh-CN']")
    expect(note).to_have_text(
        re.compile(
            r"^这个访问密钥今天（UTC）的 token 额度已用完。"
            r"请在 (\d+ 小时 \d+ 分钟|\d+ 分钟|\d+ 秒)后重试。"
            r"（This access key used its 10 tokens for today \(UTC\)\.）$"
        )
    )


def test_the_model_picker_offers_only_the_keys_models(
    open_page: Callable[..., Page], keys_server: LiveServer, simulator: Any
) -> None:
    _, key = make_key(keys_server, models=["gpt-4.1", "gpt-4o-mini"])
    page = open_page(server=keys_server)
    offered = page.locator("#model option")
    expect(offered).to_have_text(["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1"])  # all
    with_key(page, key)
    expect(offered).to_have_text(["gpt-4o-mini", "gpt-4.1"])  # in CHATPROXY_MODELS' order
    expect(page.locator("#model")).to_have_value("gpt-4o-mini")

    _, only = make_key(keys_server, models=["gpt-4.1"])
    page = with_key(open_page(server=keys_server), only)
    expect(page.locator("#model option")).to_have_text(["gpt-4.1"])
    expect(page.locator("#model")).to_have_value("gpt-4.1")
    answer = ask(page, "Which model?")
    wait_until(answer, "done")
    expect(answer.locator(".answer-model")).to_have_text("gpt-4.1")
    assert simulator.requests[-1]["json"]["model"] == "gpt-4.1"


def test_exports_carry_the_key_in_a_header_not_in_the_url(
    open_page: Callable[..., Page], keys_server: LiveServer, tmp_path: Path
) -> None:
    _, key = make_key(keys_server)
    page = with_key(open_page(server=keys_server), key)
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    question = f"导出 {uuid.uuid4().hex[:8]}"
    wait_until(ask(page, question), "done")

    with page.expect_download() as markdown:
        page.click("#export-md")
    assert markdown.value.suggested_filename.endswith(".md")
    assert question.split()[0] in markdown.value.suggested_filename  # the title, in Chinese
    path = tmp_path / "export.md"
    markdown.value.save_as(path)
    assert question in path.read_text()
    with page.expect_download() as exported:
        page.click("#export-json")
    assert exported.value.suggested_filename.endswith(".json")
    assert not [url for url in urls if "key=" in url]

    # The file goes back in with the key too.
    path = tmp_path / exported.value.suggested_filename
    exported.value.save_as(path)
    page.set_input_files("#import-file", path)
    expect(page.locator("#import-status")).to_have_text(f"Imported “{question}”.")
    expect(page.locator(".conversation-item")).to_have_count(2)


def test_on_a_phone_the_key_dialog_fits(
    open_page: Callable[..., Page], keys_server: LiveServer
) -> None:
    _, key = make_key(keys_server, tokens_per_day=100_000)
    page = open_page(
        server=keys_server, viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    box = dialog.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"page is {width[0]}px wide on a {width[1]}px screen"

    with_key(page, key)
    wait_until(ask(page, "From a phone"), "done")
    expect(page.locator("#key-button")).to_be_visible()
    page.click("#sidebar-toggle")
    expect(page.locator("#usage-today")).to_contain_text("Today: 1 request · ")
    expect(page.locator("#usage-today")).to_contain_text("of 100,000 tokens/day")
    width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"page is {width[0]}px wide on a {width[1]}px screen"


def test_in_open_mode_nothing_asks_for_a_key(open_page: Callable[..., Page]) -> None:
    page = open_page()  # live_server: CHATPROXY_AUTH=open
    expect(page.locator("#open-banner")).to_be_visible()
    wait_until(ask(page, "Open to all"), "done")
    expect(page.locator("#key-dialog")).to_have_count(0)
    expect(page.locator("#key-button")).to_have_count(0)
    expect(page.locator("#usage-today")).to_contain_text("Today, everyone: ")
