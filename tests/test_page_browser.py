"""The Q&A page in a real browser: streaming, Markdown, safety, Stop, errors, keys, phone width.

Real chromium against the app in simulator mode, under the page's strict
Content-Security-Policy; the fixtures and helpers are in `tests/browser.py`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser import FINISH_TIMEOUT, PHONE, ask, browser, expect, open_page, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Page

__all__ = ["browser", "open_page"]  # fixtures, used by name

# Samples the streaming answer's text length every frame until three different
# non-empty lengths were seen while the answer was still coming.
SAMPLE_GROWTH = """() => {
  const answer = document.querySelector(".turn:last-child .answer");
  window.__lengths = window.__lengths || [];
  if (answer && answer.dataset.state === "streaming") {
    const length = answer.querySelector(".answer-body").textContent.length;
    if (length > 0 && !window.__lengths.includes(length)) window.__lengths.push(length);
  }
  return window.__lengths.length >= 3;
}"""


def test_page_opens_with_demo_banner(open_page: Callable[..., Page]) -> None:
    page = open_page()
    expect(page).to_have_title("chatproxy · ChatGPT 问答")
    expect(page.locator(".banner-demo")).to_have_text(
        "Demo mode: answers come from the built-in simulator, not OpenAI."
    )
    expect(page.locator("#model")).to_have_value(page.get_attribute("body", "data-default-model"))
    expect(page.locator("#send")).to_be_enabled()
    expect(page.locator("#stop")).to_be_disabled()
    expect(page.locator("#question")).to_be_focused()


def test_answer_grows_while_streaming(open_page: Callable[..., Page]) -> None:
    page = open_page()
    answer = ask(page, "What does chatproxy do? [[sim: chunks=20 delay=0.05]]")
    expect(page.locator("#stop")).to_be_enabled()
    expect(page.locator("#send")).to_be_disabled()
    page.wait_for_function(SAMPLE_GROWTH, polling="raf", timeout=FINISH_TIMEOUT)
    wait_until(answer, "done")
    seen = page.evaluate("window.__lengths")
    final = len(answer.locator(".answer-body").text_content())
    assert len(seen) >= 3 and max(seen) < final, (
        f"lengths seen while streaming {seen}, final {final}"
    )
    expect(answer.locator(".answer-usage")).to_contain_text("tokens", ignore_case=True)
    expect(page.locator("#send")).to_be_enabled()
    expect(page.locator("#stop")).to_be_disabled()


def test_tokens_and_cost_per_answer_and_for_the_page(open_page: Callable[..., Page]) -> None:
    page = open_page()
    total = page.locator("#session-total")
    expect(total).to_be_hidden()
    first = ask(page, "hello")
    wait_until(first, "done")
    second = ask(page, "and again")
    wait_until(second, "done")
    usage = re.compile(r"^Tokens: \d+ in · \d+ out · \$0\.0000\d+$")
    expect(first.locator(".answer-usage")).to_have_text(usage)
    expect(second.locator(".answer-usage")).to_have_text(usage)
    expect(total).to_be_visible()
    expect(total).to_have_text(
        re.compile(r"^This conversation: 2 answers · \d+ in · \d+ out · \$0\.000\d+$")
    )


def test_finished_answer_renders_markdown(open_page: Callable[..., Page]) -> None:
    page = open_page()
    answer = ask(page, "Show me some Markdown")
    wait_until(answer, "done")
    body = answer.locator(".answer-body")
    expect(body.locator("li")).to_have_count(3)
    expect(body.locator("strong").first).to_be_visible()
    code = body.locator("pre code").first
    expect(code).to_have_class(re.compile(r"\bhljs\b"))
    expect(code.locator("span[class^='hljs-']").first).to_be_visible()
    expect(body).not_to_contain_text("```")


def test_chosen_model_is_used(open_page: Callable[..., Page], simulator: Any) -> None:
    page = open_page()
    options = page.locator("#model option")
    if options.count() < 2:
        pytest.skip("only one model is allowed in this configuration")
    chosen = options.nth(1).get_attribute("value")
    page.select_option("#model", chosen)
    answer = ask(page, "Which model are you?")
    wait_until(answer, "done")
    expect(answer.locator(".answer-model")).to_have_text(chosen)
    assert simulator.requests[-1]["json"]["model"] == chosen


def test_chosen_persona_prompt_reaches_the_upstream(
    open_page: Callable[..., Page], simulator: Any
) -> None:
    page = open_page()
    default_model = page.locator("#model").input_value()
    expect(page.locator("#persona")).to_have_value("")  # "No persona" to begin with
    page.select_option("#persona", "translator")
    expect(page.locator("#model")).to_have_value(default_model)  # it pins no model
    answer = ask(page, "你好，世界")
    wait_until(answer, "done")
    expect(answer.locator(".answer-persona")).to_have_text("Translator 中⇄英")
    sent = simulator.requests[-1]["json"]
    assert sent["messages"][0]["role"] == "system"
    assert sent["messages"][0]["content"].startswith("You are a professional translator")
    assert sent["messages"][-1] == {"role": "user", "content": "你好，世界"}
    # Back to no persona: the conversation so far and the question, without the persona's prompt.
    page.select_option("#persona", "")
    wait_until(ask(page, "hello"), "done")
    sent = simulator.requests[-1]["json"]["messages"]
    assert [message["role"] for message in sent] == ["user", "assistant", "user"]
    assert sent[-1] == {"role": "user", "content": "hello"}


def test_persona_with_a_model_selects_it(
    open_page: Callable[..., Page], make_server_with: Callable[..., Any], tmp_path: Path
) -> None:
    folder = tmp_path / "personas"
    folder.mkdir()
    (folder / "reviewer.json").write_text(
        '{"name": "Reviewer", "model": "gpt-4.1",'
        ' "messages": [{"role": "system", "content": "Review code."}]}'
    )
    server = make_server_with(CHATPROXY_UPSTREAM="simulator", CHATPROXY_PERSONAS_DIR=str(folder))
    page = open_page(server=server)
    page.select_option("#model", "gpt-4o")  # the reader's own choice
    page.select_option("#persona", "reviewer")
    expect(page.locator("#model")).to_have_value("gpt-4.1")
    answer = ask(page, "Is x = x + 1 fine?")
    wait_until(answer, "done")
    expect(answer.locator(".answer-model")).to_have_text("gpt-4.1")
    page.select_option("#persona", "")
    expect(page.locator("#model")).to_have_value("gpt-4o")  # given back


def test_copy_copies_the_raw_markdown(open_page: Callable[..., Page]) -> None:
    page = open_page(permissions=["clipboard-read", "clipboard-write"])
    answer = ask(page, "Something to copy")
    wait_until(answer, "done")
    answer.locator(".copy-button").click()
    expect(answer.locator(".copy-button")).to_have_text("Copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert "**Simulated answer**" in copied and "```python" in copied


def test_untrusted_html_in_an_answer_runs_nothing(open_page: Callable[..., Page]) -> None:
    # No CSP here: the sanitizer alone must hold.
    page = open_page(csp=False)
    answer = ask(page, "[[sim: answer=xss]]")
    wait_until(answer, "done")
    body = answer.locator(".answer-body")
    expect(body).to_contain_text("plain text after the payloads stays visible")
    assert page.evaluate("window.__xss") is None
    expect(body.locator("script")).to_have_count(0)
    expect(body.locator("img[onerror]")).to_have_count(0)
    expect(body.locator("[href^='javascript:' i]")).to_have_count(0)


def test_stop_keeps_the_partial_answer(open_page: Callable[..., Page]) -> None:
    page = open_page()
    answer = ask(page, "Tell me slowly [[sim: chunks=40 delay=0.2]]")
    expect(answer).to_have_attribute("data-state", "streaming", timeout=FINISH_TIMEOUT)
    page.click("#stop")
    wait_until(answer, "stopped")
    partial = answer.locator(".answer-body").text_content()
    assert partial
    expect(answer.locator(".answer-status")).to_have_text("Stopped")
    expect(answer.locator(".note")).to_contain_text("partial")
    expect(page.locator("#send")).to_be_enabled()
    expect(page.locator("#stop")).to_be_disabled()
    # Asking again works, and nothing more arrived for the stopped answer meanwhile.
    wait_until(ask(page, "And another question"), "done")
    assert answer.locator(".answer-body").text_content() == partial


@pytest.mark.parametrize(
    ("directive", "message"),
    [
        ("[[sim: fault=server_error]]", "The upstream (OpenAI) could not be reached or failed"),
        ("[[sim: fault=rate_limit]]", "Rate limited, try again in"),
        ("[[sim: fault=reset_mid_stream]]", "The answer was interrupted"),
    ],
)
def test_upstream_fault_shows_an_error(
    open_page: Callable[..., Page], directive: str, message: str
) -> None:
    page = open_page()
    answer = ask(page, f"Will this fail? {directive}")
    wait_until(answer, "error")
    expect(answer.locator(".note-error")).to_contain_text(message)
    expect(page.locator("#send")).to_be_enabled()


def test_enter_sends_and_shift_enter_makes_a_new_line(open_page: Callable[..., Page]) -> None:
    page = open_page()
    box = page.locator("#question")
    box.press("Enter")
    expect(page.locator(".turn")).to_have_count(0)  # an empty question is not sent
    box.type("first line")
    box.press("Shift+Enter")
    box.type("second line")
    expect(box).to_have_value("first line\nsecond line")
    expect(page.locator(".turn")).to_have_count(0)
    box.press("Enter")
    expect(page.locator(".turn")).to_have_count(1)
    expect(page.locator(".question-text")).to_have_text("first line\nsecond line")
    expect(box).to_have_value("")
    wait_until(page.locator(".answer"), "done")


def test_phone_screen_has_no_horizontal_scroll(open_page: Callable[..., Page]) -> None:
    page = open_page(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    answer = ask(page, "A wide answer " + "x" * 120 + " [[sim: answer=code]]")
    wait_until(answer, "done")
    width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"page is {width[0]}px wide on a {width[1]}px screen"
    for control in ("#persona", "#model", "#send"):
        box = page.locator(control).bounding_box()
        assert box is not None and box["x"] + box["width"] <= PHONE["width"], control
