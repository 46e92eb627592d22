"""The OpenAI-compatible API (`/v1`) through a real server, with the real `openai` SDK as client.

The oracle is the simulator asked directly with the SDK: what a client gets
through chatproxy must be what it would get from the upstream itself, apart
from ids and timestamps, which the simulator makes anew for every request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import openai
import pytest

from chatproxy.config import load_settings
from chatproxy.errors import UpstreamError
from chatproxy.simulator import dialects
from chatproxy.tokens import limit_field
from chatproxy.upstream.client import CHAT_PATH, Upstream
from chatproxy.upstream.sdk import SdkResponse
from chatproxy.upstream.streams import RawStream
from tests.conftest import UPSTREAM_KEY, serve, wait_for_record
from tests.test_bad_input import assert_openai_error

CLIENT_KEY = "sk-sim-test-client-key-not-used"
CHAT_MODEL, REASONING_MODEL, LEGACY_MODEL = "gpt-4o-mini", "o4-mini", "gpt-3.5-turbo-instruct"
MODELS = (CHAT_MODEL, "gpt-4o", REASONING_MODEL, LEGACY_MODEL)
CAP = 4096  # CHATPROXY_MAX_TOKENS's default
LIMITS = ("max_tokens", "max_completion_tokens")
WORLD_CUP = "谁赢了2022年世界杯?"


def chat(question: str = WORLD_CUP, **params: Any) -> dict[str, Any]:
    return {"model": CHAT_MODEL, "messages": [{"role": "user", "content": question}], **params}


def legacy(prompt: str = "Say hello", **params: Any) -> dict[str, Any]:
    return {"model": LEGACY_MODEL, "prompt": prompt, **params}


@pytest.fixture(scope="module")
def server(make_app):  # type: ignore[no-untyped-def]
    """chatproxy as a real server; MODELS adds a legacy completion model and a reasoning model."""
    with serve(make_app(CHATPROXY_MODELS=",".join(MODELS))) as live:
        yield live


@pytest.fixture
def sdk(server) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    """The openai SDK with chatproxy as its base URL, and a key of its own that is not used."""
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)


@pytest.fixture
def upstream(simulator) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    """The oracle: the SDK pointed at the simulator itself."""
    return openai.OpenAI(
        base_url=simulator.base_url, api_key=UPSTREAM_KEY, max_retries=0, timeout=30
    )


def resource(client: Any, endpoint: str) -> Any:
    return client.chat.completions if endpoint == "chat" else client.completions


def create(server, how: str, endpoint: str, params: dict[str, Any]) -> Any:  # type: ignore[no-untyped-def]
    """Call `endpoint` through chatproxy with the sync or async SDK; a stream comes as chunks."""
    options = {"base_url": f"{server.url}/v1", "api_key": CLIENT_KEY, "max_retries": 0}
    if how == "sync":
        result = resource(openai.OpenAI(**options), endpoint).create(**params)
        return list(result) if params.get("stream") else result

    async def run() -> Any:
        async with openai.AsyncOpenAI(**options) as client:
            result = await resource(client, endpoint).create(**params)
            return [chunk async for chunk in result] if params.get("stream") else result

    return asyncio.run(run())


def without_ids(item: Any) -> dict[str, Any]:
    return item.model_dump(exclude={"id", "created"})


def normalised(body: bytes) -> bytes:
    """`body` with the ids and timestamps, which differ between any two requests, blanked."""
    body = re.sub(rb'"id":"(chatcmpl|cmpl)-[^"]*"', b'"id":""', body)
    return re.sub(rb'"created":\d+', b'"created":0', body)


# --- answers: what the upstream says, passed on ---------------------------------------------


@pytest.mark.parametrize("how", ["sync", "async"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(
    ("endpoint", "params", "sent_cap"),
    [
        ("chat", chat(), {"max_tokens": CAP}),
        ("completions", legacy(), {"max_tokens": 16}),
    ],
    ids=["chat", "legacy"],
)
def test_answer_is_the_upstreams(server, upstream, how, stream, endpoint, params, sent_cap):
    if stream:
        params = {**params, "stream": True, "stream_options": {"include_usage": True}}

    ours = create(server, how, endpoint, params)
    theirs = resource(upstream, endpoint).create(**params, **sent_cap)

    if not stream:
        assert without_ids(ours) == without_ids(theirs)
        return
    theirs = list(theirs)
    assert [without_ids(chunk) for chunk in ours] == [without_ids(chunk) for chunk in theirs]
    assert len({chunk.id for chunk in ours}) == 1  # one answer, its id as the upstream set it
    assert ours[-1].choices == [] and ours[-1].usage == theirs[-1].usage  # the usage chunk
    if endpoint == "chat":
        first = ours[0].choices[0].delta
        assert (first.role, first.content) == ("assistant", "")  # the role-only delta
        assert "阿根廷" in "".join(c.choices[0].delta.content or "" for c in ours if c.choices)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(
    ("path", "body"), [("chat/completions", chat()), ("completions", legacy())]
)
def test_answer_bytes_are_passed_on_as_they_came(server, simulator, stream, path, body):
    body = {**body, "stream": stream, "max_tokens": 50}
    auth = {"Authorization": f"Bearer {UPSTREAM_KEY}"}

    ours = httpx2.post(f"{server.url}/v1/{path}", json=body, timeout=30)
    # A chat stream is sent asking for its usage (to record it); the client, who
    # did not ask, gets every chunk but the one with the usage alone.
    asks_usage = stream and path == "chat/completions"
    sent = {**body, "stream_options": {"include_usage": True}} if asks_usage else body
    theirs = httpx2.post(f"{simulator.base_url}/{path}", json=sent, headers=auth, timeout=30)
    expected = theirs.content
    if asks_usage:
        events = expected.split(b"\n\n")
        assert b'"choices":[]' in events[-3] and b'"usage":{' in events[-3]
        expected = b"\n\n".join(events[:-3] + events[-2:])

    assert ours.status_code == theirs.status_code == 200
    assert normalised(ours.content) == normalised(expected)  # not re-serialised
    if stream:
        assert ours.headers["content-type"].startswith("text/event-stream")
        assert ours.headers["cache-control"] == "no-cache"
        assert ours.headers["x-accel-buffering"] == "no"
        assert ours.content.endswith(b"data: [DONE]\n\n")
    else:
        assert ours.headers["content-type"] == "application/json"


def test_stream_pieces_arrive_as_the_upstream_sends_them(sdk):
    arrivals = []
    started = time.monotonic()
    for chunk in sdk.chat.completions.create(
        **chat("tell me [[sim: chunks=8 delay=0.15]]"), stream=True
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - started)

    assert len(arrivals) == 8
    # The simulator spends 7 × 0.15 s between its first and last piece.
    assert arrivals[-1] - arrivals[0] > 0.6


def test_idle_stream_gets_keepalive_comments_the_sdk_ignores(make_server_with, upstream):
    server = make_server_with(CHATPROXY_KEEPALIVE="0.2")
    params = chat("slow [[sim: chunks=3 delay=0.7]]", stream=True)

    with httpx2.stream("POST", f"{server.url}/v1/chat/completions", json=params) as response:
        lines = list(response.iter_lines())
    chunks = list(create(server, "sync", "chat", params))

    data = [i for i, line in enumerate(lines) if line.startswith("data: {")]
    keepalives = [i for i, line in enumerate(lines) if line.startswith(":")]
    assert any(data[1] < i < data[2] for i in keepalives)  # between two pieces, not only around
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert content == upstream.chat.completions.create(**chat("slow")).choices[0].message.content


# --- the request: passed on untouched, the cap added when none is given -----------------------

EVERY_KIND_OF_FIELD = {
    "temperature": 0.3,
    "top_p": 0.5,
    "presence_penalty": 0.1,
    "frequency_penalty": -0.1,
    "seed": 7,
    "user": "user-42",
    "n": 2,
    "stop": ["\n\n", "END"],
    "logprobs": True,
    "top_logprobs": 2,
    "logit_bias": {"50256": -100},
    "response_format": {"type": "json_object"},
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "metadata": {"team": "docs"},
    "store": False,
    "service_tier": "default",
    "max_completion_tokens": 100,
}


@pytest.mark.parametrize(
    ("endpoint", "params"),
    [
        ("chat", chat(**EVERY_KIND_OF_FIELD)),
        ("chat", chat(**EVERY_KIND_OF_FIELD, stream=True, stream_options={"include_usage": True})),
        ("completions", legacy(suffix="!", echo=True, best_of=2, n=2, logprobs=1, max_tokens=9)),
    ],
    ids=["chat", "chat-stream", "legacy"],
)
def test_every_field_reaches_the_upstream_untouched(sdk, upstream, simulator, endpoint, params):
    unknown = {"x_custom": 1, "base_url": "http://127.0.0.1:9/v1"}
    for client in (sdk, upstream):
        result = resource(client, endpoint).create(**params, extra_body=unknown)
        if params.get("stream"):
            list(result)

    through_chatproxy, direct = simulator.requests[-2:]
    assert through_chatproxy["json"] == direct["json"] == {**params, **unknown}
    assert through_chatproxy["path"] == direct["path"]


@pytest.mark.parametrize(
    ("endpoint", "params", "sent"),
    [
        ("chat", chat(), {"max_tokens": CAP}),
        ("chat", chat(model=REASONING_MODEL), {"max_completion_tokens": CAP}),
        ("chat", chat(max_tokens=50), {"max_tokens": 50}),
        ("chat", chat(max_completion_tokens=50), {"max_completion_tokens": 50}),
        ("chat", chat(max_tokens=None), {"max_tokens": CAP}),
        (
            "chat",
            chat(model=REASONING_MODEL, max_completion_tokens=9),
            {"max_completion_tokens": 9},
        ),
        ("completions", legacy(), {"max_tokens": 16}),
        ("completions", legacy(max_tokens=CAP), {"max_tokens": CAP}),
    ],
)
def test_the_cap_goes_upstream_when_no_limit_is_given(sdk, simulator, endpoint, params, sent):
    resource(sdk, endpoint).create(**params)

    body = simulator.requests[-1]["json"]
    assert {name: body[name] for name in LIMITS if name in body} == sent


@pytest.mark.parametrize(
    ("model", "field"),
    [
        ("gpt-4o-mini", "max_tokens"),
        ("gpt-4.1", "max_tokens"),
        ("llama3.2", "max_tokens"),
        ("omni-moderation-latest", "max_tokens"),
        ("o1", "max_completion_tokens"),
        ("o3-mini", "max_completion_tokens"),
        ("o4-mini-2025-04-16", "max_completion_tokens"),
        ("gpt-5", "max_completion_tokens"),
        ("gpt-5.1", "max_completion_tokens"),
        ("gpt-5-mini", "max_completion_tokens"),
        ("openai/o3", "max_completion_tokens"),
    ],
)
def test_limit_field_for_reasoning_models(model, field):
    assert limit_field(model) == field


def test_the_clients_key_and_headers_stay_here(sdk, simulator):
    # The simulator accepts only chatproxy's key: an answer proves the client's was not sent.
    answer = sdk.chat.completions.create(**chat(), extra_headers={"X-Client-Trace": "t-1"})

    assert answer.choices[0].message.content
    recorded = simulator.requests[-1]
    assert "x-client-trace" not in recorded["headers"]
    assert CLIENT_KEY not in json.dumps(recorded)


def test_open_mode_needs_no_authorization_header(server):
    response = httpx2.post(f"{server.url}/v1/chat/completions", json=chat(), timeout=30)

    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"]


@contextmanager
def decoy() -> Iterator[tuple[str, socket.socket]]:
    """A listening socket nothing should ever connect to: (its host:port, the socket)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        yield f"127.0.0.1:{listener.getsockname()[1]}", listener


@pytest.mark.parametrize(
    "attempt",
    [
        {"headers": {"Host": "{decoy}"}},
        {"headers": {"X-Forwarded-Host": "{decoy}", "X-Forwarded-Proto": "http"}},
        {"headers": {"Forwarded": "host={decoy};proto=http"}},
        {"headers": {"OpenAI-Base-URL": "http://{decoy}/v1", "X-Upstream": "http://{decoy}"}},
        {"body": {"base_url": "http://{decoy}/v1", "api_base": "http://{decoy}/v1"}},
        {"params": {"base_url": "http://{decoy}/v1", "url": "http://{decoy}/v1/chat/completions"}},
    ],
    ids=["host", "x-forwarded-host", "forwarded", "base-url-header", "body", "query"],
)
def test_nothing_in_a_request_picks_the_upstream(server, simulator, attempt):
    with decoy() as (address, listener):
        fill = json.loads(json.dumps(attempt).replace("{decoy}", address))
        simulator.reset()
        response = httpx2.post(
            f"{server.url}/v1/chat/completions",
            json={**chat(), **fill.get("body", {})},
            headers=fill.get("headers", {}),
            params=fill.get("params", {}),
            timeout=30,
        )

        assert response.status_code == 200
        [called] = simulator.requests
        assert called["path"] == "/v1/chat/completions"
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody knocked


# --- the owner's policy and bad requests -----------------------------------------------------


DENIED, BAD = openai.PermissionDeniedError, openai.BadRequestError
NOT_ALLOWED, ABOVE_CAP = "model_not_allowed", "above_max_tokens"


@pytest.mark.parametrize(
    ("endpoint", "params", "error", "param", "code"),
    [
        ("chat", chat(model="gpt-5-ultra"), DENIED, "model", NOT_ALLOWED),
        ("chat", chat(model="gpt-4.1"), DENIED, "model", NOT_ALLOWED),
        ("chat", chat(max_tokens=CAP + 1), BAD, "max_tokens", ABOVE_CAP),
        ("chat", chat(max_completion_tokens=CAP + 1), BAD, "max_completion_tokens", ABOVE_CAP),
        ("chat", chat(max_tokens=0), BAD, "max_tokens", "integer_below_min_value"),
        ("chat", chat(messages=[]), BAD, "messages", "empty_array"),
        ("completions", legacy(model="gpt-4o-mini-x"), DENIED, "model", NOT_ALLOWED),
        ("completions", legacy(max_tokens=CAP + 1), BAD, "max_tokens", ABOVE_CAP),
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_policy_refusals_reach_the_sdk(
    sdk, simulator, endpoint, params, error, param, code, stream
):
    simulator.reset()
    with pytest.raises(error) as caught:
        resource(sdk, endpoint).create(**params, stream=stream)

    assert (caught.value.param, caught.value.code) == (param, code)
    assert simulator.requests == []  # refused before anything was sent upstream


NESTED = b"[" * 100_000 + b"]" * 100_000
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("chat/completions", b"{not json", 400, None),
        ("chat/completions", b"[1, 2]", 400, None),
        ("chat/completions", b"", 400, None),
        ("chat/completions", NESTED, 400, None),
        ("chat/completions", b'{"model": "gpt-4o-mini", "seed": NaN}', 400, None),
        ("chat/completions", {"messages": MESSAGES}, 400, "model"),
        ("chat/completions", {"model": 4, "messages": MESSAGES}, 400, "model"),
        ("chat/completions", {"model": CHAT_MODEL}, 400, "messages"),
        ("chat/completions", {"model": CHAT_MODEL, "messages": "hi"}, 400, "messages"),
        ("chat/completions", chat(max_tokens=-1), 400, "max_tokens"),
        ("chat/completions", chat(max_tokens=1.5), 400, "max_tokens"),
        ("chat/completions", chat(max_tokens="100"), 400, "max_tokens"),
        ("chat/completions", chat(max_tokens=True), 400, "max_tokens"),
        ("chat/completions", chat(stream="yes"), 400, "stream"),
        ("chat/completions", chat(model="gpt-5-ultra"), 403, "model"),
        ("completions", {"prompt": "hi"}, 400, "model"),
        ("completions", legacy(max_tokens=0), 400, "max_tokens"),
        ("completions", legacy(stream=1), 400, "stream"),
        ("completions", legacy(model="davinci-002"), 403, "model"),
    ],
)
def test_bad_request(server, simulator, path, body, status, param):
    simulator.reset()
    content = body if isinstance(body, bytes) else json.dumps(body).encode()

    response = httpx2.post(
        f"{server.url}/v1/{path}",
        content=content,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )

    assert_openai_error(response, status, param)
    assert simulator.requests == []


def test_body_too_large(server):
    response = httpx2.post(
        f"{server.url}/v1/chat/completions", json=chat("x" * 1024 * 1024), timeout=30
    )

    assert_openai_error(response, 413, None)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "chat/completions", 405),
        ("PUT", "completions", 405),
        ("GET", "embeddings", 405),
        ("POST", "files", 404),
    ],
)
def test_other_routes_answer_in_openai_shape(server, method, path, status):
    response = httpx2.request(method, f"{server.url}/v1/{path}", json={})

    assert_openai_error(response, status, None)


# --- models ----------------------------------------------------------------------------------


def test_models_lists_exactly_the_allowed_ones(sdk, simulator):
    simulator.reset()

    listed = list(sdk.models.list())

    assert [model.id for model in listed] == list(MODELS)
    assert all(model.object == "model" and model.owned_by == "chatproxy" for model in listed)
    assert sdk.models.retrieve(REASONING_MODEL).id == REASONING_MODEL
    assert simulator.requests == []  # the upstream is not asked


@pytest.mark.parametrize("model", ["gpt-4.1", "davinci-002", "meta-llama/Llama-3-8B"])
def test_a_model_not_allowed_is_not_found(sdk, model):
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.models.retrieve(model)

    assert (caught.value.param, caught.value.code) == ("model", "model_not_found")


# --- upstream failures -----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(
    ("fault", "error", "status", "code"),
    [
        ("server_error", openai.InternalServerError, 502, "upstream_error"),
        ("unavailable", openai.InternalServerError, 502, "upstream_error"),
        ("reset", openai.InternalServerError, 502, "upstream_unreachable"),
        ("rate_limit", openai.RateLimitError, 429, "upstream_rate_limited"),
        ("context_length", openai.BadRequestError, 400, "context_length_exceeded"),
    ],
)
@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_upstream_fault_gets_its_status(sdk, endpoint, fault, error, status, code, stream):
    question = f"hi [[sim: fault={fault}]]"
    params = chat(question) if endpoint == "chat" else legacy(question)

    with pytest.raises(error) as caught:
        resource(sdk, endpoint).create(**params, stream=stream)

    assert (caught.value.status_code, caught.value.code) == (status, code)
    if status == 429:
        assert caught.value.response.headers["retry-after"] == "1"
    assert resource(sdk, endpoint).create(**(chat() if endpoint == "chat" else legacy()))


@pytest.fixture(scope="module")
def lacking_server(make_app):  # type: ignore[no-untyped-def]
    """chatproxy allowing a model its upstream lacks, its own retries on (the SDK's default)."""
    models = ",".join((*MODELS, "gpt-9-unknown"))
    with serve(make_app(CHATPROXY_MODELS=models, CHATPROXY_MAX_RETRIES="2")) as live:
        yield live


def retrying_sdk(server) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    """The SDK as an application uses it: it retries a 502 or a 5xx twice, a 400 or a 404 never."""
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=CLIENT_KEY, timeout=30)


def upstream_requests(simulator, marker: str) -> int:  # type: ignore[no-untyped-def]
    """How many requests whose body holds `marker` reached the simulator."""
    return sum(1 for request in simulator.requests if marker in json.dumps(request["json"]))


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_a_model_the_upstream_lacks_is_not_found_for_the_sdk(
    lacking_server, simulator, endpoint, stream
):
    marker = uuid.uuid4().hex
    params = chat(marker) if endpoint == "chat" else legacy(marker)

    with pytest.raises(openai.NotFoundError) as caught:
        resource(retrying_sdk(lacking_server), endpoint).create(
            **{**params, "model": "gpt-9-unknown"}, stream=stream
        )

    assert (caught.value.code, caught.value.param) == ("model_not_found", "model")
    assert upstream_requests(simulator, marker) == 1  # neither chatproxy nor the SDK retried


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("endpoint", ["chat", "completions"])
@pytest.mark.parametrize("fault", ["context_length", *sorted(dialects.CONTEXT_FAULTS)])
def test_a_context_too_long_in_any_dialect_is_a_bad_request_for_the_sdk(
    lacking_server, simulator, fault, endpoint, stream
):
    marker = uuid.uuid4().hex
    question = f"{marker} [[sim: fault={fault}]]"
    params = chat(question) if endpoint == "chat" else legacy(question)

    with pytest.raises(openai.BadRequestError) as caught:
        resource(retrying_sdk(lacking_server), endpoint).create(**params, stream=stream)

    assert caught.value.code == "context_length_exceeded"
    assert caught.value.param == ("messages" if endpoint == "chat" else "prompt")
    assert upstream_requests(simulator, marker) == 1


def test_a_whole_answer_that_is_not_json_is_a_502(sdk):
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.chat.completions.create(**chat("hi [[sim: fault=malformed_chunk]]"))

    assert caught.value.code == "upstream_malformed"


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_upstream_breaking_mid_stream_raises_in_the_sdk(sdk, endpoint):
    question = "hi [[sim: fault=reset_mid_stream chunks=10]]"
    params = chat(question) if endpoint == "chat" else legacy(question, max_tokens=100)
    received = []

    with pytest.raises(openai.APIError) as caught:
        for chunk in resource(sdk, endpoint).create(**params, stream=True):
            received.append(chunk)

    assert received  # what arrived before the break was passed on
    assert caught.value.code == "upstream_interrupted"
    assert "incomplete" in caught.value.message


@pytest.mark.parametrize(
    ("fault", "passed_on"),
    [
        ("reset_mid_stream", b""),
        ("malformed_chunk", b'data: {"id": "chatcmpl-broken", "choices": ['),
    ],
)
def test_a_broken_stream_ends_with_one_error_event(server, fault, passed_on):
    params = chat(f"hi [[sim: fault={fault} chunks=10]]", stream=True)

    response = httpx2.post(f"{server.url}/v1/chat/completions", json=params, timeout=30)

    events = response.content.split(b"\n\n")[:-1]
    assert response.status_code == 200
    assert events[0].startswith(b'data: {"id":')
    assert passed_on in response.content  # chunks are passed on, not judged
    assert [event for event in events if b'"error"' in event] == [events[-1]]
    assert json.loads(events[-1][6:])["error"]["code"] == "upstream_interrupted"
    assert b"[DONE]" not in response.content


def test_client_leaving_mid_stream_closes_the_upstream_stream(server, chatproxy_log):
    params = chat("long [[sim: chunks=50 delay=0.1]]", stream=True)
    with httpx2.stream("POST", f"{server.url}/v1/chat/completions", json=params) as response:
        for line in response.iter_lines():
            if '"content":"' in line:
                break  # the reader leaves after the first piece

    wait_for_record(chatproxy_log, "client went away")
    assert not any(record.levelno >= logging.WARNING for record in chatproxy_log)


# --- the stream reader itself ----------------------------------------------------------------


def raw_stream(pieces: list[bytes]) -> RawStream:
    """A RawStream over a response whose body arrives in `pieces`."""
    settings = load_settings({"OPENAI_API_KEY": "sk-unit-test-key-0000"})
    return RawStream(SdkResponse(httpx2.Response(200, content=iter(pieces))), Upstream(settings))


USAGE = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}


def sse(*chunks: Any, newline: bytes = b"\n", spaced: bool = False) -> bytes:
    """An SSE body of `chunks` (dicts, or "[DONE]"), compact or spaced as json.dumps writes."""
    separators = (", ", ": ") if spaced else (",", ":")
    data = [c if isinstance(c, str) else json.dumps(c, separators=separators) for c in chunks]
    return b"".join(b"data: " + d.encode() + newline + newline for d in data)


def piece(content: str | None, reason: str | None = None) -> dict[str, Any]:
    delta = {"content": content} if content is not None else {}
    choice = {"index": 0, "delta": delta, "finish_reason": reason}
    return {"id": "c", "object": "chat.completion.chunk", "choices": [choice], "usage": None}


# A text that looks like the markers looked for must not fool the reader.
TRICKY = ' "usage": {} [DONE]'
WHOLE = [
    piece("Hello"),
    piece(TRICKY),
    piece(None, "stop"),
    {"choices": [], "usage": USAGE},
    "[DONE]",
]


@pytest.mark.parametrize("size", [1, 7, 100, 100_000])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("spaced", [False, True], ids=["compact", "spaced"])
def test_raw_stream_passes_whole_events_and_finds_the_usage(size, newline, spaced):
    body = sse(*WHOLE, newline=newline, spaced=spaced)
    stream = raw_stream([body[i : i + size] for i in range(0, len(body), size)])

    items = list(stream)

    assert b"".join(items) == body
    assert all(item.endswith(newline + newline) for item in items)
    assert stream.usage == USAGE


@pytest.mark.parametrize(
    ("body", "ends"),
    [
        (sse(piece("Hi"), piece(None, "stop"), "[DONE]"), "whole"),
        (sse(piece("Hi"), piece(None, "stop")), "whole"),  # some servers send no [DONE]
        (sse(piece("Hi"), piece(None, "stop")) + b"data: [DONE]", "whole"),  # nor a last blank line
        (sse(piece("Hi"), {"error": {"message": "overloaded"}}), "upstream's error"),
        (sse(piece("Hi")), "cut"),
    ],
    ids=["done", "no-done", "no-blank-line", "error-event", "cut"],
)
def test_raw_stream_end(body, ends):
    stream = raw_stream([body])
    items: list[bytes] = []

    if ends == "cut":
        with pytest.raises(UpstreamError) as caught:
            items.extend(stream)
        assert caught.value.code == "upstream_interrupted"
    else:
        items.extend(stream)
    assert b"".join(items).rstrip() == body.rstrip()
    assert stream.usage is None


def test_raw_stream_never_passes_the_upstream_key():
    body = sse(piece("your key is sk-unit-test-key-0000"), piece(None, "stop"), "[DONE]")

    passed = b"".join(raw_stream([body]))

    assert b"sk-unit-test-key" not in passed
    assert b"your key is [redacted]" in passed


@pytest.mark.parametrize("include_usage", [True, False])
def test_raw_stream_from_the_upstream_keeps_its_usage(app_env, simulator, include_usage):
    body = chat(stream=True, max_tokens=50)
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    whole = httpx2.post(
        f"{simulator.base_url}/chat/completions",
        json={**body, "stream": False, "stream_options": None},
        headers={"Authorization": f"Bearer {UPSTREAM_KEY}"},
    ).json()

    stream = Upstream(load_settings(app_env)).open_raw_stream(CHAT_PATH, body)
    passed = b"".join(stream)

    assert passed.endswith(b"data: [DONE]\n\n")
    assert stream.usage == (whole["usage"] if include_usage else None)


LITELLM_USAGE = {"choices": [{"index": 0, "delta": {}}], "usage": USAGE}


def carrying(**delta: Any) -> dict[str, Any]:
    """A chunk with the usage and a choice whose delta carries `delta`."""
    return {"choices": [{"index": 0, "delta": delta}], "usage": USAGE}


@pytest.mark.parametrize(
    ("last", "hidden"),
    [
        ({"choices": [], "usage": USAGE}, True),  # OpenAI's
        (LITELLM_USAGE, True),  # LiteLLM's proxy's
        ({"choices": [{"index": 0, "delta": {}, "finish_reason": None}], "usage": USAGE}, True),
        ({"choices": [{"index": 0, "text": "", "finish_reason": None}], "usage": USAGE}, True),
        ({**piece("more"), "usage": USAGE}, False),  # content: the client needs it
        ({**piece(None, "stop"), "usage": USAGE}, False),  # the finish_reason
        (
            {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0}]}}], "usage": USAGE},
            False,
        ),
        ({"choices": [{"index": 0, "delta": {"reasoning_content": "hm"}}], "usage": USAGE}, False),
    ],
    ids=[
        "openai",
        "litellm",
        "null-finish",
        "legacy",
        "content",
        "finish",
        "tool-call",
        "reasoning",
    ],
)
def test_the_usage_chunk_is_known_by_what_it_carries(last, hidden):
    """A client that did not ask for the usage does not get a chunk that carries only that."""
    body = sse(piece("Hello"), piece(None, "stop"), last, "[DONE]")
    settings = load_settings({"OPENAI_API_KEY": "sk-unit-test-key-0000"})
    stream = RawStream(
        SdkResponse(httpx2.Response(200, content=iter([body]))), Upstream(settings), True
    )

    passed = b"".join(stream)

    assert stream.usage == USAGE
    assert (json.dumps(last, separators=(",", ":")).encode() not in passed) == hidden
    assert passed.endswith(b"data: [DONE]\n\n") and b'"Hello"' in passed
