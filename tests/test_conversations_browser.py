"""Conversations on the page, in a real browser: the list, switching, reloads, Retry, Regenerate,
search, rename, delete, export and import, English and Chinese, the phone drawer.

Real chromium against the app in simulator mode (fixtures in `tests/browser.py`).
Every test's server shares one store, so each test names its conversations
with a tag of its own and looks only at those.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser import FINISH_TIMEOUT, PHONE, ask, browser, expect, open_page, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

__all__ = ["browser", "open_page"]  # fixtures, used by name

USAGE = re.compile(r"^Tokens: \d+ in · \d+ out · \$0\.0000\d+$")


def new_tag() -> str:
    """A word no other test's conversation titles contain."""
    return uuid.uuid4().hex[:10]


def conversation_id(page: Page) -> str:
    """The open conversation's id, from the page's URL (`#c=<id>`)."""
    match = re.search(r"#c=([0-9a-f]{32})$", page.url)
    assert match, f"no conversation in the URL {page.url}"
    return match.group(1)


def stored(page: Page, server: Any, conversation: str) -> dict[str, Any]:
    """The conversation as the server keeps it (GET /api/conversations/<id>)."""
    response = page.request.get(f"{server.url}/api/conversations/{conversation}")
    assert response.status == 200, response.text()
    return response.json()


def listed(page: Page, tag: str) -> Locator:
    """The entries of the conversation list whose title contains `tag`."""
    return page.locator(".conversation-item").filter(has_text=tag)


def test_two_conversations_switch_and_survive_a_reload(
    open_page: Callable[..., Page], live_server: Any
) -> None:
    page = open_page()
    tag = new_tag()
    expect(page.locator("#sidebar")).to_be_visible()
    expect(page.locator("#sidebar-toggle")).to_be_hidden()  # a drawer only on narrow screens
    first = ask(page, f"Apples {tag}")
    wait_until(first, "done")
    follow_up = ask(page, "And pears?")
    wait_until(follow_up, "done")
    # The follow-up went on the same conversation: the upstream got the first turn too.
    expect(follow_up.locator(".answer-body")).to_contain_text("I received 3 messages")
    apples = conversation_id(page)
    expect(page.locator("#conversation-title")).to_have_text(f"Apples {tag}")
    total = page.locator("#session-total")
    expect(total).to_have_text(re.compile(r"^This conversation: 2 answers · \d+ in · \d+ out · \$"))

    page.click("#new-conversation")
    expect(page.locator(".turn")).to_have_count(0)
    expect(page.locator("#empty-state")).to_be_visible()
    expect(total).to_be_hidden()
    expect(page.locator("#conversation-bar")).to_be_hidden()
    assert "#c=" not in page.url
    boat = ask(page, f"Boats {tag}")
    wait_until(boat, "done")
    expect(boat.locator(".answer-body")).to_contain_text("I received 1 message in")
    boats = conversation_id(page)
    assert boats != apples
    expect(total).to_have_text(re.compile(r"^This conversation: 1 answer · "))

    entries = listed(page, tag)
    expect(entries).to_have_text([f"Boats {tag}", f"Apples {tag}"])  # most recent first
    expect(entries.first).to_have_class(re.compile(r"\bcurrent\b"))

    entries.filter(has_text="Apples").locator(".conversation-link").click()
    expect(page.locator(".question-text")).to_have_text([f"Apples {tag}", "And pears?"])
    answers = page.locator(".answer")
    expect(answers.first.locator(".answer-body")).to_contain_text(f"You asked: Apples {tag}")
    expect(answers.last.locator(".answer-body")).to_contain_text("I received 3 messages")
    expect(answers.first.locator(".answer-usage")).to_have_text(USAGE)
    expect(answers.first.locator(".answer-model")).to_have_text("gpt-4o-mini")
    expect(answers.first.locator("pre code .hljs-keyword").first).to_be_visible()
    expect(total).to_have_text(re.compile(r"^This conversation: 2 answers · "))
    expect(entries.filter(has_text="Apples")).to_have_class(re.compile(r"\bcurrent\b"))
    assert conversation_id(page) == apples

    entries.filter(has_text="Boats").locator(".conversation-link").click()
    expect(page.locator(".question-text")).to_have_text([f"Boats {tag}"])
    expect(answers.locator(".answer-body")).to_contain_text([f"You asked: Boats {tag}"])

    page.reload()
    expect(page.locator(".question-text")).to_have_text([f"Boats {tag}"])
    wait_until(answers.first, "done")
    expect(answers.first.locator(".answer-body")).to_contain_text(f"You asked: Boats {tag}")
    expect(answers.first.locator(".answer-usage")).to_have_text(USAGE)
    expect(total).to_have_text(re.compile(r"^This conversation: 1 answer · "))
    expect(entries).to_have_text([f"Boats {tag}", f"Apples {tag}"])
    expect(entries.first).to_have_class(re.compile(r"\bcurrent\b"))

    # Back returns to the conversation open before; a visit without #c= opens the last one.
    page.go_back()
    expect(page.locator(".question-text")).to_have_text([f"Apples {tag}", "And pears?"])
    page.goto(live_server.url + "/")
    expect(page.locator(".question-text")).to_have_text([f"Apples {tag}", "And pears?"])
    assert conversation_id(page) == apples


def test_chinese_at_a_click_and_after_a_reload(open_page: Callable[..., Page]) -> None:
    page = open_page()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("#send")).to_have_text("Send")
    answer = ask(page, "hello")
    wait_until(answer, "done")

    page.click(".language-option[data-language='zh-CN']")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator("#send")).to_have_text("发送")
    expect(page.locator("#stop")).to_have_text("停止")
    expect(page.locator("#question")).to_have_attribute("placeholder", "输入你的问题…")
    expect(page.locator("#new-conversation")).to_have_text("新对话")
    expect(page.locator("#conversation-search")).to_have_attribute("placeholder", "搜索标题…")
    expect(page.locator(".banner-demo")).to_have_text(
        "演示模式： 回答来自内置模拟器，而不是 OpenAI。"
    )
    expect(page.locator("#export-json")).to_have_text("导出 JSON")
    # What the page wrote itself changes too, answers included.
    expect(answer.locator(".answer-usage")).to_have_text(
        re.compile(r"^Token：输入 \d+ · 输出 \d+ · \$0\.0000\d+$")
    )
    expect(answer.locator(".copy-button")).to_have_text("复制")
    expect(answer.locator(".regenerate-button")).to_have_text("重新生成")
    expect(page.locator("#session-total")).to_have_text(re.compile(r"^本对话：1 个回答 · 输入 "))
    expect(page.locator(".language-option[data-language='zh-CN']")).to_have_attribute(
        "aria-pressed", "true"
    )
    assert page.evaluate("localStorage.getItem('chatproxy.lang')") == "zh-CN"

    page.reload()
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator("#send")).to_have_text("发送")
    expect(page.locator(".answer-usage")).to_have_text(re.compile(r"^Token：输入 "))

    page.click(".language-option[data-language='en']")
    expect(page.locator("#send")).to_have_text("Send")
    expect(page.locator(".answer-usage")).to_have_text(USAGE)
    expect(page.locator("html")).to_have_attribute("lang", "en")


def test_a_chinese_browser_starts_in_chinese(open_page: Callable[..., Page]) -> None:
    page = open_page(locale="zh-CN")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator("#send")).to_have_text("发送")
    expect(page.locator("#empty-state h1")).to_have_text("提个问题吧")
    expect(page.locator("label[for='question']")).to_have_text("你的问题")
    expect(page.locator("#persona option[value='']")).to_have_text("不使用角色")
    expect(page.locator("#sidebar")).to_have_attribute("aria-label", "对话")
    answer = ask(page, "你好")
    wait_until(answer, "done")
    expect(answer.locator(".answer-usage")).to_have_text(re.compile(r"^Token：输入 "))


def test_a_failed_question_offers_retry_after_a_reload(open_page: Callable[..., Page]) -> None:
    page = open_page()
    question = f"Will this fail? {new_tag()} [[sim: fault=server_error]]"
    answer = ask(page, question)
    wait_until(answer, "error")
    expect(answer.locator(".retry-button")).to_be_visible()

    page.reload()
    answer = page.locator(".answer")
    expect(page.locator(".question-text")).to_have_text([question])
    wait_until(answer, "error")
    expect(answer.locator(".answer-status")).to_have_text("Error")
    expect(answer.locator(".note-error")).to_contain_text("upstream", ignore_case=True)
    expect(answer.locator(".retry-button")).to_be_visible()
    expect(answer.locator(".regenerate-button")).to_be_hidden()
    # Retry asks the same question again, directive and all: it fails the same way, in place.
    answer.locator(".retry-button").click()
    wait_until(answer, "error")
    expect(page.locator(".turn")).to_have_count(1)
    expect(answer.locator(".note-error")).to_contain_text("upstream", ignore_case=True)
    expect(answer.locator(".retry-button")).to_be_visible()


def test_retry_answers_a_question_that_failed(
    open_page: Callable[..., Page],
    simulator: Any,
    live_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    page = open_page()
    question = f"Try me {new_tag()}"
    monkeypatch.setattr(simulator, "fault", "server_error")  # every answer fails for now
    wait_until(ask(page, question), "error")
    page.reload()
    answer = page.locator(".answer")
    wait_until(answer, "error")
    retry = answer.locator(".retry-button")
    expect(retry).to_be_visible()

    monkeypatch.setattr(simulator, "fault", None)  # the upstream is back
    retry.click()
    wait_until(answer, "done")
    expect(page.locator(".turn")).to_have_count(1)
    expect(answer.locator(".answer-body")).to_contain_text(f"You asked: {question}")
    expect(answer.locator(".note-error")).to_have_count(0)
    expect(answer.locator(".retry-button")).to_be_hidden()
    expect(answer.locator(".regenerate-button")).to_be_visible()
    expect(page.locator("#session-total")).to_have_text(re.compile(r"^This conversation: 1 answer"))
    messages = stored(page, live_server, conversation_id(page))["messages"]
    assert [(m["role"], m["status"]) for m in messages] == [("user", "ok"), ("assistant", "ok")]

    page.reload()
    wait_until(answer, "done")
    expect(answer.locator(".note-error")).to_have_count(0)


def test_regenerate_replaces_the_last_answer(
    open_page: Callable[..., Page], simulator: Any, live_server: Any
) -> None:
    page = open_page()
    tag = new_tag()
    wait_until(ask(page, f"First {tag}"), "done")
    wait_until(ask(page, f"Second {tag}"), "done")
    turns = page.locator(".turn")
    expect(turns.first.locator(".regenerate-button")).to_be_hidden()  # only the last answer
    expect(turns.last.locator(".regenerate-button")).to_be_visible()
    conversation = conversation_id(page)
    before = stored(page, live_server, conversation)["messages"]
    turns.last.evaluate("turn => turn.classList.add('before-regenerate')")

    turns.last.locator(".regenerate-button").click()
    expect(page.locator(".before-regenerate")).to_have_count(0)  # replaced on screen at once
    wait_until(turns.last.locator(".answer"), "done")
    expect(turns).to_have_count(2)
    expect(page.locator(".question-text")).to_have_text([f"First {tag}", f"Second {tag}"])
    expect(turns.last.locator(".answer-body")).to_contain_text(f"You asked: Second {tag}")
    expect(turns.last.locator(".regenerate-button")).to_be_visible()
    # The upstream was asked the last question again, with the turn before it.
    sent = simulator.requests[-1]["json"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[-1]["content"] == f"Second {tag}"
    after = stored(page, live_server, conversation)["messages"]
    assert [m["role"] for m in after] == ["user", "assistant", "user", "assistant"]
    assert after[1]["id"] == before[1]["id"]  # the first answer is kept
    assert after[3]["id"] != before[3]["id"]  # the last one replaced

    page.reload()
    expect(turns).to_have_count(2)
    wait_until(turns.last.locator(".answer"), "done")


def test_a_failed_regenerate_keeps_the_answer(
    open_page: Callable[..., Page], simulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = open_page()
    answer = ask(page, f"Keep me {new_tag()}")
    wait_until(answer, "done")
    text = answer.locator(".answer-body").text_content()
    monkeypatch.setattr(simulator, "fault", "server_error")
    answer.locator(".regenerate-button").click()
    answer = page.locator(".answer")
    expect(answer.locator(".note-error")).to_contain_text("upstream", ignore_case=True)
    wait_until(answer, "done")  # the answer the server still has, with the failure under it
    assert answer.locator(".answer-body").text_content() == text
    expect(answer.locator(".regenerate-button")).to_be_visible()


def test_a_stopped_answer_shows_as_interrupted_after_a_reload(
    open_page: Callable[..., Page], live_server: Any
) -> None:
    page = open_page()
    answer = ask(page, f"Tell me slowly {new_tag()} [[sim: chunks=40 delay=0.2]]")
    expect(answer).to_have_attribute("data-state", "streaming", timeout=FINISH_TIMEOUT)
    page.click("#stop")
    wait_until(answer, "stopped")
    conversation = conversation_id(page)
    # The server keeps what arrived once it notices that the reader left.
    deadline = time.monotonic() + 10
    while len(stored(page, live_server, conversation)["messages"]) < 2:
        assert time.monotonic() < deadline, "the partial answer was not stored"
        time.sleep(0.1)

    page.reload()
    answer = page.locator(".answer")
    wait_until(answer, "stopped")
    expect(answer.locator(".answer-status")).to_have_text("Interrupted")
    expect(answer.locator(".note")).to_have_text(
        "The answer was interrupted: the text above is partial."
    )
    expect(answer.locator(".answer-body")).not_to_be_empty()
    expect(answer.locator(".regenerate-button")).to_be_visible()


def test_search_rename_and_delete(open_page: Callable[..., Page], live_server: Any) -> None:
    page = open_page()
    tag = new_tag()
    wait_until(ask(page, f"Alpha {tag}"), "done")
    alpha = conversation_id(page)
    page.click("#new-conversation")
    wait_until(ask(page, f"Beta {tag}"), "done")
    entries = page.locator(".conversation-item")
    search = page.locator("#conversation-search")

    # The server filters by title, ignoring case.
    search.fill(f"alpha {tag}")
    expect(entries).to_have_text([f"Alpha {tag}"])
    search.fill(tag)
    expect(entries).to_have_text([f"Beta {tag}", f"Alpha {tag}"])
    search.fill(f"nothing {tag}")
    expect(entries).to_have_count(0)
    expect(page.locator("#conversation-list-note")).to_have_text(
        f"No conversation title contains “nothing {tag}”."
    )
    search.fill(tag)
    expect(entries).to_have_count(2)

    # Rename the open conversation: Escape cancels, Enter saves.
    entries.first.locator(".rename-button").click()
    title = page.locator(".rename-input")
    expect(title).to_be_focused()
    expect(title).to_have_value(f"Beta {tag}")
    title.fill("never mind")
    title.press("Escape")
    expect(title).to_have_count(0)
    expect(entries).to_have_text([f"Beta {tag}", f"Alpha {tag}"])
    entries.first.locator(".rename-button").click()
    title.fill(f"Gamma {tag}")
    title.press("Enter")
    expect(entries).to_have_text([f"Gamma {tag}", f"Alpha {tag}"])
    expect(page.locator("#conversation-title")).to_have_text(f"Gamma {tag}")

    # Delete asks first; Cancel keeps the conversation.
    entry = entries.filter(has_text=f"Alpha {tag}")
    entry.locator(".delete-button").click()
    expect(entry.locator(".confirm-text")).to_have_text("Delete this conversation?")
    entry.locator(".cancel-button").click()
    expect(entry.locator(".confirm-delete")).to_have_count(0)
    entry.locator(".delete-button").click()
    entry.locator(".confirm-delete-button").click()
    expect(entries).to_have_text([f"Gamma {tag}"])
    gone = page.request.get(f"{live_server.url}/api/conversations/{alpha}")
    assert gone.status == 404

    # Deleting the open conversation leaves a new one, empty.
    entries.first.locator(".delete-button").click()
    entries.first.locator(".confirm-delete-button").click()
    expect(entries).to_have_count(0)
    expect(page.locator("#conversation-list-note")).to_have_text(
        f"No conversation title contains “{tag}”."
    )
    expect(page.locator(".turn")).to_have_count(0)
    expect(page.locator("#empty-state")).to_be_visible()
    assert "#c=" not in page.url

    page.reload()
    expect(page.locator("#empty-state")).to_be_visible()
    expect(page.locator(".conversation-item").first).to_be_visible()
    expect(listed(page, tag)).to_have_count(0)


def test_export_and_import(open_page: Callable[..., Page], tmp_path: Path) -> None:
    page = open_page()
    tag = new_tag()
    question = f"Export me {tag}"
    wait_until(ask(page, question), "done")
    original = conversation_id(page)
    answer_text = page.locator(".answer-body").text_content()
    expect(page.locator("#export-md")).to_have_attribute(
        "href", f"/api/conversations/{original}/export?format=md"
    )

    with page.expect_download() as markdown:
        page.click("#export-md")
    path = tmp_path / markdown.value.suggested_filename
    markdown.value.save_as(path)
    assert path.suffix == ".md" and question in path.read_text()
    with page.expect_download() as exported:
        page.click("#export-json")
    path = tmp_path / exported.value.suggested_filename
    exported.value.save_as(path)
    assert path.suffix == ".json"

    page.set_input_files("#import-file", path)
    expect(page.locator("#import-status")).to_have_text(f"Imported “{question}”.")
    expect(page).not_to_have_url(re.compile(original))
    expect(page.locator(".question-text")).to_have_text([question])
    expect(page.locator(".answer-body")).to_have_text(answer_text)
    expect(listed(page, tag)).to_have_count(2)
    expect(listed(page, tag).first).to_have_class(re.compile(r"\bcurrent\b"))

    page.set_input_files(
        "#import-file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hi"}]
    )
    expect(page.locator("#import-status")).to_have_text(
        "notes.txt is not a JSON export of a conversation."
    )


def test_on_a_phone_the_list_is_a_drawer(open_page: Callable[..., Page]) -> None:
    page = open_page(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    tag = new_tag()
    sidebar, toggle = page.locator("#sidebar"), page.locator("#sidebar-toggle")
    expect(sidebar).to_be_hidden()
    wait_until(ask(page, f"Phone one {tag}"), "done")

    toggle.click()
    expect(sidebar).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    page.click("#new-conversation")
    expect(sidebar).to_be_hidden()
    expect(page.locator(".turn")).to_have_count(0)
    wait_until(ask(page, f"Phone two {tag}"), "done")

    toggle.click()
    entries = listed(page, tag)
    expect(entries).to_have_text([f"Phone two {tag}", f"Phone one {tag}"])
    width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"page is {width[0]}px wide on a {width[1]}px screen"
    entries.last.locator(".conversation-link").click()
    expect(sidebar).to_be_hidden()
    expect(page.locator(".question-text")).to_have_text([f"Phone one {tag}"])

    toggle.click()
    expect(sidebar).to_be_visible()
    page.keyboard.press("Escape")
    expect(sidebar).to_be_hidden()
    expect(toggle).to_be_focused()
    width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"page is {width[0]}px wide on a {width[1]}px screen"


def test_a_conversation_gone_elsewhere_gives_way_to_a_new_one(
    open_page: Callable[..., Page], live_server: Any
) -> None:
    page = open_page()
    page.goto(f"{live_server.url}/#c={'0' * 32}")
    expect(page.locator("#empty-note")).to_have_text(
        "That conversation no longer exists. You can start a new one below."
    )
    assert "#c=" not in page.url
    tag = new_tag()
    wait_until(ask(page, f"Doomed {tag}"), "done")
    gone = conversation_id(page)
    page.request.delete(f"{live_server.url}/api/conversations/{gone}")  # as another tab would

    answer = ask(page, "Still there?")
    wait_until(answer, "error")
    expect(answer.locator(".note-error")).to_have_text(
        "This conversation no longer exists. Your next question starts a new one."
    )
    wait_until(ask(page, f"Fresh {tag}"), "done")
    assert conversation_id(page) != gone
    expect(listed(page, tag)).to_have_text([f"Fresh {tag}"])
