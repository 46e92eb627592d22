"""Every upstream failure maps to a clear status or `event: error`; the next request is answered."""

from __future__ import annotations

import time
import uuid

import httpx2
import pytest

from chatproxy.simulator import dialects
from tests.conftest import UPSTREAM_KEY
from tests.servers import free_port
from tests.test_ask import read_events
from tests.test_bad_input import assert_openai_error


@pytest.fixture(scope="module")
def server(make_app):
    from tests.conftest import serve

    # A short timeout so the `hang` fault ends quickly.
    with serve(make_app(CHATPROXY_TIMEOUT="1")) as live:
        yield live


def ask(server, question: str, **params: str) -> httpx2.Response:
    return httpx2.get(f"{server.url}/callChatGPT", params={"input": question, **params}, timeout=30)


def assert_next_request_answered(server) -> None:  # type: ignore[no-untyped-def]
    response = ask(server, "still there?")
    assert response.status_code == 200
    assert "still there?" in response.text


# What a client sees for each fault the simulator injects: (status, error code).
FAULT_ERRORS = {
    "rate_limit": (429, "upstream_rate_limited"),
    "server_error": (502, "upstream_error"),
    "unavailable": (502, "upstream_error"),
    "hang": (504, "upstream_timeout"),
    "reset": (502, "upstream_unreachable"),
    "reset_mid_stream": (502, "upstream_unreachable"),
    "malformed_chunk": (502, "upstream_malformed"),
    "context_length": (400, "context_length_exceeded"),
}
# Faults that happen after a stream has started end with `event: error` instead.
MID_STREAM = ("reset_mid_stream", "malformed_chunk")


@pytest.mark.parametrize(("fault", "expected"), FAULT_ERRORS.items())
def test_fault_without_stream(server, fault, expected):
    status, code = expected
    response = ask(server, f"hi [[sim: fault={fault}]]")

    error = assert_openai_error(response, status, error_param(code))
    assert error["code"] == code
    if status == 429:
        assert response.headers["retry-after"] == "1"
    assert_next_request_answered(server)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [(fault, expected) for fault, expected in FAULT_ERRORS.items() if fault not in MID_STREAM],
)
def test_fault_before_stream_starts(server, fault, expected):
    status, code = expected
    response = ask(server, f"hi [[sim: fault={fault}]]", stream="1")

    error = assert_openai_error(response, status, error_param(code))
    assert error["code"] == code
    assert_next_request_answered(server)


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("reset_mid_stream", "upstream_interrupted"),
        ("malformed_chunk", "upstream_malformed_chunk"),
    ],
)
def test_fault_mid_stream_ends_with_error_event(server, fault, code):
    with httpx2.stream(
        "GET",
        f"{server.url}/callChatGPT",
        params={"input": f"hi [[sim: fault={fault} chunks=10]]", "stream": "1"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        events = read_events(response)

    names = [name for name, _, _ in events]
    assert "delta" in names  # the part that arrived was passed on
    assert names[-1] == "error"
    assert events[-1][1]["error"]["code"] == code
    assert_next_request_answered(server)


@pytest.fixture(scope="module")
def retrying_server(make_app):
    """A server whose SDK retries as it does by default, to show what is not retried."""
    from tests.conftest import serve

    models = "gpt-4o-mini,gpt-9-unknown"  # the second is one the upstream does not have
    with serve(make_app(CHATPROXY_MAX_RETRIES="2", CHATPROXY_MODELS=models)) as live:
        yield live


def upstream_requests(simulator, marker: str) -> int:
    """How many chat requests whose last message holds `marker` reached the simulator."""
    return sum(
        1
        for request in simulator.requests
        if request["path"] == "/v1/chat/completions"
        and marker in str((request["json"] or {}).get("messages", [{}])[-1].get("content"))
    )


@pytest.mark.parametrize("stream", ["0", "1"])
@pytest.mark.parametrize("fault", ["context_length", *sorted(dialects.CONTEXT_FAULTS)])
def test_a_context_too_long_in_any_dialect_is_400_and_not_retried(
    retrying_server, simulator, fault, stream
):
    """OpenAI's code, and the words of vLLM, Ollama, llama.cpp and LiteLLM, mean one thing."""
    marker = uuid.uuid4().hex

    response = ask(retrying_server, f"{marker} [[sim: fault={fault}]]", stream=stream)

    error = assert_openai_error(response, 400, "input")
    assert error["code"] == "context_length_exceeded"
    assert upstream_requests(simulator, marker) == 1
    stored = httpx2.get(
        f"{retrying_server.url}/api/conversations/{response.headers['X-Conversation-Id']}"
    ).json()
    assert stored["messages"][-1]["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize("stream", ["0", "1"])
def test_a_model_the_upstream_lacks_is_404_and_not_retried(retrying_server, simulator, stream):
    marker = uuid.uuid4().hex

    response = ask(retrying_server, marker, model="gpt-9-unknown", stream=stream)

    error = assert_openai_error(response, 404, "model")
    assert error["code"] == "model_not_found"
    assert "gpt-9-unknown" in error["message"]
    assert upstream_requests(simulator, marker) == 1


def test_wrong_upstream_key_names_the_setting(make_server_with):
    server = make_server_with(OPENAI_API_KEY="sk-sim-wrong-key-for-this-test-000000")

    response = ask(server, "hi")

    error = assert_openai_error(response, 502, None)
    assert error["code"] == "upstream_auth_failed"
    assert "OPENAI_API_KEY" in error["message"]
    assert "sk-sim-wrong" not in response.text
    assert "0000" not in response.text  # not even OpenAI's masked form of the key


def test_unreachable_upstream(make_server_with):
    closed_port = free_port()
    server = make_server_with(OPENAI_BASE_URL=f"http://127.0.0.1:{closed_port}/v1")

    response = ask(server, "hi")

    error = assert_openai_error(response, 502, None)
    assert error["code"] == "upstream_unreachable"
    assert str(closed_port) not in response.text  # the upstream address stays private


def error_param(code: str) -> str | None:
    # A question too long names /callChatGPT's own parameter (the upstream got `messages`).
    return "input" if code == "context_length_exceeded" else None


@pytest.mark.parametrize("scheme", ["http", "socks5"])
def test_questions_go_through_the_configured_proxy(make_server_with, scheme):
    # The proxy is a closed port: the upstream itself is up, so a 502 shows
    # that the request went to the proxy, as OPENAI_PROXY asks.
    closed_port = free_port()
    server = make_server_with(OPENAI_PROXY=f"{scheme}://127.0.0.1:{closed_port}")

    response = ask(server, "hi")

    error = assert_openai_error(response, 502, None)
    assert error["code"] == "upstream_unreachable"


def test_upstream_404_passes_its_reason_on(make_server_with, simulator):
    # A chat model on the legacy endpoint: the upstream says what is wrong.
    server = make_server_with(CHATPROXY_MODELS="gpt-4o-mini,gpt-3.5-turbo-instruct")
    body = {"model": "gpt-4o-mini", "prompt": "hi"}
    direct = httpx2.post(
        f"{simulator.base_url}/completions",
        json=body,
        headers={"Authorization": f"Bearer {UPSTREAM_KEY}"},
    )

    response = httpx2.post(f"{server.url}/v1/completions", json=body, timeout=30)

    error = assert_openai_error(response, 502, None)
    assert direct.status_code == 404
    assert error["code"] == "upstream_not_found"
    assert direct.json()["error"]["message"] in error["message"]


def test_a_stream_silent_past_the_timeout_ends_with_an_error_after_its_keepalives(
    make_server_with,
):
    # The silence is marked for the keep-alives every 0.2 s, and still counted for the
    # timeout across them: the stream ends after CHATPROXY_TIMEOUT, not never.
    server = make_server_with(CHATPROXY_TIMEOUT="1", CHATPROXY_KEEPALIVE="0.2")
    started = time.monotonic()

    with httpx2.stream(
        "GET",
        f"{server.url}/callChatGPT",
        params={"input": "slow [[sim: chunks=2 delay=4]]", "stream": "1"},
        timeout=30,
    ) as response:
        lines = list(response.iter_lines())

    assert time.monotonic() - started < 3.5
    keepalives = [line for line in lines if line.startswith(":")]
    assert len(keepalives) >= 3
    assert lines[lines.index("event: error") + 1].find('"upstream_timeout"') > 0
