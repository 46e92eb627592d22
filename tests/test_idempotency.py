"""Idempotency-Key: a request retried with the same key is answered once, through a real server.

A retry of an answered request gets the first answer (`Idempotent-Replayed:
true`) in the format it asks for: the upstream (the simulator) was asked once,
the conversation holds one question and one answer, the ledger counts one
request. A duplicate sent while the first is answered gets 409, the key used
for another request 422; another access key's same value is a key of its own;
a first request that failed gives its key back. The store is the session's
database (SQLite, or PostgreSQL with TEST_DATABASE_URL).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx2
import openai
import pytest
from flask import Flask
from sqlalchemy import func, select, update

from chatproxy.access.keys import issue_key
from chatproxy.simulator import Simulator
from chatproxy.store.database import db
from chatproxy.store.models import IdempotencyKey, UsageDay, utcnow
from tests.conftest import LiveServer, serve
from tests.sse_events import Event, read_events

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
CHAT_MODEL, LEGACY_MODEL = "gpt-4o-mini", "gpt-3.5-turbo-instruct"
MODELS = f"{CHAT_MODEL},gpt-4o,{LEGACY_MODEL}"


@pytest.fixture(scope="module")
def server(make_app: Callable[..., Flask]) -> Iterator[LiveServer]:
    """A server that needs access keys, so each test's ledger and keys are its own."""
    with serve(make_app(CHATPROXY_AUTH="keys", CHATPROXY_MODELS=MODELS)) as live:
        yield live


@dataclass
class Caller:
    """An access key of the server: its name (the ledger's and the keys' owner) and the key."""

    server: LiveServer
    name: str
    key: str

    def http(self) -> httpx2.Client:
        headers = {"Authorization": f"Bearer {self.key}"}
        return httpx2.Client(base_url=self.server.url, headers=headers, timeout=30)

    def sdk(self) -> openai.OpenAI:
        url = f"{self.server.url}/v1"
        return openai.OpenAI(base_url=url, api_key=self.key, max_retries=0, timeout=30)


def new_caller(server: LiveServer, **limits: Any) -> Caller:
    name = f"idem-{uuid.uuid4().hex[:10]}"
    with server.app.app_context():
        return Caller(server, name, issue_key(name, **limits))


@pytest.fixture
def caller(server: LiveServer) -> Caller:
    return new_caller(server)


def marked(text: str) -> tuple[str, str]:
    """`text` with a mark of its own, and the mark: what the upstream got of it is counted."""
    mark = f"#{uuid.uuid4().hex[:12]}"
    return f"{text} {mark}", mark


def asked_upstream(simulator: Simulator, mark: str) -> int:
    """How many requests the upstream received whose question carries `mark`."""
    count = 0
    for request in simulator.requests:
        body = request["json"] or {}
        messages = body.get("messages") or [{"content": body.get("prompt", "")}]
        count += mark in str(messages[-1]["content"])
    return count


def ledger_requests(caller: Caller) -> int:
    """The requests the ledger counts for `caller`, all days and models summed."""
    with caller.server.app.app_context():
        total = db.session.scalar(
            select(func.coalesce(func.sum(UsageDay.requests), 0)).where(
                UsageDay.key_name == caller.name
            )
        )
        db.session.remove()
    return int(total or 0)


def wait_for_ledger(caller: Caller, requests: int) -> None:
    """Wait until the ledger counts `requests` (a /v1 stream is charged just after its end)."""
    deadline = time.monotonic() + 15
    while ledger_requests(caller) < requests:
        assert time.monotonic() < deadline, "the answer was never charged"
        time.sleep(0.05)


def change_key_row(caller: Caller, **values: Any) -> None:
    """Set `values` on the rows of `caller`'s idempotency keys, as time or a dead worker would."""
    with caller.server.app.app_context():
        db.session.execute(
            update(IdempotencyKey).where(IdempotencyKey.owner == caller.name).values(**values)
        )
        db.session.commit()
        db.session.remove()


def key_rows(caller: Caller) -> int:
    with caller.server.app.app_context():
        rows = db.session.scalar(select(func.count()).where(IdempotencyKey.owner == caller.name))
        db.session.remove()
    return int(rows or 0)


def ask_streamed(http: httpx2.Client, params: dict[str, Any], key: str) -> tuple[Any, list[Event]]:
    with http.stream(
        "GET", "/callChatGPT", params={**params, "stream": "1"}, headers={HEADER: key}
    ) as response:
        return response, read_events(response)


def text_of(events: list[Event]) -> str:
    return "".join(event.data["content"] for event in events if event.name == "delta")


def chat(content: str, **params: Any) -> dict[str, Any]:
    return {"model": CHAT_MODEL, "messages": [{"role": "user", "content": content}], **params}


# --- a retry gets the first answer ------------------------------------------------------


@pytest.mark.parametrize("first", ["text", "sse"], ids=["first as text", "first streamed"])
def test_a_retried_question_is_asked_once_and_answered_in_any_format(
    caller: Caller, simulator: Simulator, first: str
) -> None:
    question, mark = marked("Who won the 2022 World Cup?")
    key = str(uuid.uuid4())
    params = {"input": question}
    with caller.http() as http:
        if first == "text":
            response = http.get("/callChatGPT", params=params, headers={HEADER: key})
            answer, done = response.text, None
        else:
            response, events = ask_streamed(http, params, key)
            answer, done = text_of(events), events[-1].data
        assert response.status_code == 200
        assert REPLAYED not in response.headers
        conversation_id = response.headers["X-Conversation-Id"]

        again = http.get("/callChatGPT", params=params, headers={HEADER: key})
        as_json = http.get(
            "/callChatGPT", params=params, headers={HEADER: key, "Accept": "application/json"}
        )
        streamed, events = ask_streamed(http, params, key)
        stored = http.get(f"/api/conversations/{conversation_id}").json()

    for replayed in (again, as_json, streamed):
        assert replayed.status_code == 200
        assert replayed.headers[REPLAYED] == "true"
        assert replayed.headers["X-Conversation-Id"] == conversation_id
    assert again.text == answer
    assert [(m["role"], m["content"], m["status"]) for m in stored["messages"]] == [
        ("user", question, "ok"),
        ("assistant", answer, "ok"),
    ]
    answer_id = stored["messages"][1]["id"]
    body = as_json.json()
    assert body["answer"] == answer
    assert (body["conversation_id"], body["message_id"], body["stored"]) == (
        conversation_id,
        answer_id,
        True,
    )
    assert [event.name for event in events] == ["delta", "done"]
    assert text_of(events) == answer
    assert events[-1].data["message_id"] == answer_id
    if done is not None:
        assert events[-1].data == done  # the first stream's own `done`, field for field
    assert asked_upstream(simulator, mark) == 1
    assert ledger_requests(caller) == 1


def resource(client: openai.OpenAI, endpoint: str) -> Any:
    return client.chat.completions if endpoint == "chat" else client.completions


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_a_retried_v1_request_gets_the_upstreams_first_answer(
    caller: Caller, simulator: Simulator, endpoint: str, stream: bool
) -> None:
    prompt, mark = marked("Say hello")
    if endpoint == "chat":
        params = chat(prompt, stream=stream)
    else:
        params = {"model": LEGACY_MODEL, "prompt": prompt, "stream": stream}
    key = str(uuid.uuid4())
    create = resource(caller.sdk(), endpoint).with_raw_response.create

    first = create(**params, extra_headers={HEADER: key})
    answer = list(first.parse()) if stream else [first.parse()]
    wait_for_ledger(caller, 1)
    again = create(**params, extra_headers={HEADER: key})
    replayed = list(again.parse()) if stream else [again.parse()]

    assert first.headers.get(REPLAYED) is None
    assert again.headers[REPLAYED] == "true"
    # The simulator gives every answer a new id: the same ids mean the same answer.
    assert [item.model_dump() for item in replayed] == [item.model_dump() for item in answer]
    assert asked_upstream(simulator, mark) == 1
    assert ledger_requests(caller) == 1


def test_without_a_key_each_request_is_asked_and_nothing_is_recorded(
    caller: Caller, simulator: Simulator
) -> None:
    question, mark = marked("Twice, please")
    with caller.http() as http:
        answers = [http.get("/callChatGPT", params={"input": question}) for _ in range(2)]
    assert [response.status_code for response in answers] == [200, 200]
    assert all(REPLAYED not in response.headers for response in answers)
    assert asked_upstream(simulator, mark) == 2
    assert key_rows(caller) == 0


# --- what a retry cannot have -------------------------------------------------------------


def send(client: httpx2.AsyncClient | httpx2.Client, route: str, question: str, key: str) -> Any:
    """GET /callChatGPT or POST /v1/chat/completions with `question` and the key."""
    headers = {HEADER: key}
    if route == "/callChatGPT":
        return client.get(route, params={"input": question}, headers=headers)
    return client.post(route, json=chat(question), headers=headers)


@pytest.mark.parametrize("route", ["/callChatGPT", "/v1/chat/completions"])
def test_a_duplicate_sent_while_the_first_is_answered_gets_409(
    caller: Caller, simulator: Simulator, route: str
) -> None:
    question, mark = marked("Take your time [[sim: latency=2]]")
    key = str(uuid.uuid4())

    async def both_at_once() -> list[httpx2.Response]:
        headers = {"Authorization": f"Bearer {caller.key}"}
        async with httpx2.AsyncClient(
            base_url=caller.server.url, headers=headers, timeout=30
        ) as client:
            return list(
                await asyncio.gather(*(send(client, route, question, key) for _ in range(2)))
            )

    responses = asyncio.run(both_at_once())

    assert sorted(response.status_code for response in responses) == [200, 409]
    (answered,) = (response for response in responses if response.status_code == 200)
    (refused,) = (response for response in responses if response.status_code == 409)
    error = refused.json()["error"]
    assert (error["code"], error["type"], error["param"]) == (
        "idempotency_key_in_use",
        "invalid_request_error",
        HEADER,
    )
    assert int(refused.headers["Retry-After"]) >= 1
    # Once the first is answered, the duplicate sent again gets that answer.
    with caller.http() as http:
        again = send(http, route, question, key)
    assert again.status_code == 200
    assert again.headers[REPLAYED] == "true"
    assert again.content == answered.content
    assert asked_upstream(simulator, mark) == 1
    assert ledger_requests(caller) == 1


@pytest.mark.parametrize("other", ["another question", "another route", "another method"])
def test_the_key_of_an_answered_request_sent_with_another_gets_422(
    caller: Caller, simulator: Simulator, other: str
) -> None:
    question, mark = marked("First question")
    key = str(uuid.uuid4())
    with caller.http() as http:
        first = http.get("/callChatGPT", params={"input": question}, headers={HEADER: key})
        assert first.status_code == 200
        if other == "another question":
            reused = http.get(
                "/callChatGPT", params={"input": f"Second question {mark}"}, headers={HEADER: key}
            )
        elif other == "another route":
            reused = http.post("/v1/chat/completions", json=chat(question), headers={HEADER: key})
        else:
            reused = http.post("/callChatGPT", json={"input": question}, headers={HEADER: key})
    assert reused.status_code == 422
    error = reused.json()["error"]
    assert (error["code"], error["type"], error["param"]) == (
        "idempotency_key_reused",
        "invalid_request_error",
        HEADER,
    )
    assert asked_upstream(simulator, mark) == 1


@pytest.mark.parametrize(
    "key",
    ["", "x" * 256, "tab\there", "ключ".encode()],
    ids=["empty", "256 characters", "a control character", "not ASCII"],
)
def test_a_malformed_key_is_refused_before_anything_is_asked(
    caller: Caller, simulator: Simulator, key: str | bytes
) -> None:
    question, mark = marked("Hello")
    with caller.http() as http:
        response = http.get("/callChatGPT", params={"input": question}, headers={HEADER: key})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_idempotency_key", HEADER)
    assert asked_upstream(simulator, mark) == 0


# --- keys of their own, keys given back, keys forgotten ------------------------------------


def test_another_access_key_with_the_same_idempotency_key_is_answered_on_its_own(
    server: LiveServer, simulator: Simulator
) -> None:
    question, mark = marked("Shared words")
    key = "order-1"  # two callers may well pick the same simple key
    callers = [new_caller(server), new_caller(server)]
    responses = []
    for each in callers:
        with each.http() as http:
            responses.append(
                http.get("/callChatGPT", params={"input": question}, headers={HEADER: key})
            )
    assert [response.status_code for response in responses] == [200, 200]
    assert all(REPLAYED not in response.headers for response in responses)
    conversations = {response.headers["X-Conversation-Id"] for response in responses}
    assert len(conversations) == 2
    assert asked_upstream(simulator, mark) == 2
    assert [ledger_requests(each) for each in callers] == [1, 1]


@pytest.mark.parametrize("route", ["/callChatGPT", "/v1/chat/completions"])
def test_a_first_request_that_failed_can_be_tried_again_with_its_key(
    caller: Caller, simulator: Simulator, route: str
) -> None:
    question, mark = marked("Flaky [[sim: fault=server_error times=1]]")
    key = str(uuid.uuid4())
    with caller.http() as http:
        failed = send(http, route, question, key)
        retried = send(http, route, question, key)
        again = send(http, route, question, key)
    assert failed.status_code == 502
    assert retried.status_code == 200
    assert REPLAYED not in retried.headers  # asked, not replayed: the failure kept nothing
    assert again.headers[REPLAYED] == "true"
    assert again.content == retried.content
    assert asked_upstream(simulator, mark) == 2


def test_a_retry_after_the_days_quota_ran_out_still_gets_its_answer(
    server: LiveServer, simulator: Simulator
) -> None:
    caller = new_caller(server, tokens_per_day=1)  # the first answer uses it up
    question, mark = marked("The last one today")
    key = str(uuid.uuid4())
    with caller.http() as http:
        first = http.get("/callChatGPT", params={"input": question}, headers={HEADER: key})
        other = http.get("/callChatGPT", params={"input": question}, headers={HEADER: "new"})
        again = http.get("/callChatGPT", params={"input": question}, headers={HEADER: key})
    assert first.status_code == 200
    assert other.status_code == 429
    assert again.status_code == 200
    assert again.headers[REPLAYED] == "true"
    assert again.text == first.text
    assert asked_upstream(simulator, mark) == 1


def test_a_key_is_forgotten_after_a_day(caller: Caller, simulator: Simulator) -> None:
    question, mark = marked("Yesterday's question")
    key = str(uuid.uuid4())
    with caller.http() as http:
        first = http.get("/callChatGPT", params={"input": question}, headers={HEADER: key})
        assert first.status_code == 200
        change_key_row(caller, created_at=utcnow() - timedelta(hours=24, minutes=1))
        later = http.get("/callChatGPT", params={"input": question}, headers={HEADER: key})
        again = http.get("/callChatGPT", params={"input": question}, headers={HEADER: key})
    assert later.status_code == 200
    assert REPLAYED not in later.headers
    assert again.headers[REPLAYED] == "true"
    assert asked_upstream(simulator, mark) == 2


def test_a_key_left_in_progress_by_a_dead_worker_is_taken_over_after_the_lease(
    caller: Caller, simulator: Simulator
) -> None:
    question, mark = marked("Asked of a worker that died")
    key = str(uuid.uuid4())
    with caller.http() as http:
        assert (
            http.get("/callChatGPT", params={"input": question}, headers={HEADER: key})
        ).status_code == 200
        # As a worker killed mid-answer leaves it: in progress, nothing kept.
        change_key_row(caller, status="in_progress", response=None, updated_at=utcnow())
        waiting = http.get("/callChatGPT", params={"input": question}, headers={HEADER: key})
        # CHATPROXY_RESERVATION_SECONDS (600 s by default) later, it is taken as dead.
        change_key_row(caller, updated_at=utcnow() - timedelta(seconds=601))
        taken = http.get("/callChatGPT", params={"input": question}, headers={HEADER: key})
    assert waiting.status_code == 409
    assert waiting.json()["error"]["code"] == "idempotency_key_in_use"
    assert taken.status_code == 200
    assert REPLAYED not in taken.headers
    assert asked_upstream(simulator, mark) == 2


def test_a_stream_too_large_to_keep_is_not_asked_again(
    make_server_with: Callable[..., LiveServer], simulator: Simulator
) -> None:
    # A cap above the 8,192 tokens of a model chatproxy knows no window of.
    server = make_server_with(CHATPROXY_MAX_TOKENS="20000", CHATPROXY_MODELS="gpt-4o-mini")
    prompt, mark = marked("A long one [[sim: words=12000 chunks=10000]]")
    key = str(uuid.uuid4())
    body = chat(prompt, stream=True)
    with httpx2.Client(base_url=server.url, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=body, headers={HEADER: key}) as first:
            size = sum(len(piece) for piece in first.iter_bytes())
        assert first.status_code == 200
        assert size > 1024 * 1024
        wait_until_answered(server.app, "open", key)
        again = http.post("/v1/chat/completions", json=body, headers={HEADER: key})
    assert again.status_code == 409
    error = again.json()["error"]
    assert (error["code"], error["param"]) == ("idempotency_replay_unavailable", HEADER)
    assert "Retry-After" not in again.headers  # asking again for it will not help
    assert asked_upstream(simulator, mark) == 1


def wait_until_answered(app: Flask, owner: str, key: str) -> None:
    """Wait until the request with `key` is recorded as ended (a /v1 stream is, just after)."""
    deadline = time.monotonic() + 15
    query = select(IdempotencyKey.status).where(
        IdempotencyKey.owner == owner, IdempotencyKey.key == key
    )
    while True:
        with app.app_context():
            status = db.session.scalar(query)
            db.session.remove()
        if status != "in_progress":
            return
        assert time.monotonic() < deadline, "the stream's end was never recorded"
        time.sleep(0.05)
