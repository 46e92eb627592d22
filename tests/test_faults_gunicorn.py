"""Each upstream fault through real gunicorn (one gevent worker) with retries on.

A fault that passes ends in a successful retry; one that stays ends in a clear
error (a status in OpenAI's shape, or `event: error` once a stream has begun);
none takes longer than the retries' timeouts allow, and the worker answers the
next question.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx2
import pytest

from chatproxy.simulator import Simulator
from tests.servers import Gunicorn, Launcher, upstream_settings
from tests.sse_events import Event, read_events
from tests.test_bad_input import assert_openai_error
from tests.test_faults import FAULT_ERRORS, MID_STREAM, error_param

pytestmark = pytest.mark.e2e

TIMEOUT = 2  # CHATPROXY_TIMEOUT, seconds
RETRIES = 1  # CHATPROXY_MAX_RETRIES
# The longest a question may take: every attempt timing out, the SDK's wait
# before its retry (at most 1 s: Retry-After, or its backoff), and some slack.
LONGEST = (RETRIES + 1) * TIMEOUT + 1 + 3
# Faults the SDK retries when they happen before the answer starts.
RETRIED = ("rate_limit", "server_error", "unavailable", "hang", "reset")


@pytest.fixture(scope="module")
def gunicorn(
    tmp_path_factory: pytest.TempPathFactory, simulator: Simulator, database_url: str
) -> Iterator[Gunicorn]:
    launcher = Launcher(tmp_path_factory.mktemp("gunicorn-faults"), database_url)
    settings = upstream_settings(
        simulator,
        WORKERS="1",
        CHATPROXY_TIMEOUT=str(TIMEOUT),
        CHATPROXY_MAX_RETRIES=str(RETRIES),
    )
    try:
        yield launcher("faults", **settings)
    finally:
        launcher.stop_all()


def ask(
    server: Gunicorn, question: str, stream: bool
) -> tuple[httpx2.Response, list[Event], float]:
    """(response, SSE events when streamed, seconds it took) for one question."""
    params = {"input": question, **({"stream": "1"} if stream else {})}
    started = time.monotonic()
    with httpx2.stream(
        "GET", f"{server.url}/callChatGPT", params=params, timeout=LONGEST + 10
    ) as response:
        if stream and response.status_code == 200:
            events = read_events(response)
        else:
            response.read()
            events = []
    return response, events, time.monotonic() - started


def assert_next_question_answered(server: Gunicorn) -> None:
    response, _, _ = ask(server, "still there?", stream=False)
    assert response.status_code == 200
    assert "still there?" in response.text


@pytest.mark.parametrize("stream", [False, True], ids=["text", "stream"])
@pytest.mark.parametrize("fault", FAULT_ERRORS)
def test_a_fault_that_stays_ends_in_a_clear_error_in_time(gunicorn, fault, stream):
    status, code = FAULT_ERRORS[fault]
    response, events, took = ask(gunicorn, f"hi [[sim: fault={fault} chunks=6]]", stream)

    if stream and fault in MID_STREAM:
        assert response.status_code == 200
        assert events[-1].name == "error"
        assert events[-1].data["error"]["code"].startswith("upstream_")
    else:
        error = assert_openai_error(response, status, error_param(code))
        assert error["code"] == code
    assert took < LONGEST
    assert_next_question_answered(gunicorn)


@pytest.mark.parametrize("stream", [False, True], ids=["text", "stream"])
@pytest.mark.parametrize("fault", RETRIED)
def test_a_fault_that_passes_ends_in_an_answer(gunicorn, fault, stream):
    question = f"tell me about tides [[sim: fault={fault} times=1 chunks=4]]"
    response, events, took = ask(gunicorn, question, stream)

    assert response.status_code == 200
    if stream:
        assert events[-1].name == "done"
        text = "".join(event.data["content"] for event in events if event.name == "delta")
    else:
        text = response.text
    assert "tides" in text
    assert took < LONGEST
