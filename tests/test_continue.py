"""Continue: an answer cut off by max_tokens goes on, through a real server and the simulator.

What the upstream is sent (the answer so far as the last assistant message,
then the request to go on), what the client gets (what was added), what the
store keeps (the whole answer, one message, its usage summed), and what is
refused. The page's Continue is in tests/test_answers_browser.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest

from chatproxy.simulator import Simulator
from chatproxy.store.conversations import CONTINUE_PROMPT
from tests.conftest import LiveServer
from tests.servers import free_port
from tests.sse_events import read_events

LONG = "Tell me everything [[sim: answer=long]]"


@pytest.fixture
def http(api_server: LiveServer) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=api_server.url, timeout=20) as client:
        yield client


def stored(http: httpx2.Client, conversation_id: str) -> list[dict[str, Any]]:
    response = http.get(f"/api/conversations/{conversation_id}")
    assert response.status_code == 200, response.text
    return response.json()["messages"]


def cut_off(http: httpx2.Client, max_tokens: int = 40) -> tuple[str, dict[str, Any]]:
    """A conversation whose answer was cut by `max_tokens`: (its id, the JSON answer)."""
    response = http.post(
        "/callChatGPT", json={"input": LONG, "max_tokens": max_tokens, "format": "json"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["finish_reason"] == "length"
    return response.headers["X-Conversation-Id"], response.json()


def whole_answer(http: httpx2.Client) -> str:
    """The simulator's answer to LONG when nothing cuts it."""
    return http.post("/callChatGPT", json={"input": LONG}).text


def test_continue_appends_to_the_stored_answer(http: httpx2.Client, simulator: Simulator) -> None:
    conversation_id, first = cut_off(http)
    before = stored(http, conversation_id)

    simulator.reset()
    path = f"/api/conversations/{conversation_id}/continue"
    response = http.post(path, json={"max_tokens": 40, "format": "json"})
    assert response.status_code == 200, response.text
    second = response.json()
    # The upstream got the answer so far as the last assistant message, then the ask to go on.
    assert simulator.requests[-1]["json"]["messages"] == [
        {"role": "user", "content": LONG},
        {"role": "assistant", "content": first["answer"]},
        {"role": "user", "content": CONTINUE_PROMPT},
    ]
    # The client gets what was added; the store keeps one answer, whole.
    assert second["answer"] and not second["answer"].startswith(first["answer"])
    assert second["finish_reason"] == "length"
    assert second["conversation_id"] == conversation_id
    assert second["message_id"] == first["message_id"]
    after = stored(http, conversation_id)
    assert [m["id"] for m in after] == [m["id"] for m in before]
    answer = after[-1]
    assert answer["content"] == first["answer"] + second["answer"]
    assert answer["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 80  # both requests' tokens
    assert answer["usage"]["prompt_tokens"] == (
        first["usage"]["prompt_tokens"] + second["usage"]["prompt_tokens"]
    )

    # Streamed, to the end: the deltas are the rest; the stored answer is the whole one.
    with http.stream("POST", path, json={"stream": True}) as streamed:
        assert streamed.status_code == 200
        events = read_events(streamed)
    rest = "".join(e.data["content"] for e in events if e.name == "delta")
    assert events[-1].name == "done" and events[-1].data["finish_reason"] == "stop"
    assert events[-1].data["message_id"] == first["message_id"]
    answer = stored(http, conversation_id)[-1]
    assert answer["content"] == first["answer"] + second["answer"] + rest == whole_answer(http)
    assert (answer["status"], answer["finish_reason"]) == ("ok", "stop")

    # Finished: nothing more to continue.
    again = http.post(path, json={})
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "nothing_to_continue"


def test_a_question_goes_on_from_the_whole_answer(
    http: httpx2.Client, simulator: Simulator
) -> None:
    conversation_id, first = cut_off(http)
    added = http.post(f"/api/conversations/{conversation_id}/continue", json={}).text
    simulator.reset()
    http.get("/callChatGPT", params={"input": "thanks", "conversation_id": conversation_id})
    assert simulator.requests[-1]["json"]["messages"] == [
        {"role": "user", "content": LONG},
        {"role": "assistant", "content": first["answer"] + added},
        {"role": "user", "content": "thanks"},
    ]


@pytest.fixture
def broken_upstream_server(make_server_with: Callable[..., LiveServer]) -> LiveServer:
    """A second server on the same store whose upstream refuses connections."""
    return make_server_with(OPENAI_BASE_URL=f"http://127.0.0.1:{free_port()}/v1")


def test_continue_that_fails_keeps_the_answer_as_it_was(
    http: httpx2.Client, broken_upstream_server: LiveServer
) -> None:
    conversation_id, _ = cut_off(http)
    before = stored(http, conversation_id)
    with httpx2.Client(base_url=broken_upstream_server.url, timeout=20) as other:
        response = other.post(f"/api/conversations/{conversation_id}/continue", json={})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unreachable"
    assert stored(http, conversation_id) == before  # still cut off: Continue may be tried again


def test_an_interrupted_answer_can_be_continued(http: httpx2.Client) -> None:
    question = "Tell me a story [[sim: fault=reset_mid_stream chunks=10 times=1]]"
    with http.stream("POST", "/callChatGPT", json={"input": question, "stream": True}) as broken:
        conversation_id = broken.headers["X-Conversation-Id"]
        partial = "".join(e.data["content"] for e in read_events(broken) if e.name == "delta")
    assert stored(http, conversation_id)[-1]["status"] == "interrupted"
    response = http.post(f"/api/conversations/{conversation_id}/continue", json={})
    assert response.status_code == 200, response.text
    answer = stored(http, conversation_id)[-1]
    assert answer["content"] == partial + response.text
    assert (answer["status"], answer["error"]) == ("ok", None)


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"max_tokens": 0}, 400, "invalid_value", "max_tokens"),
        ({"temperature": "hot"}, 400, "invalid_type", "temperature"),
        ({"model": "not-a-model"}, 403, "model_not_allowed", "model"),
    ],
)
def test_continue_refuses_bad_parameters(
    http: httpx2.Client, body: dict[str, Any], status: int, code: str, param: str
) -> None:
    conversation_id, _ = cut_off(http)
    before = stored(http, conversation_id)
    response = http.post(f"/api/conversations/{conversation_id}/continue", json=body)
    assert response.status_code == status
    assert response.json()["error"]["param"] == param
    assert response.json()["error"]["code"] == code
    assert stored(http, conversation_id) == before


def test_only_a_cut_off_last_answer_continues(http: httpx2.Client) -> None:
    finished = http.get("/callChatGPT", params={"input": "hello"})
    conversation_id = finished.headers["X-Conversation-Id"]
    response = http.post(f"/api/conversations/{conversation_id}/continue", json={})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "nothing_to_continue")

    # A cut-off answer followed by another question is no longer the last one.
    conversation_id, _ = cut_off(http)
    http.get("/callChatGPT", params={"input": "hello", "conversation_id": conversation_id})
    response = http.post(f"/api/conversations/{conversation_id}/continue", json={})
    assert response.json()["error"]["code"] == "nothing_to_continue"

    missing = http.post(f"/api/conversations/{'0' * 32}/continue", json={})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "conversation_not_found"


def test_continue_is_not_bound_by_the_input_limit(
    make_server_with: Callable[..., LiveServer],
) -> None:
    # Continue's own request to go on is longer than the questions allowed here.
    server = make_server_with(CHATPROXY_MAX_INPUT_CHARS="20")
    with httpx2.Client(base_url=server.url, timeout=20) as http:
        first = http.post("/callChatGPT", json={"input": "[[sim: words=80]]", "max_tokens": 20})
        conversation_id = first.headers["X-Conversation-Id"]
        response = http.post(f"/api/conversations/{conversation_id}/continue", json={})
        assert response.status_code == 200, response.text
        assert stored(http, conversation_id)[-1]["content"] == first.text + response.text


def test_an_answer_too_long_to_continue_in_the_window_is_refused(
    make_server_with: Callable[..., LiveServer], simulator: Simulator
) -> None:
    model = "llama3.1:8b"  # no known window: CHATPROXY_CONTEXT_WINDOW's
    server = make_server_with(
        CHATPROXY_MODELS=model,
        CHATPROXY_MODEL=model,
        CHATPROXY_CONTEXT_WINDOW="400",
        CHATPROXY_MAX_TOKENS="250",
    )
    with httpx2.Client(base_url=server.url, timeout=20) as http:
        first = http.post("/callChatGPT", json={"input": LONG, "max_tokens": 250})
        conversation_id = first.headers["X-Conversation-Id"]
        before = stored(http, conversation_id)
        asked = len(simulator.requests)
        path = f"/api/conversations/{conversation_id}/continue"
        response = http.post(path, json={"max_tokens": 200})
        assert response.status_code == 400
        error = response.json()["error"]
        assert (error["code"], error["param"]) == ("context_length_exceeded", "max_tokens")
        assert len(simulator.requests) == asked  # nothing was sent upstream
        assert stored(http, conversation_id) == before
        # With room for it, the same answer goes on.
        assert http.post(path, json={"max_tokens": 50}).status_code == 200
