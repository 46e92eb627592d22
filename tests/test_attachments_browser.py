"""Attachments on the page, in a real browser: paste a screenshot, drop a PDF, pick a file,
thumbnails and chips under the box (removable), send, the answer about them, the images in the
transcript after a reload, full size on a click; at desktop and phone width.

Real chromium against the app in simulator mode (fixtures in `tests/browser.py`).
Screenshots go to SCREENSHOTS_DIR (a folder) when it is set.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser import DESKTOP, FINISH_TIMEOUT, PHONE, browser, expect, open_page, wait_until
from tests.sample_files import pdf, png

if TYPE_CHECKING:
    from playwright.sync_api import Page

__all__ = ["browser", "open_page"]  # fixtures, used by name

SCREENSHOT = png(400, 300, (37, 99, 235))
REPORT = pdf("Quarterly revenue rose 12 percent")
REPORT_TEXT = "Quarterly revenue rose 12 percent"

# Hands files to the page as the browser would: a paste on the question box
# (a screenshot on the clipboard), or a drop on the composer.
GIVE_FILES = """([how, files]) => {
  const transfer = new DataTransfer();
  for (const [name, type, b64] of files) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    transfer.items.add(new File([bytes], name, { type: type }));
  }
  const options = { bubbles: true, cancelable: true };
  if (how === "paste") {
    const event = new ClipboardEvent("paste", { clipboardData: transfer, ...options });
    document.getElementById("question").dispatchEvent(event);
  } else {
    const target = document.getElementById("ask-form");
    target.dispatchEvent(new DragEvent("dragover", { dataTransfer: transfer, ...options }));
    target.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, ...options }));
  }
}"""


def give(page: Page, how: str, *files: tuple[str, str, bytes]) -> None:
    encoded = [[name, kind, base64.b64encode(data).decode()] for name, kind, data in files]
    page.evaluate(GIVE_FILES, [how, encoded])


def screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("SCREENSHOTS_DIR")
    if folder:
        page.screenshot(path=str(Path(folder) / name), full_page=False)


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_paste_an_image_drop_a_pdf_send_and_see_them(
    open_page: Callable[..., Page], viewport: dict[str, int], live_server: Any
) -> None:
    page = open_page(viewport=viewport)
    width = "desktop" if viewport == DESKTOP else "phone"
    tray = page.locator("#attachment-tray")

    give(page, "paste", ("image.png", "image/png", SCREENSHOT))
    give(page, "drop", ("report.pdf", "application/pdf", REPORT))
    give(page, "paste", ("other.png", "image/png", png(20, 20)))

    expect(tray.locator(".attachment")).to_have_count(3)
    expect(tray.locator(".attachment-file")).to_contain_text("report.pdf")
    expect(tray.locator(".attachment-size")).to_have_text(f"{len(REPORT)} B")
    # Each thumbnail shows its image (decoded from a blob: URL under the strict CSP).
    assert page.eval_on_selector("#attachment-tray img", "img => img.naturalWidth") == 400
    tray.locator(".attachment-image").nth(1).locator(".attachment-remove").click()
    expect(tray.locator(".attachment")).to_have_count(2)
    page.fill("#question", "What do the chart and the report say?")
    screenshot(page, f"attachments-composer-{width}.png")

    page.press("#question", "Enter")

    answer = page.locator(".turn .answer").last
    wait_until(answer, "done")
    expect(answer).to_contain_text("Image 1: PNG, 400×300 px")
    expect(answer).to_contain_text(f"File report.pdf: {len(REPORT_TEXT)} characters.")
    expect(answer).not_to_contain_text("Image 2")  # the one removed was not sent
    expect(tray).to_be_hidden()
    shown = page.locator(".turn .question-attachments").last
    expect(shown.locator("img")).to_have_count(1)
    expect(shown.locator(".attachment-file")).to_contain_text("report.pdf")
    page.locator(".turn .question-text").last.scroll_into_view_if_needed()
    page.evaluate("window.scrollBy(0, -80)")  # the question below the header
    screenshot(page, f"attachments-answer-{width}.png")

    # After a reload the stored image comes back from /api/attachments/ID.
    page.reload()
    image = page.locator(".turn .question-attachments img").first
    expect(image).to_have_attribute("src", lambda_src_blob(), timeout=FINISH_TIMEOUT)
    page.wait_for_function(
        "() => { const i = document.querySelector('.question-attachments img');"
        " return i && i.complete && i.naturalWidth === 400; }"
    )
    image.click()
    viewer = page.locator("#image-viewer")
    expect(viewer).to_be_visible()
    assert page.eval_on_selector("#image-viewer img", "img => img.naturalHeight") == 300
    screenshot(page, f"attachments-full-size-{width}.png")
    viewer.click()
    expect(viewer).to_be_hidden()


def lambda_src_blob() -> Any:
    import re

    return re.compile(r"^blob:")


def test_picked_file_goes_with_the_question(open_page: Callable[..., Page]) -> None:
    page = open_page()
    page.set_input_files(
        "#attach-input",
        files=[{"name": "notes.md", "mimeType": "text/markdown", "buffer": b"# Notes\n\nhello\n"}],
    )
    expect(page.locator("#attachment-tray .attachment-file")).to_contain_text("notes.md")

    page.fill("#question", "Summarise my notes")
    page.press("#question", "Enter")

    answer = page.locator(".turn .answer").last
    wait_until(answer, "done")
    expect(answer).to_contain_text("File notes.md: 15 characters.")


def test_a_refused_attachment_is_explained(open_page: Callable[..., Page]) -> None:
    page = open_page()
    give(page, "drop", ("scan.pdf", "application/pdf", b"%PDF-1.4 nothing readable"))
    page.fill("#question", "Read this")
    page.press("#question", "Enter")

    answer = page.locator(".turn .answer").last
    wait_until(answer, "error")
    expect(page.locator(".turn").last).to_contain_text("scan.pdf")
