"""The model's reasoning on the page, in real chromium: a block that streams while the model
thinks, folds when the answer starts, opens on a click, and comes back folded with the
conversation.

The simulator thinks on request (`[[sim: reasoning=...]]`); fixtures and helpers are in
`tests/browser.py`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from tests.browser import FINISH_TIMEOUT, ask, browser, expect, open_page, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Page

__all__ = ["browser", "open_page"]  # fixtures, used by name

# Every frame until the answer is done: the reasoning's length while the block is open
# and the answer has not started, and whether the block was ever open beside answer text.
SAMPLE_THINKING = """() => {
  const answer = document.querySelector(".turn:last-child .answer");
  window.__thinking = window.__thinking || [];
  if (!answer) return false;
  const block = answer.querySelector(".reasoning");
  const said = answer.querySelector(".answer-body").textContent.length;
  const thought = answer.querySelector(".reasoning-body").textContent.length;
  if (said === 0 && block.open && !block.hidden && thought > 0
      && !window.__thinking.includes(thought)) window.__thinking.push(thought);
  if (said > 0 && block.open) window.__openBesideAnswer = true;
  return answer.dataset.state === "done";
}"""
THOUGHT = re.compile(r"^Thought for \d+(\.\d)? s · \d+ reasoning tokens$")


def test_reasoning_streams_then_folds_when_the_answer_starts(
    open_page: Callable[..., Page],
) -> None:
    page = open_page()
    answer = ask(page, "Why is the sky blue? [[sim: reasoning=reasoning_content delay=0.08]]")
    block = answer.locator(".reasoning")

    page.wait_for_function(SAMPLE_THINKING, polling="raf", timeout=FINISH_TIMEOUT)
    wait_until(answer, "done")

    lengths = page.evaluate("window.__thinking")
    assert len(lengths) >= 3, f"reasoning lengths seen while it streamed: {lengths}"
    assert not page.evaluate("window.__openBesideAnswer"), "the block stayed open as answer came"
    expect(block).to_be_visible()
    expect(block.locator(".reasoning-summary")).to_have_text(THOUGHT)
    expect(block.locator(".reasoning-body")).to_be_hidden()
    expect(answer.locator(".answer-body")).to_contain_text("Simulated answer")
    expect(answer.locator(".answer-body")).not_to_contain_text("Let me think")

    block.locator(".reasoning-summary").click()

    body = block.locator(".reasoning-body")
    expect(body).to_be_visible()
    expect(body).to_contain_text("Let me think about what they need.")
    # Markdown, as the answer is: emphasis, a list, bold.
    expect(body.locator("em")).to_have_text("Why is the sky blue?")
    expect(body.locator("li")).to_have_count(2)
    expect(body.locator("strong")).to_have_text("short")
    expect(body).not_to_contain_text("**")


def test_reasoning_comes_back_folded_with_its_conversation(open_page: Callable[..., Page]) -> None:
    page = open_page()
    answer = ask(page, "Why is the sky blue? [[sim: reasoning=think]]")
    wait_until(answer, "done")
    summary = answer.locator(".reasoning-summary").text_content()
    expect(page).to_have_url(re.compile(r"#c=[0-9a-f]{32}$"))

    page.reload()

    restored = page.locator(".turn .answer").last
    wait_until(restored, "done")
    block = restored.locator(".reasoning")
    expect(block).to_be_visible()
    expect(block.locator(".reasoning-body")).to_be_hidden()
    # The same time as when it streamed (the server's), and no token count: a <think>
    # server counts none apart.
    expect(block.locator(".reasoning-summary")).to_have_text(summary or "")
    assert re.fullmatch(r"Thought for \d+(\.\d)? s", summary or ""), summary
    expect(restored.locator(".answer-body")).not_to_contain_text("think")


def test_reasoning_texts_in_chinese(open_page: Callable[..., Page]) -> None:
    page = open_page(locale="zh-CN")
    answer = ask(page, "天空为什么是蓝色的？ [[sim: reasoning=reasoning]]")
    wait_until(answer, "done")

    expect(answer.locator(".reasoning-summary")).to_have_text(
        re.compile(r"^已思考 \d+(\.\d)? 秒 · \d+ 个推理 token$")
    )


def test_an_answer_without_reasoning_shows_no_block(open_page: Callable[..., Page]) -> None:
    page = open_page()
    answer = ask(page, "hello")
    wait_until(answer, "done")

    expect(answer.locator(".reasoning")).to_be_hidden()
