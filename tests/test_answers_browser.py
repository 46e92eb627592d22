"""Answers beyond prose, in a real browser: formulas, code with Copy, Continue, the header in view.

Real chromium against the app in simulator mode, under the page's strict
Content-Security-Policy (`tests/browser.py` fails a test whose page broke it).
The simulator's `answer=echo` answers with the question itself, so a test
writes the Markdown the model would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx2

from chatproxy.simulator import Simulator
from chatproxy.simulator.answers import filler_words
from tests.browser import ask, browser, expect, open_page, wait_until
from tests.conftest import LiveServer

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

__all__ = ["browser", "open_page"]  # fixtures, used by name

PHONE = {"width": 390, "height": 844}

MATH_ANSWER = r"""Euler: $e^{i\pi} + 1 = 0$, and the roots of a quadratic:

$$x = \frac{-b \pm \sqrt{b^2 - 4ac}}{2a}$$

Also \(a^2 + b^2 = c^2\) and \[\sum_{k=1}^{n} k = \frac{n(n+1)}{2}\]

It costs $5 and $10, or $5-$10 a month.

In code `echo $HOME and $PATH` stays as written.

[[sim: answer=echo]]"""


def echo(page: Page, markdown: str) -> Locator:
    """Ask the simulator to answer `markdown` as it is; return the answer, once done."""
    if "[[sim:" not in markdown:
        markdown += "\n\n[[sim: answer=echo]]"
    answer = ask(page, markdown)
    wait_until(answer, "done")
    return answer


def test_formulas_are_drawn_by_katex_and_money_and_code_stay_text(
    open_page: Callable[..., Page],
) -> None:
    page = open_page()
    body = echo(page, MATH_ANSWER).locator(".answer-body")

    inline = body.locator(".math[data-display='false']")
    display = body.locator(".math[data-display='true']")
    expect(inline).to_have_count(2)
    expect(display).to_have_count(2)
    expect(body.locator(".math[data-rendered='true']")).to_have_count(4)
    # Drawn, not TeX: a fraction's numerator sits above its denominator, the
    # formula is set in KaTeX's own font, and its MathML copy holds the TeX.
    parts = display.first.locator(".mfrac .vlist > span")
    numerator = parts.filter(has_text="4ac").first.bounding_box()
    denominator = parts.filter(has_text="2a").first.bounding_box()
    assert numerator and denominator and numerator["y"] + numerator["height"] <= denominator["y"]
    font = inline.first.locator(".katex").evaluate("e => getComputedStyle(e).fontFamily")
    assert "KaTeX_Main" in font
    assert page.evaluate("() => document.fonts.check('16px KaTeX_Math')")
    expect(display.first.locator("annotation[encoding='application/x-tex']")).to_have_text(
        r"x = \frac{-b \pm \sqrt{b^2 - 4ac}}{2a}"
    )
    expect(body).not_to_contain_text(r"\frac", use_inner_text=True)  # what shows
    # Dollar amounts are money, a code span is code.
    expect(body).to_contain_text("It costs $5 and $10, or $5-$10 a month.")
    expect(body.locator("code")).to_have_text("echo $HOME and $PATH")
    expect(body.locator("code .math")).to_have_count(0)


def test_a_displayed_formula_over_lines_and_a_stray_double_dollar(
    open_page: Callable[..., Page],
) -> None:
    page = open_page()
    text = (
        "A matrix:\n\n$$\n\\begin{pmatrix} a & b \\\\ c & d \\end{pmatrix}\n$$\n\n"
        "$$ is the shell's PID.\n\nThen **bold** text.\n\n$$"
    )
    body = echo(page, text).locator(".answer-body")
    expect(body.locator(".math[data-rendered='true'] .mtable")).to_have_count(1)
    expect(body.locator("strong")).to_have_text("bold")  # not swallowed into a formula
    expect(body).to_contain_text("$$ is the shell's PID.")


def test_formulas_are_drawn_while_the_answer_streams(open_page: Callable[..., Page]) -> None:
    page = open_page()
    text = (
        r"First $\frac{a}{b}$ then"
        + " more words" * 40
        + " [[sim: answer=echo chunks=40 delay=0.03]]"
    )
    answer = ask(page, text)
    formula = answer.locator(".math[data-rendered='true']")
    expect(formula).to_have_count(1)
    expect(answer).to_have_attribute("data-state", "streaming")
    # The answer is redrawn as it grows; the formula drawn is moved, not drawn again.
    formula.evaluate("e => { e.dataset.seen = 'yes'; }")
    wait_until(answer, "done")
    expect(formula).to_have_attribute("data-seen", "yes")


def test_formulas_that_style_their_mathml_keep_the_policy(open_page: Callable[..., Page]) -> None:
    # KaTeX writes style="" on the MathML of these two; math.js drops it (the
    # open_page fixture fails the test on any CSP violation).
    page = open_page()
    body = echo(page, r"$\pmb{x}$ and $\fcolorbox{red}{white}{y}$").locator(".answer-body")
    expect(body.locator(".math[data-rendered='true']")).to_have_count(2)


def test_a_formula_katex_cannot_parse_stays_as_written(open_page: Callable[..., Page]) -> None:
    page = open_page()
    body = echo(page, r"Broken: $\frac{1}{$ and fine: $x^2$").locator(".answer-body")
    expect(body.locator(".math[data-rendered='false']")).to_have_text(r"$\frac{1}{$")
    expect(body.locator(".math[data-rendered='true']")).to_have_count(1)


def test_hostile_formulas_and_html_run_nothing(open_page: Callable[..., Page]) -> None:
    page = open_page()
    hostile = (
        r"Link: $\href{javascript:window.__xss=1}{click}$ and $\url{javascript:window.__xss=2}$"
        "\n\n"
        r"$$\htmlClass{x}{y} \includegraphics{javascript:window.__xss=3}$$"
        "\n\n"
        r"HTML in math: $<img src=x onerror=window.__xss=4>$ and "
        '<span class="math" data-display="true">\\href{javascript:window.__xss=5}{x}</span>'
        "\n\n"
        r"Huge: $\rule{5000em}{5000em}$ end"
    )
    body = echo(page, hostile).locator(".answer-body")
    expect(body).to_contain_text("end")
    assert page.evaluate("window.__xss") is None
    expect(body.locator("[href^='javascript:' i]")).to_have_count(0)
    expect(body.locator("img, script, [onerror]")).to_have_count(0)
    # The span the model wrote is text, not a placeholder of ours.
    expect(body).to_contain_text('<span class="math" data-display="true">')
    # \rule is capped at KaTeX's maxSize: the answer does not grow 5000em wide.
    width = body.evaluate("e => e.scrollWidth")
    assert width <= body.evaluate("e => e.clientWidth") + 1


LONG_LINE = '    return f"costs ${name}"  # a long line that goes on' + " and on" * 20
CODE_ANSWER = f"""Run it:

```python
def greet(name):
{LONG_LINE}
```

```
plain text block
```
"""


def test_code_blocks_have_their_language_and_a_copy_button(open_page: Callable[..., Page]) -> None:
    page = open_page(permissions=["clipboard-read", "clipboard-write"])
    body = echo(page, CODE_ANSWER).locator(".answer-body")
    blocks = body.locator(".code-block")
    expect(blocks).to_have_count(2)
    expect(blocks.nth(0).locator(".code-language")).to_have_text("python")
    expect(blocks.nth(1).locator(".code-language")).to_have_text("text")

    copy = blocks.nth(0).locator(".code-copy")
    expect(copy).to_have_text("Copy")
    copy.click()
    expect(copy).to_have_text("Copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == f"def greet(name):\n{LONG_LINE}\n"
    expect(copy).to_have_text("Copy", timeout=5_000)  # "Copied" only for a moment

    # The long line scrolls inside its block (highlight.js's code element is
    # the scroller); the page does not scroll sideways.
    code = blocks.nth(0).locator("pre code")
    assert code.evaluate("e => e.scrollWidth > e.clientWidth")
    assert code.evaluate("e => getComputedStyle(e).overflowX") == "auto"
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 1280


def test_code_copy_speaks_chinese(open_page: Callable[..., Page]) -> None:
    page = open_page(permissions=["clipboard-read", "clipboard-write"])
    block = echo(page, CODE_ANSWER).locator(".code-block").first
    page.click(".language-option[data-language='zh-CN']")
    copy = block.locator(".code-copy")
    expect(copy).to_have_text("复制")
    copy.click()
    expect(copy).to_have_text("已复制")


def header_in_view(page: Page) -> None:
    """The header is at the top of the window, and what is there is its button, not the answer."""
    toggle_or_key = page.locator(".site-header .language-option").first
    box = page.locator(".site-header").bounding_box()
    assert box is not None and box["y"] == 0, box
    expect(toggle_or_key).to_be_in_viewport()
    centre = toggle_or_key.bounding_box()
    found = page.evaluate(
        "([x, y]) => document.elementFromPoint(x, y).closest('.site-header') !== null",
        [centre["x"] + centre["width"] / 2, centre["y"] + centre["height"] / 2],
    )
    assert found


def test_the_header_stays_in_view_on_a_long_conversation(open_page: Callable[..., Page]) -> None:
    page = open_page()
    answer = ask(page, "[[sim: answer=long]]")
    wait_until(answer, "done")
    assert page.evaluate("() => window.scrollY") > 500  # the page followed the answer down
    header_in_view(page)


def test_a_phone_opening_a_long_conversation_reaches_the_header(
    open_page: Callable[..., Page],
) -> None:
    page = open_page()
    answer = ask(page, "[[sim: answer=long]]")
    wait_until(answer, "done")
    page.wait_for_url("**/#c=*")
    url = page.url
    phone = open_page(viewport=PHONE, is_mobile=True, has_touch=True)
    phone.goto(url)
    expect(phone.locator(".turn .answer")).to_have_attribute("data-state", "done")
    phone.wait_for_function("() => window.scrollY > 500")  # opened at its end
    header_in_view(phone)
    phone.locator("#sidebar-toggle").tap()
    expect(phone.locator("#new-conversation")).to_be_in_viewport()


def test_continue_goes_on_with_an_answer_cut_off(
    open_page: Callable[..., Page],
    make_server_with: Callable[..., LiveServer],
    simulator: Simulator,
) -> None:
    # The owner's cap cuts every answer at 60 tokens; 80 words need two requests.
    server = make_server_with(CHATPROXY_UPSTREAM="simulator", CHATPROXY_MAX_TOKENS="60")
    page = open_page(server=server)
    answer = ask(page, "Tell me more [[sim: words=80]]")
    wait_until(answer, "done")
    expect(answer.locator(".note")).to_have_text("Answer cut off (max_tokens).")
    go_on = answer.locator(".continue-button")
    expect(go_on).to_be_visible()
    expect(go_on).to_have_text("Continue")
    page.wait_for_url("**/#c=*")
    conversation_id = page.url.rsplit("#c=", 1)[1]
    api = server.url + f"/api/conversations/{conversation_id}"
    partial = httpx2.get(api).json()["messages"][-1]["content"]
    assert answer.locator(".answer-body").inner_text().split() == partial.split()

    go_on.click()
    wait_until(answer, "done")
    whole = filler_words(80)
    # The page appended to the same answer: all of it, once, in the same turn.
    expect(page.locator(".turn")).to_have_count(1)
    assert answer.locator(".answer-body").inner_text().split() == whole.split()
    expect(answer.locator(".note")).to_have_count(0)
    expect(go_on).to_be_hidden()
    # The upstream got the partial answer as the last assistant message.
    sent = simulator.requests[-1]["json"]["messages"]
    assert sent[-2] == {"role": "assistant", "content": partial}
    assert sent[-1]["role"] == "user" and sent[-1]["content"].startswith("Continue")
    # The stored conversation holds one answer, whole, with both requests' tokens.
    (_, stored) = httpx2.get(api).json()["messages"]
    assert stored["content"] == whole and stored["finish_reason"] == "stop"
    out = stored["usage"]["completion_tokens"]
    assert out > 60
    expect(answer.locator(".answer-usage")).to_contain_text(f" {out} out")
    expect(answer.locator(".regenerate-button")).to_be_visible()


def test_continue_after_the_conversation_is_opened_again(
    open_page: Callable[..., Page], make_server_with: Callable[..., LiveServer]
) -> None:
    server = make_server_with(CHATPROXY_UPSTREAM="simulator", CHATPROXY_MAX_TOKENS="60")
    page = open_page(server=server)
    wait_until(ask(page, "Tell me more [[sim: words=80]]"), "done")
    page.wait_for_url("**/#c=*")
    page.reload()
    answer = page.locator(".turn .answer")
    expect(answer).to_have_attribute("data-state", "done")
    answer.locator(".continue-button").click()
    wait_until(answer, "done")
    assert answer.locator(".answer-body").inner_text().split() == filler_words(80).split()
    expect(answer.locator(".continue-button")).to_be_hidden()
