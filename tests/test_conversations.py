"""Conversations that remember, through a real server: multi-turn by GET and by the page's API,
what the upstream is sent, trimming, nothing lost, Retry and Regenerate, export and import.

The store is the session's database (SQLite, or PostgreSQL with TEST_DATABASE_URL).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest

from chatproxy.simulator import Simulator
from chatproxy.tokens import count_messages
from tests.conftest import LiveServer
from tests.servers import free_port
from tests.sse_events import read_events

WORLD_CUP = ("谁赢了2022年世界杯?", "在哪里举办的?", "梅西打进了多少个球?")


@pytest.fixture
def http(api_server: LiveServer) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=api_server.url, timeout=20) as client:
        yield client


def sent_messages(simulator: Simulator) -> list[dict[str, Any]]:
    """The `messages` of the last request the upstream received."""
    return simulator.requests[-1]["json"]["messages"]


def conversation(http: httpx2.Client, conversation_id: str) -> dict[str, Any]:
    response = http.get(f"/api/conversations/{conversation_id}")
    assert response.status_code == 200, response.text
    return response.json()


def ask_streamed(http: httpx2.Client, path: str = "/callChatGPT", **body: Any) -> tuple[Any, list]:
    with http.stream("POST", path, json={"stream": True, **body}) as response:
        return response, read_events(response)


def test_world_cup_dialogue_through_get_alone(http: httpx2.Client, simulator: Simulator) -> None:
    simulator.reset()
    first = http.get("/callChatGPT", params={"input": WORLD_CUP[0]})
    assert first.status_code == 200
    conversation_id = first.headers["X-Conversation-Id"]
    answers = [first.text]
    for question in WORLD_CUP[1:]:
        response = http.get(
            "/callChatGPT", params={"input": question, "conversation_id": conversation_id}
        )
        assert response.status_code == 200
        assert response.headers["X-Conversation-Id"] == conversation_id
        answers.append(response.text)

    # Each request carried the whole dialogue so far, so the later answers know the context.
    sent = [request["json"]["messages"] for request in simulator.requests]
    assert [len(messages) for messages in sent] == [1, 3, 5]
    assert sent[2] == [
        {"role": "user", "content": WORLD_CUP[0]},
        {"role": "assistant", "content": answers[0]},
        {"role": "user", "content": WORLD_CUP[1]},
        {"role": "assistant", "content": answers[1]},
        {"role": "user", "content": WORLD_CUP[2]},
    ]
    assert "卡塔尔" in answers[1]
    assert "7个球" in answers[2]

    stored = conversation(http, conversation_id)
    assert stored["title"] == WORLD_CUP[0]
    assert [(m["role"], m["content"], m["status"]) for m in stored["messages"]] == [
        (role, text, "ok")
        for question, answer in zip(WORLD_CUP, answers, strict=True)
        for role, text in (("user", question), ("assistant", answer))
    ]


def test_world_cup_dialogue_through_the_page_api(http: httpx2.Client, simulator: Simulator) -> None:
    simulator.reset()
    conversation_id = None
    streamed = []
    for question in WORLD_CUP:
        body: dict[str, Any] = {"input": question}
        if conversation_id:
            body["conversation_id"] = conversation_id
        response, events = ask_streamed(http, **body)
        conversation_id = response.headers["X-Conversation-Id"]
        done = events[-1]
        assert done.name == "done"
        assert done.data["conversation_id"] == conversation_id
        streamed.append(("".join(e.data["content"] for e in events if e.name == "delta"), done))
    assert len(sent_messages(simulator)) == 5
    assert "7个球" in streamed[2][0]

    stored = conversation(http, conversation_id)
    answers = [m for m in stored["messages"] if m["role"] == "assistant"]
    assert [m["content"] for m in answers] == [text for text, _ in streamed]
    assert [m["id"] for m in answers] == [done.data["message_id"] for _, done in streamed]
    # Usage reported by the upstream is kept per answer and summed for the conversation.
    reported = streamed[-1][1].data["usage"]
    assert answers[-1]["usage"] == {
        key: reported[key] for key in ("prompt_tokens", "completion_tokens", "total_tokens")
    }
    assert stored["usage"]["completion_tokens"] == sum(
        done.data["usage"]["completion_tokens"] for _, done in streamed
    )
    assert stored["cost"] == pytest.approx(sum(done.data["cost"] for _, done in streamed))


def test_persona_and_model_carry_on_in_the_conversation(
    http: httpx2.Client, simulator: Simulator
) -> None:
    first = http.get(
        "/callChatGPT", params={"input": "Review my code", "persona": "engineer", "model": "gpt-4o"}
    )
    conversation_id = first.headers["X-Conversation-Id"]
    http.get("/callChatGPT", params={"input": "And the tests?", "conversation_id": conversation_id})
    sent = simulator.requests[-1]["json"]
    assert sent["model"] == "gpt-4o"
    assert sent["messages"][0]["role"] == "system"
    assert sent["messages"][-1] == {"role": "user", "content": "And the tests?"}
    assert conversation(http, conversation_id)["persona"] == "engineer"


def test_json_answer_names_the_conversation(http: httpx2.Client) -> None:
    response = http.get("/callChatGPT", params={"input": "hello", "format": "json"})
    body = response.json()
    assert body["conversation_id"] == response.headers["X-Conversation-Id"]
    stored = conversation(http, body["conversation_id"])
    assert stored["messages"][-1]["id"] == body["message_id"]
    assert stored["messages"][-1]["content"] == body["answer"]


@pytest.mark.parametrize(
    ("conversation_id", "status", "code"),
    [
        ("0" * 32, 404, "conversation_not_found"),
        ("not-an-id", 400, "invalid_conversation_id"),
        ("../../etc/passwd", 400, "invalid_conversation_id"),
    ],
)
def test_unknown_or_malformed_conversation_id_is_refused(
    http: httpx2.Client, simulator: Simulator, conversation_id: str, status: int, code: str
) -> None:
    simulator.reset()
    response = http.get("/callChatGPT", params={"input": "hi", "conversation_id": conversation_id})
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert simulator.requests == []


def test_long_conversation_is_trimmed_oldest_first(
    make_server_with: Callable[..., LiveServer], simulator: Simulator
) -> None:
    window, max_tokens, model = 400, 60, "llama3.1:8b"
    server = make_server_with(
        CHATPROXY_MODELS=model,
        CHATPROXY_MODEL=model,
        CHATPROXY_CONTEXT_WINDOW=str(window),
        CHATPROXY_MAX_TOKENS=str(max_tokens),
    )
    with httpx2.Client(base_url=server.url, timeout=20) as http:
        conversation_id = None
        history: list[dict[str, str]] = []
        for turn in range(8):
            question = f"Question {turn}: tell me more. [[sim: words=40]]"
            params = {"input": question}
            if conversation_id:
                params["conversation_id"] = conversation_id
            response = http.get("/callChatGPT", params=params)
            assert response.status_code == 200, response.text
            conversation_id = response.headers["X-Conversation-Id"]
            sent = sent_messages(simulator)
            # What was sent fits, counted the way tiktoken counts, with room for the answer ...
            assert count_messages(sent, model) + max_tokens <= window
            # ... and is the newest part of the dialogue: the oldest turns went first.
            assert sent[-1] == {"role": "user", "content": question}
            kept = sent[:-1]
            assert kept == history[len(history) - len(kept) :]
            history += [
                {"role": "user", "content": question},
                {"role": "assistant", "content": response.text},
            ]
        assert len(kept) < len(history) - 2, "the conversation never grew past the window"
        assert len(kept) >= 2, "no earlier turn was kept at all"
        # The whole conversation stays stored, trimmed or not.
        stored = conversation(http, conversation_id)
        assert len(stored["messages"]) == 16


def test_question_too_long_is_refused_and_nothing_is_stored(
    make_server_with: Callable[..., LiveServer], simulator: Simulator
) -> None:
    server = make_server_with(
        CHATPROXY_MODELS="llama3.1:8b",
        CHATPROXY_MODEL="llama3.1:8b",
        CHATPROXY_CONTEXT_WINDOW="300",
        CHATPROXY_MAX_TOKENS="100",
    )
    simulator.reset()
    with httpx2.Client(base_url=server.url, timeout=20) as http:
        before = http.get("/api/conversations", params={"limit": 200}).json()["data"]
        response = http.get("/callChatGPT", params={"input": "word " * 400})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "context_length_exceeded"
        assert "X-Conversation-Id" not in response.headers
        after = http.get("/api/conversations", params={"limit": 200}).json()["data"]
    assert simulator.requests == []
    assert after == before


def test_stream_broken_by_the_upstream_keeps_the_partial_answer(http: httpx2.Client) -> None:
    response, events = ask_streamed(
        http, input="Tell me a story [[sim: fault=reset_mid_stream chunks=10]]"
    )
    assert events[-1].name == "error"
    partial = "".join(e.data["content"] for e in events if e.name == "delta")
    assert partial
    stored = conversation(http, response.headers["X-Conversation-Id"])
    question, answer = stored["messages"]
    assert question["status"] == "ok"
    assert answer["status"] == "interrupted"
    assert answer["content"] == partial
    assert answer["error"]["code"] == "upstream_interrupted"


@pytest.fixture
def broken_upstream_server(make_server_with: Callable[..., LiveServer]) -> LiveServer:
    """A second server on the same store whose upstream refuses connections."""
    return make_server_with(OPENAI_BASE_URL=f"http://127.0.0.1:{free_port()}/v1")


def test_upstream_error_keeps_the_question_once_however_often_it_fails(
    http: httpx2.Client, broken_upstream_server: LiveServer
) -> None:
    response = http.get("/callChatGPT", params={"input": "Flaky? [[sim: fault=server_error]]"})
    assert response.status_code == 502
    conversation_id = response.headers["X-Conversation-Id"]
    (question,) = conversation(http, conversation_id)["messages"]
    assert question["status"] == "error"
    assert question["error"]["message"]

    # Retry through a host whose upstream is down: still an error, still stored once.
    with httpx2.Client(base_url=broken_upstream_server.url, timeout=20) as other:
        failed = other.post(f"/api/conversations/{conversation_id}/regenerate", json={})
        assert failed.status_code == 502
        assert failed.headers["X-Conversation-Id"] == conversation_id
    (still,) = conversation(http, conversation_id)["messages"]
    assert (still["id"], still["status"]) == (question["id"], "error")
    assert still["error"]["code"] == "upstream_unreachable"  # the latest failure


def test_retry_after_an_outage_answers_the_stored_question(
    http: httpx2.Client, simulator: Simulator, broken_upstream_server: LiveServer
) -> None:
    with httpx2.Client(base_url=broken_upstream_server.url, timeout=20) as other:
        response = other.get("/callChatGPT", params={"input": WORLD_CUP[0]})
        assert response.status_code == 502
        conversation_id = response.headers["X-Conversation-Id"]
    (question,) = conversation(http, conversation_id)["messages"]
    assert (question["status"], question["error"]["code"]) == ("error", "upstream_unreachable")

    # Retry through a host whose upstream works: the stored question gets its answer.
    simulator.reset()
    retried = http.post(f"/api/conversations/{conversation_id}/regenerate", json={"format": "json"})
    assert retried.status_code == 200, retried.text
    assert sent_messages(simulator) == [{"role": "user", "content": WORLD_CUP[0]}]
    messages = conversation(http, conversation_id)["messages"]
    assert [(m["role"], m["status"]) for m in messages] == [("user", "ok"), ("assistant", "ok")]
    assert messages[0]["error"] is None
    assert messages[1]["content"] == retried.json()["answer"]


def test_regenerate_replaces_the_last_answer(http: httpx2.Client, simulator: Simulator) -> None:
    first = http.get("/callChatGPT", params={"input": "Name a colour"})
    conversation_id = first.headers["X-Conversation-Id"]
    http.get("/callChatGPT", params={"input": "Another one", "conversation_id": conversation_id})
    before = conversation(http, conversation_id)["messages"]

    response, events = ask_streamed(http, f"/api/conversations/{conversation_id}/regenerate")
    assert events[-1].name == "done"
    assert response.headers["X-Conversation-Id"] == conversation_id
    # The upstream was asked the last question again, with the first turn as history.
    assert sent_messages(simulator) == [
        {"role": "user", "content": "Name a colour"},
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "Another one"},
    ]
    after = conversation(http, conversation_id)["messages"]
    assert [m["role"] for m in after] == ["user", "assistant", "user", "assistant"]
    assert after[:3] == before[:3]
    assert after[3]["id"] == events[-1].data["message_id"] != before[3]["id"]


def test_regenerate_that_fails_keeps_the_old_answer(
    http: httpx2.Client, broken_upstream_server: LiveServer
) -> None:
    first = http.get("/callChatGPT", params={"input": "Keep this answer"})
    conversation_id = first.headers["X-Conversation-Id"]
    before = conversation(http, conversation_id)["messages"]
    with httpx2.Client(base_url=broken_upstream_server.url, timeout=20) as other:
        response = other.post(f"/api/conversations/{conversation_id}/regenerate", json={})
    assert response.status_code == 502
    assert conversation(http, conversation_id)["messages"] == before


def test_client_that_leaves_mid_answer_keeps_it_as_interrupted(http: httpx2.Client) -> None:
    question = "A long one [[sim: chunks=200 delay=0.05]]"
    with http.stream("POST", "/callChatGPT", json={"input": question, "stream": True}) as response:
        conversation_id = response.headers["X-Conversation-Id"]
        lines = response.iter_lines()
        received = ""
        while not received:
            line = next(lines)
            if line.startswith("data:"):
                received = json.loads(line[5:]).get("content", "")
    # The connection is closed here, like a closed tab; the server notices on its next write.
    answer = wait_for_answer(http, conversation_id)
    assert answer["status"] == "interrupted"
    assert answer["content"].startswith(received)
    assert answer["finish_reason"] is None


def wait_for_answer(http: httpx2.Client, conversation_id: str) -> dict[str, Any]:
    """The conversation's answer once the server has stored it (it does so as the stream ends)."""
    deadline = time.monotonic() + 15
    while True:
        messages = conversation(http, conversation_id)["messages"]
        if messages[-1]["role"] == "assistant":
            return messages[-1]
        assert time.monotonic() < deadline, "the interrupted answer was never stored"
        time.sleep(0.05)


def test_list_search_rename_and_delete(http: httpx2.Client) -> None:
    marker = f"zebra-{time.monotonic_ns()}"
    made = http.get("/callChatGPT", params={"input": f"About the {marker} crossing"})
    conversation_id = made.headers["X-Conversation-Id"]
    listed = http.get("/api/conversations", params={"q": marker}).json()["data"]
    assert [c["id"] for c in listed] == [conversation_id]
    assert listed[0]["message_count"] == 2
    newest = http.get("/api/conversations", params={"limit": 1}).json()["data"]
    assert newest[0]["id"] == conversation_id

    renamed = http.patch(f"/api/conversations/{conversation_id}", json={"title": "Road safety"})
    assert renamed.json()["title"] == "Road safety"
    assert http.get("/api/conversations", params={"q": marker}).json()["data"] == []
    assert http.get("/api/conversations", params={"q": "road SAFETY"}).json()["data"]

    assert http.delete(f"/api/conversations/{conversation_id}").status_code == 204
    gone = http.get(f"/api/conversations/{conversation_id}")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "conversation_not_found"


@pytest.mark.parametrize(
    ("body", "param"),
    [({"title": ""}, "title"), ({"title": "x" * 201}, "title"), ({}, "title")],
)
def test_rename_refuses_bad_titles(http: httpx2.Client, body: dict, param: str) -> None:
    made = http.get("/callChatGPT", params={"input": "title me"})
    response = http.patch(f"/api/conversations/{made.headers['X-Conversation-Id']}", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_search_treats_wildcards_as_plain_text(http: httpx2.Client) -> None:
    marker = time.monotonic_ns()
    wanted = http.get("/callChatGPT", params={"input": f"{marker} is 100% sure"})
    http.get("/callChatGPT", params={"input": f"{marker} is 1000 sure"})
    found = http.get("/api/conversations", params={"q": f"{marker} is 10_%"}).json()["data"]
    assert found == []
    found = http.get("/api/conversations", params={"q": "0% sure"}).json()["data"]
    assert [c["id"] for c in found] == [wanted.headers["X-Conversation-Id"]]


def test_export_markdown_and_json_and_import_back(http: httpx2.Client) -> None:
    first = http.get("/callChatGPT", params={"input": WORLD_CUP[0], "persona": "assistant"})
    conversation_id = first.headers["X-Conversation-Id"]
    http.get("/callChatGPT", params={"input": WORLD_CUP[1], "conversation_id": conversation_id})
    original = conversation(http, conversation_id)

    markdown = http.get(f"/api/conversations/{conversation_id}/export", params={"format": "md"})
    assert markdown.headers["Content-Type"].startswith("text/markdown")
    assert "attachment" in markdown.headers["Content-Disposition"]
    text = markdown.text
    assert text.startswith(f"# {WORLD_CUP[0]}\n")
    assert text.count("## user") == 2 and text.count("## assistant") == 2
    assert text.index(WORLD_CUP[0]) < text.index(WORLD_CUP[1])
    assert "卡塔尔" in text[text.index(WORLD_CUP[1]) :]

    exported = http.get(f"/api/conversations/{conversation_id}/export", params={"format": "json"})
    data = exported.json()
    assert data["messages"] == [
        {"role": m["role"], "content": m["content"]} for m in original["messages"]
    ]
    assert data["metadata"]["persona"] == "assistant"

    imported = http.post("/api/conversations/import", json=data)
    assert imported.status_code == 201
    copy = imported.json()
    assert copy["id"] != conversation_id
    assert copy["title"] == original["title"]
    assert copy["usage"] == original["usage"]
    assert [(m["role"], m["content"], m["status"]) for m in copy["messages"]] == [
        (m["role"], m["content"], m["status"]) for m in original["messages"]
    ]
    # An imported conversation goes on like any other.
    response = http.get(
        "/callChatGPT", params={"input": WORLD_CUP[2], "conversation_id": copy["id"]}
    )
    assert "7个球" in response.text


def test_import_of_a_plain_openai_messages_list(http: httpx2.Client) -> None:
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is SSE?"},
        {"role": "assistant", "content": "Server-sent events."},
    ]
    response = http.post("/api/conversations/import", json={"messages": messages})
    assert response.status_code == 201
    copy = response.json()
    assert copy["title"] == "What is SSE?"
    assert [{"role": m["role"], "content": m["content"]} for m in copy["messages"]] == messages


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"messages": []},
        {"messages": "hi"},
        {"messages": [{"role": "wizard", "content": "x"}]},
        {"messages": [{"role": "user", "content": 5}]},
    ],
)
def test_import_refuses_what_is_not_a_conversation(http: httpx2.Client, body: Any) -> None:
    response = http.post("/api/conversations/import", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["message"]
