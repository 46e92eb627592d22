"""Branches on the page, in a real browser: a question edited in place and sent again, `< 1 / 2 >`
between its versions and between regenerated answers, after a reload too; English and Chinese.

Real chromium against the app in simulator mode (fixtures in `tests/browser.py`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tests.browser import ask, browser, expect, open_page, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

__all__ = ["browser", "open_page"]  # fixtures, used by name


def conversation_id(page: Page) -> str:
    match = re.search(r"#c=([0-9a-f]{32})$", page.url)
    assert match, f"no conversation in the URL {page.url}"
    return match.group(1)


def edit(turn: Locator, text: str) -> None:
    """Open `turn`'s question in place, replace it with `text` and press Save & send."""
    turn.hover()
    turn.locator(".edit-button").click()
    box = turn.locator(".question-edit-text")
    expect(box).to_be_focused()
    box.fill(text)
    turn.locator(".save-edit-button").click()


def test_edit_a_question_and_move_between_its_versions(
    open_page: Callable[..., Page], live_server: Any
) -> None:
    page = open_page()
    tag = uuid.uuid4().hex[:10]
    for question in (f"Apples {tag}", "And pears?", "And plums?"):
        wait_until(ask(page, question), "done")
    turns = page.locator(".turn")
    questions = page.locator(".question-text")
    second = turns.nth(1)
    expect(second.locator(".question-versions")).to_be_hidden()  # one version so far

    # Edit opens the question in place; Cancel leaves it as it was.
    second.hover()
    second.locator(".edit-button").click()
    expect(second.locator(".question-edit-text")).to_have_value("And pears?")
    expect(second.locator(".question-text")).to_be_hidden()
    second.locator(".cancel-edit-button").click()
    expect(second.locator(".question-text")).to_have_text("And pears?")

    edit(second, "And cherries?")
    answer = turns.nth(1).locator(".answer")
    wait_until(answer, "done")
    # The later turn left the page; the new answer had the first turn as its history.
    expect(questions).to_have_text([f"Apples {tag}", "And cherries?"])
    expect(answer.locator(".answer-body")).to_contain_text("I received 3 messages")
    versions = turns.nth(1).locator(".question-versions")
    expect(versions.locator(".branch-position")).to_have_text("2 / 2")
    expect(versions.locator(".branch-next")).to_be_disabled()

    # < shows the first version with the turns that followed it; > comes back.
    versions.locator(".branch-previous").click()
    expect(questions).to_have_text([f"Apples {tag}", "And pears?", "And plums?"])
    expect(versions.locator(".branch-position")).to_have_text("1 / 2")
    expect(versions.locator(".branch-previous")).to_be_disabled()
    expect(versions.locator(".branch-next")).to_be_focused()
    expect(turns.nth(2).locator(".answer-body")).to_contain_text("I received 5 messages")
    versions.locator(".branch-next").click()
    expect(questions).to_have_text([f"Apples {tag}", "And cherries?"])
    expect(versions.locator(".branch-position")).to_have_text("2 / 2")

    # The branch chosen is the server's: a reload shows it, and the next question follows it.
    page.reload()
    expect(questions).to_have_text([f"Apples {tag}", "And cherries?"])
    expect(turns.nth(1).locator(".question-versions .branch-position")).to_have_text("2 / 2")
    wait_until(ask(page, "And figs?"), "done")
    expect(turns.nth(2).locator(".answer-body")).to_contain_text("I received 5 messages")
    stored = page.request.get(f"{live_server.url}/api/conversations/{conversation_id(page)}")
    assert [m["content"] for m in stored.json()["messages"] if m["role"] == "user"] == [
        f"Apples {tag}",
        "And cherries?",
        "And figs?",
    ]


def test_regenerate_keeps_the_old_answer_a_version_away(
    open_page: Callable[..., Page], live_server: Any
) -> None:
    page = open_page()
    wait_until(ask(page, f"Regenerate me {uuid.uuid4().hex[:10]}"), "done")
    url = f"{live_server.url}/api/conversations/{conversation_id(page)}"
    old_answer = page.request.get(url).json()["messages"][1]
    answer = page.locator(".turn .answer")
    expect(answer).to_have_attribute("data-message-id", str(old_answer["id"]))
    versions = page.locator(".answer-versions")
    expect(versions).to_be_hidden()

    page.locator(".regenerate-button").click()
    wait_until(answer, "done")
    expect(versions.locator(".branch-position")).to_have_text("2 / 2")
    new_answer = page.request.get(url).json()["messages"][1]
    assert new_answer["siblings"] == [old_answer["id"], new_answer["id"]]
    expect(answer).to_have_attribute("data-message-id", str(new_answer["id"]))
    # Both answers were paid for: the conversation's totals count them.
    expect(page.locator("#session-total")).to_contain_text("2 answers")

    versions.locator(".branch-previous").click()
    expect(versions.locator(".branch-position")).to_have_text("1 / 2")
    expect(answer).to_have_attribute("data-message-id", str(old_answer["id"]))
    expect(answer.locator(".answer-body")).to_contain_text("You asked: Regenerate me")
    expect(answer.locator(".regenerate-button")).to_be_visible()  # still the last answer
    expect(page.locator(".question-versions")).to_be_hidden()  # the question has one version


def test_edit_speaks_chinese(open_page: Callable[..., Page]) -> None:
    page = open_page(locale="zh-CN")
    wait_until(ask(page, f"苹果 {uuid.uuid4().hex[:10]}"), "done")
    turn = page.locator(".turn").first
    turn.hover()
    expect(turn.locator(".edit-button")).to_have_text("编辑")
    turn.locator(".edit-button").click()
    expect(turn.locator(".save-edit-button")).to_have_text("保存并发送")
    expect(turn.locator(".cancel-edit-button")).to_have_text("取消")
    edit_box = turn.locator(".question-edit-text")
    edit_box.fill("香蕉")
    edit_box.press("Control+Enter")
    wait_until(page.locator(".turn").first.locator(".answer"), "done")
    versions = page.locator(".question-versions")
    expect(versions.locator(".branch-position")).to_have_text("2 / 2")
    expect(versions.locator(".branch-previous")).to_have_attribute("title", "上一个版本")
