"""The Responses API (`/v1/responses`) through a real server, with the official SDK's own calls.

Each response belongs to the access key that created it: another key gets
404 for it, as for conversations. Usage (`input_tokens`, `output_tokens`) is
recorded in the ledger and priced as the model's chat tokens are.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx2
import openai
import pytest
from sqlalchemy import func, select

from chatproxy.access.keys import issue_key
from chatproxy.store.database import db
from chatproxy.store.models import UsageDay
from chatproxy.tokens import PRICES
from tests.conftest import LiveServer, serve

MODEL = "gpt-4o-mini"
MODELS = "gpt-4o-mini,gpt-4o,text-embedding-3-small,omni-moderation-latest"


@pytest.fixture(scope="module")
def server(make_app):  # type: ignore[no-untyped-def]
    with serve(make_app(CHATPROXY_AUTH="keys", CHATPROXY_MODELS=MODELS)) as live:
        yield live


def make_key(server: LiveServer, **limits: Any) -> tuple[str, str]:
    name = f"resp-{uuid.uuid4().hex[:10]}"
    with server.app.app_context():
        return name, issue_key(name, **limits)


def sdk(server: LiveServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=30)


def ledger(server: LiveServer, name: str) -> dict[str, Any]:
    """The ledger's rows of key `name`, summed per model: {model: (requests, prompt, completion,
    cost)}."""
    with server.app.app_context():
        rows = db.session.execute(
            select(
                UsageDay.model,
                func.sum(UsageDay.requests),
                func.sum(UsageDay.prompt_tokens),
                func.sum(UsageDay.completion_tokens),
                func.sum(UsageDay.cost),
            )
            .where(UsageDay.key_name == name)
            .group_by(UsageDay.model)
        ).all()
        db.session.remove()
    # PostgreSQL's sums of integers are numerics (Decimal): made ints and floats again.
    return {row[0]: (int(row[1]), int(row[2]), int(row[3]), float(row[4])) for row in rows}


def charged(server: LiveServer, name: str, model: str = MODEL) -> tuple[Any, ...]:
    """The ledger's row of `name` for `model`, once written: a stream's charge is written as
    the server's side of it ends, which may be just after the client read its last event."""
    deadline = time.monotonic() + 10
    while model not in (rows := ledger(server, name)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return rows[model]


def price(prompt: int, completion: int, model: str = MODEL) -> float:
    found = PRICES[model]
    return (prompt * found.input + completion * found.output) / 1e6


def test_a_whole_response_is_passed_through_and_charged(server):
    name, key = make_key(server)
    response = sdk(server, key).responses.create(
        model=MODEL, input="Explain SSE in one line", instructions="Be brief."
    )
    assert response.object == "response" and response.status == "completed"
    assert response.output_text
    usage = response.usage
    assert usage is not None and usage.input_tokens > 0 and usage.output_tokens > 0
    requests, prompt, completion, cost = ledger(server, name)[MODEL]
    assert (requests, prompt, completion) == (1, usage.input_tokens, usage.output_tokens)
    assert cost == pytest.approx(price(usage.input_tokens, usage.output_tokens))


def test_a_streamed_response_comes_as_named_events_and_is_charged(server):
    name, key = make_key(server)
    with sdk(server, key).responses.stream(model=MODEL, input="write a haiku") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert "response.output_text.delta" in kinds and kinds[-1] == "response.completed"
    assert final.output_text and final.usage is not None
    requests, prompt, completion, cost = charged(server, name)
    assert (requests, prompt, completion) == (
        1,
        final.usage.input_tokens,
        final.usage.output_tokens,
    )
    assert cost == pytest.approx(price(prompt, completion))


def test_create_with_stream_true_gives_the_raw_events(server):
    _, key = make_key(server)
    events = list(sdk(server, key).responses.create(model=MODEL, input="hello", stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].type == "response.completed"
    assert events[-1].response.usage.output_tokens > 0


def test_the_stream_is_passed_on_event_by_event_with_event_lines(server):
    _, key = make_key(server)
    with httpx2.stream(
        "POST",
        f"{server.url}/v1/responses",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": MODEL, "input": "[[sim: chunks=5 delay=0.05]] hello", "stream": True},
        timeout=30,
    ) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in answer.iter_lines() if line]
    assert lines[0] == "event: response.created"
    assert lines[-2] == "event: response.completed"
    assert "[DONE]" not in "\n".join(lines)


def test_retrieve_input_items_continue_and_delete_as_the_owner(server):
    _, key = make_key(server)
    client = sdk(server, key)
    first = client.responses.create(model=MODEL, input="谁赢了2022年世界杯?")
    assert client.responses.retrieve(first.id).output_text == first.output_text
    items = client.responses.input_items.list(first.id)
    assert [item.type for item in items.data] == ["message"]
    follow = client.responses.create(
        model=MODEL, input="梅西打进了多少个球", previous_response_id=first.id
    )
    assert follow.previous_response_id == first.id
    assert "7" in follow.output_text  # the answer that knows the earlier turn
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


def test_cancel_reaches_the_upstream_for_the_owner(server):
    _, key = make_key(server)
    client = sdk(server, key)
    made = client.responses.create(model=MODEL, input="hello")
    with pytest.raises(openai.BadRequestError, match="background"):
        client.responses.cancel(made.id)


@pytest.mark.parametrize("call", ["retrieve", "delete", "cancel", "input_items", "continue"])
def test_another_keys_response_is_not_found(server, call):
    _, mine = make_key(server)
    _, theirs = make_key(server)
    made = sdk(server, mine).responses.create(model=MODEL, input="hello")
    other = sdk(server, theirs)
    with pytest.raises(openai.NotFoundError) as refused:
        if call == "retrieve":
            other.responses.retrieve(made.id)
        elif call == "delete":
            other.responses.delete(made.id)
        elif call == "cancel":
            other.responses.cancel(made.id)
        elif call == "input_items":
            other.responses.input_items.list(made.id)
        else:
            other.responses.create(model=MODEL, input="and?", previous_response_id=made.id)
    assert refused.value.status_code == 404
    assert sdk(server, mine).responses.retrieve(made.id).id == made.id  # still there


def test_a_model_the_key_may_not_use_is_refused(server):
    _, key = make_key(server, models=["gpt-4o"])
    with pytest.raises(openai.PermissionDeniedError) as refused:
        sdk(server, key).responses.create(model=MODEL, input="hello")
    assert refused.value.code == "model_not_allowed"


def test_a_background_response_is_refused(server):
    _, key = make_key(server)
    with pytest.raises(openai.BadRequestError) as refused:
        sdk(server, key).responses.create(model=MODEL, input="hello", background=True)
    assert refused.value.param == "background"


def test_the_output_cap_is_added_and_bounded(server, simulator):
    _, key = make_key(server)
    client = sdk(server, key)
    simulator.reset()
    client.responses.create(model=MODEL, input="hello")
    sent = [r for r in simulator.requests if r["path"] == "/v1/responses"][-1]["json"]
    assert sent["max_output_tokens"] == 4096
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=MODEL, input="hello", max_output_tokens=10**6)
    assert refused.value.param == "max_output_tokens"


def test_a_cut_off_response_is_incomplete_and_still_charged(server):
    name, key = make_key(server)
    response = sdk(server, key).responses.create(
        model=MODEL, input="[[sim: words=200]] go on", max_output_tokens=16
    )
    assert response.status == "incomplete"
    assert ledger(server, name)[MODEL][2] == 16


def test_a_stream_broken_mid_answer_ends_with_an_error_event_and_is_charged(server):
    name, key = make_key(server)
    with pytest.raises(openai.APIError):
        for _ in sdk(server, key).responses.create(
            model=MODEL, input="[[sim: fault=reset_mid_stream chunks=6]] hello", stream=True
        ):
            pass
    requests, prompt, _, _ = charged(server, name)
    assert requests == 1 and prompt > 0  # counted: the stream ended without usage


def test_a_silent_stream_gets_keepalive_comments_between_its_events(make_server_with):
    live = make_server_with(CHATPROXY_KEEPALIVE="0.2")  # open mode
    params = {"model": MODEL, "input": "slow [[sim: chunks=3 delay=0.7]]", "stream": True}
    with httpx2.stream("POST", f"{live.url}/v1/responses", json=params, timeout=30) as answer:
        lines = list(answer.iter_lines())
    deltas = [i for i, line in enumerate(lines) if line == "event: response.output_text.delta"]
    keepalives = [i for i, line in enumerate(lines) if line.startswith(":")]
    assert len(deltas) == 3
    assert any(deltas[0] < i < deltas[1] for i in keepalives)  # between two pieces
    events = list(
        openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused").responses.create(**params)
    )
    assert events[-1].type == "response.completed"  # the SDK skips the comments


def test_a_retry_with_the_same_idempotency_key_gets_the_same_response(server, simulator):
    name, key = make_key(server)
    client = sdk(server, key)
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    simulator.reset()
    first = client.responses.create(model=MODEL, input="hello", extra_headers=headers)
    again = client.responses.create(model=MODEL, input="hello", extra_headers=headers)
    assert again.id == first.id
    assert len([r for r in simulator.requests if r["path"] == "/v1/responses"]) == 1
    assert ledger(server, name)[MODEL][0] == 1
    assert client.responses.retrieve(first.id).id == first.id
