"""One log line per request: request id in and out, key name, model, status, tokens, time."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import httpx2

from chatproxy.access.keys import issue_key
from tests.conftest import LiveServer, wait_for_record


def lines(records: list, request_id: str) -> list[str]:
    return [
        r.getMessage()
        for r in records
        if r.name == "chatproxy.requests" and request_id in r.getMessage()
    ]


def test_every_answer_carries_a_request_id(api_server: LiveServer) -> None:
    made = httpx2.get(f"{api_server.url}/healthz")
    assert len(made.headers["X-Request-Id"]) == 32
    mine = httpx2.get(f"{api_server.url}/healthz", headers={"X-Request-Id": "abc-123.X_y"})
    assert mine.headers["X-Request-Id"] == "abc-123.X_y"
    odd = httpx2.get(f"{api_server.url}/healthz", headers={"X-Request-Id": "a b\tc" + "x" * 80})
    assert odd.headers["X-Request-Id"] != "a b\tc" + "x" * 80


def test_a_json_line_names_the_key_model_status_and_tokens_but_no_secret(
    make_server_with: Callable[..., LiveServer], chatproxy_log: list
) -> None:
    server = make_server_with(CHATPROXY_AUTH="keys", CHATPROXY_LOG_FORMAT="json")
    name = f"log-{uuid.uuid4().hex[:8]}"
    with server.app.app_context():
        key = issue_key(name)
    request_id = uuid.uuid4().hex
    question = "A private question about my health"
    answer = httpx2.get(
        f"{server.url}/callChatGPT",
        params={"input": question, "format": "json", "key": key},
        headers={"X-Request-Id": request_id},
    ).json()
    wait_for_record(chatproxy_log, request_id)
    (line,) = lines(chatproxy_log, request_id)
    entry = json.loads(line)
    assert entry["request_id"] == request_id
    assert (entry["key"], entry["model"], entry["status"]) == (name, "gpt-4o-mini", 200)
    assert entry["path"] == "/callChatGPT"
    assert entry["prompt_tokens"] == answer["usage"]["prompt_tokens"]
    assert entry["completion_tokens"] == answer["usage"]["completion_tokens"]
    assert entry["outcome"] == "ok" and entry["ms"] > 0
    assert key not in line and question not in line and "key=" not in line


def test_a_stream_is_logged_when_it_ends_and_content_only_when_asked(
    make_server_with: Callable[..., LiveServer], chatproxy_log: list
) -> None:
    server = make_server_with(CHATPROXY_LOG_CONTENT="1")
    request_id = uuid.uuid4().hex
    with httpx2.stream(
        "GET",
        f"{server.url}/callChatGPT",
        params={"input": "Stream me", "stream": "1"},
        headers={"X-Request-Id": request_id},
    ) as response:
        body = response.read().decode()
    assert "event: done" in body
    wait_for_record(chatproxy_log, request_id)
    (line,) = lines(chatproxy_log, request_id)
    assert "status=200" in line and "outcome=ok" in line and "completion_tokens=" in line
    assert "input=Stream me" in line
