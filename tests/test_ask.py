"""`/callChatGPT` through a real running server: text, JSON and streamed answers."""

from __future__ import annotations

import json
import logging
import time

import httpx2
import openai
import pytest

from tests.conftest import UPSTREAM_KEY, wait_for_record

WORLD_CUP = "谁赢了2022年世界杯?"


def upstream_answer(simulator, question: str) -> str:  # type: ignore[no-untyped-def]
    """What the upstream itself answers to `question` alone, asked with the openai SDK."""
    client = openai.OpenAI(api_key=UPSTREAM_KEY, base_url=simulator.base_url, max_retries=0)
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
    )
    return completion.choices[0].message.content or ""


def read_events(response: httpx2.Response) -> list[tuple[str, dict, float]]:
    """Parse an SSE body into (event, data, arrival time) as the lines come in."""
    events, name, data = [], "message", []
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            events.append((name, json.loads("\n".join(data)), time.monotonic()))
            name, data = "message", []
    return events


@pytest.mark.parametrize(
    "how",
    [
        {"method": "GET", "params": {"input": WORLD_CUP}},
        {"method": "POST", "data": {"input": WORLD_CUP}},
        {"method": "POST", "json": {"input": WORLD_CUP}},
    ],
    ids=["get-query", "post-form", "post-json"],
)
def test_chinese_question_answered_as_text(api_server, simulator, how):
    response = httpx2.request(url=f"{api_server.url}/callChatGPT", **how)

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text == upstream_answer(simulator, WORLD_CUP)
    assert "阿根廷" in response.text


def test_classic_jquery_get_is_plain_text(api_server):
    # What the tutorials' page sends: $.ajax({type: 'GET', data: 'input=' + q, dataType: 'text'})
    response = httpx2.get(
        f"{api_server.url}/callChatGPT?input=what is your name",
        headers={"Accept": "text/plain, */*; q=0.01", "X-Requested-With": "XMLHttpRequest"},
    )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "what is your name" in response.text


@pytest.mark.parametrize(
    "how",
    [
        {"params": {"input": "hello"}, "headers": {"Accept": "application/json"}},
        {"params": {"input": "hello", "format": "json"}},
    ],
    ids=["accept-header", "format-param"],
)
def test_json_on_request(api_server, simulator, how):
    response = httpx2.get(f"{api_server.url}/callChatGPT", **how)

    body = response.json()
    assert response.status_code == 200
    assert body["answer"] == upstream_answer(simulator, "hello")
    assert body["model"] == "gpt-4o-mini"
    assert body["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


def test_stream_pieces_arrive_one_by_one(api_server, simulator):
    question = "tell me [[sim: chunks=8 delay=0.15]]"
    started = time.monotonic()
    with httpx2.stream(
        "GET", f"{api_server.url}/callChatGPT", params={"input": question, "stream": "1"}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        events = read_events(response)

    deltas = [event for event in events if event[0] == "delta"]
    assert len(deltas) == 8
    # The simulator spends 7 × 0.15 s between its first and last piece: the
    # first must reach the client long before the last was even sent.
    assert deltas[-1][2] - deltas[0][2] > 0.6
    assert deltas[0][2] - started < deltas[-1][2] - started - 0.6
    assert "".join(data["content"] for _, data, _ in deltas) == upstream_answer(
        simulator, "tell me"
    )
    name, done, _ = events[-1]
    assert name == "done"
    assert done["finish_reason"] == "stop"
    assert done["usage"]["completion_tokens"] > 0


def test_event_source_accept_header_streams(api_server):
    # The browser's EventSource sends only GET with `Accept: text/event-stream`.
    with httpx2.stream(
        "GET",
        f"{api_server.url}/callChatGPT",
        params={"input": "hi"},
        headers={"Accept": "text/event-stream"},
    ) as response:
        events = read_events(response)

    assert [name for name, _, _ in events][-1] == "done"
    assert any(name == "delta" for name, _, _ in events)


def test_upstream_gets_question_parameters_and_cap(api_server, simulator):
    simulator.reset()
    response = httpx2.post(
        f"{api_server.url}/callChatGPT",
        json={
            "input": "Translate: 你好",
            "system": "You are a translator.",
            "model": "gpt-4o",
            "temperature": 0.2,
            "top_p": 0.9,
            "presence_penalty": 0.5,
            "frequency_penalty": -0.5,
            "stop": ["\n\n", "END"],
        },
    )

    assert response.status_code == 200
    sent = simulator.requests[-1]["json"]
    assert sent["model"] == "gpt-4o"
    assert sent["messages"] == [
        {"role": "system", "content": "You are a translator."},
        {"role": "user", "content": "Translate: 你好"},
    ]
    assert (sent["temperature"], sent["top_p"]) == (0.2, 0.9)
    assert (sent["presence_penalty"], sent["frequency_penalty"]) == (0.5, -0.5)
    assert sent["stop"] == ["\n\n", "END"]
    assert sent["max_tokens"] == 4096  # the owner's cap, sent when none was asked


def test_stop_repeated_in_query_string_becomes_a_list(api_server, simulator):
    simulator.reset()
    httpx2.get(f"{api_server.url}/callChatGPT?input=hi&stop=a&stop=b&max_tokens=50")

    sent = simulator.requests[-1]["json"]
    assert sent["stop"] == ["a", "b"]
    assert sent["max_tokens"] == 50


def test_max_tokens_cuts_the_answer(api_server):
    response = httpx2.get(
        f"{api_server.url}/callChatGPT", params={"input": "hi", "max_tokens": 3, "format": "json"}
    )

    body = response.json()
    assert body["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3


def test_cors_allows_only_listed_origins(make_server_with):
    server = make_server_with(CHATPROXY_CORS_ORIGINS="https://intranet.example.com")

    allowed = httpx2.options(
        f"{server.url}/callChatGPT",
        headers={
            "Origin": "https://intranet.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    other = httpx2.get(
        f"{server.url}/callChatGPT?input=hi", headers={"Origin": "https://evil.example.net"}
    )

    assert allowed.headers["access-control-allow-origin"] == "https://intranet.example.com"
    assert "access-control-allow-origin" not in other.headers


def test_idle_stream_gets_keepalive_comments(make_server_with):
    server = make_server_with(CHATPROXY_KEEPALIVE="0.2")

    with httpx2.stream(
        "GET",
        f"{server.url}/callChatGPT",
        params={"input": "slow [[sim: chunks=3 delay=0.7]]", "stream": "1"},
    ) as response:
        lines = list(response.iter_lines())

    deltas = [i for i, line in enumerate(lines) if line == "event: delta"]
    keepalives = [i for i, line in enumerate(lines) if line.startswith(":")]
    assert len(deltas) == 3
    # Comment lines fill the silences between the pieces, not only the start or end.
    assert any(deltas[0] < i < deltas[1] for i in keepalives)
    assert "event: done" in lines[deltas[-1] :]


def test_client_leaving_mid_answer_stops_the_upstream_stream(api_server, chatproxy_log):
    with httpx2.stream(
        "GET",
        f"{api_server.url}/callChatGPT",
        params={"input": "long [[sim: chunks=50 delay=0.1]]", "stream": "1"},
    ) as response:
        for line in response.iter_lines():
            if line == "event: delta":
                break  # the reader leaves after the first piece

    wait_for_record(chatproxy_log, "client went away")
    # Noticed as the client leaving, not reported as an upstream failure.
    assert not any(record.levelno >= logging.WARNING for record in chatproxy_log)


def test_reasoning_models_get_max_completion_tokens(make_server_with, simulator):
    server = make_server_with(CHATPROXY_MODELS="gpt-4o-mini,o4-mini")
    simulator.reset()

    response = httpx2.get(f"{server.url}/callChatGPT", params={"input": "hi", "model": "o4-mini"})

    sent = simulator.requests[-1]["json"]
    assert response.status_code == 200
    assert sent["max_completion_tokens"] == 4096
    assert "max_tokens" not in sent  # OpenAI refuses it for reasoning models
