"""Upstream resilience: retries on one upstream, failover across several, a failing one set aside.

Every case runs against real simulators over HTTP through the `openai` SDK: the
SDK retries (backoff with jitter, Retry-After honoured), chatproxy fails over
(CHATPROXY_UPSTREAMS) and sets a failing upstream aside.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import httpx2
import openai
import pytest

from chatproxy.config import ConfigError, load_settings
from chatproxy.simulator import Simulator
from tests.conftest import UPSTREAM_KEY, LiveServer
from tests.servers import free_port
from tests.test_ask import read_events
from tests.test_bad_input import assert_openai_error

TIMEOUT = 1.0  # CHATPROXY_TIMEOUT of these servers, seconds: a hang ends quickly


@pytest.fixture
def start_simulator() -> Iterator[Callable[..., Simulator]]:
    """Start extra simulators (each on its own port), stopped after the test."""
    started: list[Simulator] = []

    def start(**options: object) -> Simulator:
        simulator = Simulator(**{"api_key": UPSTREAM_KEY, **options})  # type: ignore[arg-type]
        simulator.base_url = simulator.start_in_thread()
        started.append(simulator)
        return simulator

    yield start
    for simulator in started:
        simulator.stop()


def upstreams(*entries: Simulator | str, **fields: object) -> str:
    """CHATPROXY_UPSTREAMS naming the simulators (or base URLs) given, in that order."""
    return json.dumps(
        [
            {"base_url": entry if isinstance(entry, str) else entry.base_url, **fields}
            for entry in entries
        ]
    )


def completions(simulator: Simulator) -> int:
    """How many chat completion requests `simulator` received."""
    return sum(1 for r in simulator.requests if r["path"] == "/v1/chat/completions")


def ask(server: LiveServer, question: str, **params: str) -> httpx2.Response:
    return httpx2.get(f"{server.url}/callChatGPT", params={"input": question, **params}, timeout=30)


def answer(server: LiveServer, question: str, stream: bool) -> str:
    """The whole answer to `question`, asked for as text or as a stream; fails on an error."""
    if not stream:
        response = ask(server, question)
        assert response.status_code == 200, response.text
        return response.text
    with httpx2.stream(
        "GET", f"{server.url}/callChatGPT", params={"input": question, "stream": "1"}, timeout=30
    ) as response:
        assert response.status_code == 200, response.read()
        events = read_events(response)
    assert [name for name, _, _ in events][-1] == "done", events[-1]
    return "".join(data["content"] for name, data, _ in events if name == "delta")


# Faults after which asking again can succeed: the SDK retries them.
RETRIED = ("rate_limit", "server_error", "unavailable", "reset", "hang")


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fault", RETRIED)
def test_a_fault_that_passes_is_retried_and_answered(
    make_server_with, start_simulator, fault, stream
):
    upstream = start_simulator()
    server = make_server_with(
        OPENAI_BASE_URL=upstream.base_url, CHATPROXY_MAX_RETRIES="1", CHATPROXY_TIMEOUT=str(TIMEOUT)
    )
    question = f"how far is the moon? [[sim: fault={fault} times=1]]"

    assert "moon" in answer(server, question, stream)
    assert completions(upstream) == 2  # the fault, then the retry that was answered


def test_retry_waits_as_long_as_retry_after_says(make_server_with, start_simulator):
    upstream = start_simulator()  # its 429 says Retry-After: 1
    server = make_server_with(OPENAI_BASE_URL=upstream.base_url, CHATPROXY_MAX_RETRIES="1")

    started = time.monotonic()
    response = ask(server, "hi [[sim: fault=rate_limit times=1]]")
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    # The SDK's own backoff before a first retry is at most 0.5 s.
    assert elapsed >= 1.0
    assert completions(upstream) == 2


@pytest.mark.parametrize(
    ("fault", "status", "asked"),
    [
        # A 429 after 2 s (Retry-After: 1): asked at 0 and 3 s; a third try would start past 5 s.
        ("rate_limit latency=2", 429, 2),
        # A hang (CHATPROXY_TIMEOUT=1 s): asked at 0 and about 1.5 s; then past 2.5 s.
        ("hang", 504, 2),
    ],
    ids=["429 after 2 s", "hang"],
)
def test_retries_stop_at_the_deadline_so_a_clients_own_do_not_stack(
    make_server_with, start_simulator, fault, status, asked
):
    upstream = start_simulator()
    deadline = 5.0 if status == 429 else 2.5
    server = make_server_with(
        OPENAI_BASE_URL=upstream.base_url,
        CHATPROXY_MAX_RETRIES="6",  # without the deadline: 7 tries, 21 s or more
        CHATPROXY_TIMEOUT=str(TIMEOUT if status == 504 else 5),  # the 429 comes after 2 s
        CHATPROXY_RETRY_DEADLINE=str(deadline),
    )

    started = time.monotonic()
    response = ask(server, f"hi [[sim: fault={fault}]]")
    elapsed = time.monotonic() - started

    assert response.status_code == status
    assert completions(upstream) == asked
    assert elapsed < deadline + 2.5  # the last try, begun before the deadline, may end after it


# Each way an upstream can fail, set up on the first upstream (the second is healthy).
FAILING = {
    "rate_limit": {"fault": "rate_limit"},
    "server_error": {"fault": "server_error"},
    "unavailable": {"fault": "unavailable"},
    "hang": {"fault": "hang"},
    "reset": {"fault": "reset"},
    "wrong key": {"api_key": "sk-sim-a-key-the-gateway-does-not-have"},
}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("failure", [*FAILING, "unreachable"])
def test_a_failing_upstream_is_failed_over(make_server_with, start_simulator, failure, stream):
    healthy = start_simulator()
    failing: Simulator | str
    if failure == "unreachable":
        failing = f"http://127.0.0.1:{free_port()}/v1"
    else:
        failing = start_simulator(**FAILING[failure])
    server = make_server_with(
        CHATPROXY_UPSTREAMS=upstreams(failing, healthy, api_key=UPSTREAM_KEY),
        CHATPROXY_TIMEOUT=str(TIMEOUT),
    )

    started = time.monotonic()
    text = answer(server, "what is the capital of France?", stream)
    elapsed = time.monotonic() - started

    assert "capital of France" in text
    assert elapsed < TIMEOUT + 5  # a hang costs one timeout, not the whole request
    if isinstance(failing, Simulator):
        assert completions(failing) == 1
    assert completions(healthy) == 1


def test_the_official_sdk_is_answered_through_failover(make_server_with, start_simulator):
    failing, healthy = start_simulator(fault="unavailable"), start_simulator()
    server = make_server_with(CHATPROXY_UPSTREAMS=upstreams(failing, healthy, api_key=UPSTREAM_KEY))
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)

    whole = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "capital of France?"}]
    )
    pieces = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "capital of France?"}],
        stream=True,
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in pieces if c.choices)

    assert "capital of France" in (whole.choices[0].message.content or "")
    assert "capital of France" in streamed
    assert completions(healthy) == 2
    name = failing.base_url.split("/")[2]  # host:port, the name logs and metrics use
    metrics = httpx2.get(f"{server.url}/metrics").text
    assert f'chatproxy_upstream_failovers_total{{upstream="{name}"}} 2.0' in metrics


def test_a_client_error_is_not_failed_over(make_server_with, start_simulator):
    first, second = start_simulator(), start_simulator()
    server = make_server_with(CHATPROXY_UPSTREAMS=upstreams(first, second, api_key=UPSTREAM_KEY))

    response = ask(server, "hi [[sim: fault=context_length]]")

    error = assert_openai_error(response, 400, "input")
    assert error["code"] == "context_length_exceeded"
    assert (completions(first), completions(second)) == (1, 0)


@pytest.mark.parametrize(
    ("question", "params", "status", "param", "code"),
    [
        # Ollama answers a prompt too long with a 500, which the SDK would retry.
        ("hi [[sim: fault=context_ollama]]", {}, 400, "input", "context_length_exceeded"),
        ("hi [[sim: fault=context_llamacpp]]", {}, 400, "input", "context_length_exceeded"),
        ("hi", {"model": "gpt-9-unknown"}, 404, "model", "model_not_found"),
    ],
    ids=["context-500", "context-400", "unknown-model"],
)
def test_the_requests_own_fault_is_neither_retried_nor_failed_over(
    make_server_with, start_simulator, question, params, status, param, code
):
    first, second = start_simulator(), start_simulator()
    server = make_server_with(
        CHATPROXY_UPSTREAMS=upstreams(first, second, api_key=UPSTREAM_KEY),
        CHATPROXY_MAX_RETRIES="2",
        CHATPROXY_MODELS="gpt-4o-mini,gpt-9-unknown",
    )

    response = ask(server, question, **params)

    error = assert_openai_error(response, status, param)
    assert error["code"] == code
    assert (completions(first), completions(second)) == (1, 0)


def test_when_every_upstream_fails_the_client_gets_a_clear_error(make_server_with, start_simulator):
    first, second = start_simulator(fault="server_error"), start_simulator(fault="unavailable")
    server = make_server_with(CHATPROXY_UPSTREAMS=upstreams(first, second, api_key=UPSTREAM_KEY))

    response = ask(server, "hi")

    error = assert_openai_error(response, 502, None)
    assert error["code"] == "upstream_error"
    assert "127.0.0.1" not in response.text  # upstream addresses stay private
    assert (completions(first), completions(second)) == (1, 1)
    assert ask(server, "hi again").status_code == 502  # and the worker goes on answering


def test_an_upstream_that_keeps_failing_is_set_aside_for_a_while(make_server_with, start_simulator):
    flaky, steady = start_simulator(fault="server_error"), start_simulator()
    server = make_server_with(
        CHATPROXY_UPSTREAMS=upstreams(flaky, steady, api_key=UPSTREAM_KEY),
        CHATPROXY_UPSTREAM_FAILURES="2",
        CHATPROXY_UPSTREAM_COOLDOWN="2",
    )

    for _ in range(2):  # two failures in a row: set aside
        assert ask(server, "hi").status_code == 200
    for _ in range(5):  # well within the cooldown
        assert ask(server, "hi").status_code == 200
    assert completions(flaky) == 2

    # Mended, and once the cooldown is over, it is asked again, and first.
    flaky.fault = None
    deadline = time.monotonic() + 10
    while completions(flaky) == 2:
        assert time.monotonic() < deadline, "the set-aside upstream was never asked again"
        assert ask(server, "hi").status_code == 200
        time.sleep(0.1)
    before = completions(steady)
    for _ in range(3):
        assert ask(server, "hi").status_code == 200
    assert completions(steady) == before


def test_a_set_aside_upstream_is_still_asked_when_the_others_fail(
    make_server_with, start_simulator
):
    first, second = start_simulator(fault="unavailable"), start_simulator()
    server = make_server_with(
        CHATPROXY_UPSTREAMS=upstreams(first, second, api_key=UPSTREAM_KEY),
        CHATPROXY_UPSTREAM_FAILURES="1",
        CHATPROXY_UPSTREAM_COOLDOWN="600",
    )
    assert ask(server, "hi").status_code == 200  # the first failed, the second answered
    first.fault, second.fault = None, "unavailable"

    response = ask(server, "and now?")

    assert response.status_code == 200  # set aside, the first was asked last, and answered
    assert (completions(first), completions(second)) == (2, 2)


def test_a_request_that_fails_everywhere_sets_no_upstream_aside(make_server_with, start_simulator):
    first, second = start_simulator(), start_simulator()
    server = make_server_with(
        CHATPROXY_UPSTREAMS=upstreams(first, second, api_key=UPSTREAM_KEY),
        CHATPROXY_UPSTREAM_FAILURES="1",
        CHATPROXY_UPSTREAM_COOLDOWN="600",
    )
    for _ in range(3):  # the question itself makes every upstream fail
        assert ask(server, "hi [[sim: fault=server_error]]").status_code == 502

    assert ask(server, "hi").status_code == 200
    assert (completions(first), completions(second)) == (4, 3)  # the first is still first


def test_upstreams_by_weight_share_the_requests(make_server_with, start_simulator):
    heavy, light = start_simulator(), start_simulator()
    entries = json.loads(upstreams(heavy, light, api_key=UPSTREAM_KEY))
    entries[0]["weight"], entries[1]["weight"] = 3, 1
    server = make_server_with(
        CHATPROXY_UPSTREAMS=json.dumps(entries), CHATPROXY_UPSTREAM_ORDER="weight"
    )

    with httpx2.Client(timeout=30) as client:
        for _ in range(200):
            client.get(f"{server.url}/callChatGPT", params={"input": "hi"}).raise_for_status()

    # 3 to 1: 150 of 200 expected; the band is over five standard deviations wide.
    assert 120 <= completions(heavy) <= 180
    assert completions(heavy) + completions(light) == 200


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[", "CHATPROXY_UPSTREAMS is not valid JSON"),
        ("[]", "CHATPROXY_UPSTREAMS must be a JSON array"),
        ('{"base_url": "http://a/v1"}', "CHATPROXY_UPSTREAMS must be a JSON array"),
        ('[{"base_url": "ftp://a/v1", "api_key": "k"}]', "entry 1 needs a base_url"),
        ('[{"base_url": "http://a/v1", "api_key": "k", "wieght": 2}]', "unknown fields"),
        ('[{"base_url": "http://a/v1", "api_key": "k", "weight": 0}]', "weight must be"),
        (
            '[{"base_url": "http://a/v1", "api_key": "sk-secret-x"}, {"base_url": "http://b/v1"}]',
            "entry 2 needs an api_key",
        ),
    ],
)
def test_a_wrong_upstreams_setting_is_named_without_its_keys(value, message):
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings({"CHATPROXY_UPSTREAMS": value})
    assert "sk-secret" not in str(caught.value)


def test_upstreams_take_openai_api_key_when_they_name_none():
    settings = load_settings(
        {
            "OPENAI_API_KEY": "sk-shared",
            "CHATPROXY_UPSTREAMS": '[{"base_url": "https://a.example/v1"}, '
            '{"base_url": "http://b.example:8080/v1", "api_key": "sk-own", "name": "b"}]',
        }
    )

    assert [(t.name, t.api_key) for t in settings.upstream_targets] == [
        ("a.example", "sk-shared"),
        ("b", "sk-own"),
    ]
    assert "sk-" not in repr(settings.upstream_targets)
