"""CORS in a real browser: a page of a listed origin calls chatproxy's API, any other is refused.

Two small pages, each served by its own `http.server` on its own port (so each
is an origin of its own), call chatproxy with `fetch`: a POST of JSON to
`/callChatGPT` and a GET of `/api/conversations`, both with an
`Authorization` header (so chromium sends a preflight first), and write what
happened into the page. chatproxy runs in keys mode with
CHATPROXY_CORS_ORIGINS naming the first page's origin only.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatproxy.access.keys import issue_key
from tests.browser import browser, expect

if TYPE_CHECKING:
    from playwright.sync_api import Browser

__all__ = ["browser"]  # a fixture, used by name

# What the other site's page runs: each call's status, headers and body, or
# the error fetch rejected with (a TypeError when CORS refuses).
CALLER_JS = """
const config = window.CHATPROXY;
const auth = { Authorization: "Bearer " + config.key };
const json = { "Content-Type": "application/json", Accept: "application/json" };

async function call(url, init) {
  try {
    const response = await fetch(url, init);
    return {
      status: response.status,
      conversation: response.headers.get("X-Conversation-Id"),
      body: await response.json(),
    };
  } catch (error) {
    return { error: error.name };
  }
}

async function run() {
  const outcome = {};
  outcome.ask = await call(config.api + "/callChatGPT", {
    method: "POST",
    headers: Object.assign({}, json, auth),
    body: JSON.stringify({ input: config.question }),
  });
  outcome.list = await call(config.api + "/api/conversations", { headers: auth });
  outcome.noKey = await call(config.api + "/api/conversations", {});
  document.getElementById("outcome").textContent = JSON.stringify(outcome);
  document.body.setAttribute("data-done", "true");
}

run();
"""

PAGE_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>another site</title>
<script src="config.js"></script><script src="caller.js" defer></script></head>
<body><pre id="outcome"></pre></body></html>
"""


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # the test reads the page, not the request log


@contextmanager
def static_site(folder: Path) -> Iterator[str]:
    """Serve `folder` over HTTP on a free port of 127.0.0.1; yields its origin."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def write_site(folder: Path, api: str, key: str, question: str) -> Path:
    folder.mkdir()
    (folder / "index.html").write_text(PAGE_HTML)
    (folder / "caller.js").write_text(CALLER_JS)
    config = {"api": api, "key": key, "question": question}
    (folder / "config.js").write_text(f"window.CHATPROXY = {json.dumps(config)};\n")
    return folder


def outcome_of(browser: Browser, origin: str) -> dict[str, Any]:
    """Open `origin`'s page in chromium and return what its script got from chatproxy."""
    context = browser.new_context()
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(origin + "/index.html")
        expect(page.locator("body")).to_have_attribute("data-done", "true", timeout=20_000)
        outcome = json.loads(page.locator("#outcome").text_content() or "{}")
    finally:
        context.close()
    assert not errors, errors
    return outcome


def test_a_listed_origin_may_call_the_api_and_another_may_not(
    browser: Browser,
    make_server_with: Callable[..., Any],
    simulator: Any,
    tmp_path: Path,
) -> None:
    simulator.reset()
    allowed_question = f"Hello from a listed origin {uuid.uuid4().hex[:8]}"
    refused_question = f"Hello from another origin {uuid.uuid4().hex[:8]}"
    with (
        static_site(tmp_path / "allowed") as allowed,
        static_site(tmp_path / "other") as other,
    ):
        server = make_server_with(CHATPROXY_AUTH="keys", CHATPROXY_CORS_ORIGINS=allowed)
        with server.app.app_context():
            key = issue_key(f"cors-{uuid.uuid4().hex[:10]}")
        write_site(tmp_path / "allowed", server.url, key, allowed_question)
        write_site(tmp_path / "other", server.url, key, refused_question)

        listed = outcome_of(browser, allowed)
        refused = outcome_of(browser, other)

    ask = listed["ask"]
    assert ask["status"] == 200, ask
    assert f"You asked: {allowed_question}" in ask["body"]["answer"]
    conversation = ask["conversation"]  # readable: exposed by Access-Control-Expose-Headers
    assert conversation and conversation == ask["body"]["conversation_id"]
    assert listed["list"]["status"] == 200, listed["list"]
    assert [c["id"] for c in listed["list"]["body"]["data"]] == [conversation]
    # Errors come with the CORS headers too, so the other site can tell the reader why.
    assert listed["noKey"]["status"] == 401
    assert listed["noKey"]["body"]["error"]["code"] == "missing_api_key"

    assert refused == {
        "ask": {"error": "TypeError"},
        "list": {"error": "TypeError"},
        "noKey": {"error": "TypeError"},
    }
    # The preflight stopped the question: the upstream never saw it.
    sent = [
        message["content"]
        for request in simulator.requests
        for message in (request["json"] or {}).get("messages", [])
    ]
    assert allowed_question in sent
    assert refused_question not in sent
