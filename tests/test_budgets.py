"""Budgets hold under any concurrency, and every answer is charged.

Each request reserves its worst case (prompt plus output cap, times `n`)
against its key's quotas before it goes upstream; a key's day ends at most one
request's spend over its quota, however many requests arrive at once. Answers
cut short, or from a server that reports no usage, are charged with tokens
counted by tiktoken, marked as counted in the ledger.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import openai
import pytest
from flask import Flask
from sqlalchemy import func, select

from chatproxy.access.keys import issue_key
from chatproxy.simulator import Simulator
from chatproxy.store.database import db
from chatproxy.store.models import Reservation, UsageDay
from chatproxy.tokens import count_text
from tests.conftest import UPSTREAM_KEY, LiveServer, wait_for_record
from tests.servers import free_port

MODELS = "gpt-4o-mini,gpt-4o,gpt-3.5-turbo-instruct"


@pytest.fixture(scope="module")
def keys_server(make_app: Callable[..., Flask]) -> Any:
    """A server that needs access keys, for the whole module."""
    from tests.conftest import serve

    with serve(make_app(CHATPROXY_AUTH="keys", CHATPROXY_MODELS=MODELS)) as server:
        yield server


def make_key(server: LiveServer, **limits: Any) -> tuple[str, str]:
    name = f"budget-{uuid.uuid4().hex[:10]}"
    with server.app.app_context():
        return name, issue_key(name, **limits)


def ledger(server: LiveServer, name: str) -> dict[str, float]:
    """What the ledger holds for key `name`, all days and models summed."""
    with server.app.app_context():
        row = db.session.execute(
            select(
                func.coalesce(func.sum(UsageDay.requests), 0),
                func.coalesce(func.sum(UsageDay.prompt_tokens + UsageDay.completion_tokens), 0),
                func.coalesce(func.sum(UsageDay.cost), 0.0),
                func.coalesce(func.sum(UsageDay.counted_requests), 0),
            ).where(UsageDay.key_name == name)
        ).one()
        db.session.remove()
    return {"requests": row[0], "tokens": row[1], "cost": row[2], "counted": row[3]}


def reservations(server: LiveServer, name: str) -> int:
    with server.app.app_context():
        held = db.session.scalar(
            select(func.count()).select_from(Reservation).where(Reservation.key_name == name)
        )
        db.session.remove()
    return int(held or 0)


def wait_for_ledger(server: LiveServer, name: str, requests: int) -> dict[str, float]:
    """The ledger of `name` once it counts `requests` (answers are written as they end)."""
    deadline = time.monotonic() + 15
    while (found := ledger(server, name))["requests"] < requests:
        assert time.monotonic() < deadline, found
        time.sleep(0.05)
    return found


def at_once(server: LiveServer, key: str, bodies: list[dict[str, Any]]) -> list[httpx2.Response]:
    """POST every body to /v1/chat/completions at the same time."""

    async def send() -> list[httpx2.Response]:
        limits = httpx2.Limits(max_connections=len(bodies))
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx2.AsyncClient(timeout=60, limits=limits, headers=headers) as client:
            return await asyncio.gather(
                *(client.post(f"{server.url}/v1/chat/completions", json=b) for b in bodies)
            )

    return asyncio.run(send())


def question(text: str, latency: float, **extra: Any) -> dict[str, Any]:
    content = f"{text} [[sim: latency={latency}]]" if latency else text
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}


@pytest.mark.parametrize("latency", [0, 1], ids=["fast answers", "1-second answers"])
@pytest.mark.parametrize("max_tokens", [None, 30], ids=["the cap", "max_tokens=30"])
def test_thirty_at_once_end_the_day_at_most_one_answer_over_the_token_quota(
    keys_server: LiveServer, latency: float, max_tokens: int | None
) -> None:
    name, key = make_key(keys_server, tokens_per_day=300)
    extra = {"max_tokens": max_tokens} if max_tokens else {}
    bodies = [question(f"question {i}", latency, **extra) for i in range(30)]

    responses = at_once(keys_server, key, bodies)

    answered = [r.json() for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert answered, [r.text for r in responses]
    assert {r.status_code for r in refused} <= {429}
    assert {r.json()["error"]["code"] for r in refused} <= {"tokens_per_day_exceeded"}
    spent = wait_for_ledger(keys_server, name, len(answered))
    # Every answer the clients got is charged, and nothing else.
    assert spent["requests"] == len(answered)
    assert spent["tokens"] == sum(a["usage"]["total_tokens"] for a in answered)
    biggest = max(a["usage"]["total_tokens"] for a in answered)
    assert spent["tokens"] <= 300 + biggest
    assert reservations(keys_server, name) == 0


@pytest.mark.parametrize("latency", [0, 1], ids=["fast answers", "1-second answers"])
def test_thirty_at_once_end_the_day_at_most_one_answer_over_the_dollar_quota(
    keys_server: LiveServer, latency: float
) -> None:
    # gpt-4o-mini: $0.15 and $0.60 per 1M tokens; an answer costs a few hundred-thousandths.
    name, key = make_key(keys_server, usd_per_day=0.0001)
    bodies = [question(f"question {i}", latency, max_tokens=50) for i in range(30)]

    responses = at_once(keys_server, key, bodies)

    answered = [r.json() for r in responses if r.status_code == 200]
    assert answered
    assert {r.json()["error"]["code"] for r in responses if r.status_code != 200} <= {
        "usd_per_day_exceeded"
    }
    spent = wait_for_ledger(keys_server, name, len(answered))
    price = {"prompt_tokens": 0.15e-6, "completion_tokens": 0.60e-6}
    costs = [sum(a["usage"][k] * p for k, p in price.items()) for a in answered]
    assert spent["cost"] == pytest.approx(sum(costs))
    assert spent["cost"] <= 0.0001 + max(costs) + 1e-12


def ask_while_another_is_answered(
    server: LiveServer, key: str, name: str, slow: dict[str, Any], quick: dict[str, Any]
) -> tuple[httpx2.Response, httpx2.Response]:
    """Send `slow` (a question answered in 2 s), then `quick` once `slow` holds its reservation."""
    headers = {"Authorization": f"Bearer {key}"}
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(
            httpx2.post, f"{server.url}/v1/chat/completions", json=slow, headers=headers, timeout=30
        )
        deadline = time.monotonic() + 10
        while not reservations(server, name):
            assert time.monotonic() < deadline and not first.done(), "no reservation was held"
            time.sleep(0.02)
        second = httpx2.post(
            f"{server.url}/v1/chat/completions", json=quick, headers=headers, timeout=30
        )
        return first.result(), second


def test_answers_in_flight_hold_the_quota_and_the_refused_may_retry_soon(
    keys_server: LiveServer,
) -> None:
    name, key = make_key(keys_server, tokens_per_day=200)
    slow, quick = ask_while_another_is_answered(
        keys_server, key, name, question("a slow one", 2, max_tokens=190), question("quick", 0)
    )
    assert slow.status_code == 200
    assert quick.status_code == 429
    assert quick.json()["error"]["code"] == "tokens_per_day_exceeded"
    assert "in progress" in quick.json()["error"]["message"]
    assert 1 <= int(quick.headers["Retry-After"]) <= 5  # not until midnight


@pytest.mark.parametrize(("n", "second"), [(1, 200), (3, 429)])
def test_each_of_n_answers_is_reserved_at_the_cap(
    keys_server: LiveServer, n: int, second: int
) -> None:
    name, key = make_key(keys_server, tokens_per_day=1000)
    slow = question("a slow one", 2, max_tokens=400, n=n)
    first, then = ask_while_another_is_answered(
        keys_server, key, name, slow, question("quick", 0, max_tokens=20)
    )
    assert first.status_code == 200
    assert len(first.json()["choices"]) == n
    assert then.status_code == second


def test_n_and_best_of_are_bounded(keys_server: LiveServer) -> None:
    _, key = make_key(keys_server)
    client = openai.OpenAI(api_key=key, base_url=f"{keys_server.url}/v1", max_retries=0)
    hello = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError) as too_many:
        client.chat.completions.create(model="gpt-4o-mini", messages=hello, n=5)  # type: ignore[arg-type]
    assert too_many.value.param == "n"
    assert "CHATPROXY_MAX_N" in too_many.value.message
    with pytest.raises(openai.BadRequestError) as best:
        client.completions.create(model="gpt-3.5-turbo-instruct", prompt="hi", best_of=9)
    assert best.value.param == "best_of"
    assert (
        len(client.chat.completions.create(model="gpt-4o-mini", messages=hello, n=4).choices) == 4
    )  # type: ignore[arg-type]


def test_a_streamed_legacy_completion_without_usage_is_charged_by_count(
    keys_server: LiveServer, simulator: Simulator
) -> None:
    """Legacy completion streams carry no usage unless asked: chatproxy counts their tokens."""
    name, key = make_key(keys_server, tokens_per_day=100)
    client = openai.OpenAI(api_key=key, base_url=f"{keys_server.url}/v1", max_retries=0)
    prompt = "Write at length [[sim: words=300]]"
    pieces = client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt=prompt, max_tokens=4000, stream=True
    )
    text = "".join(chunk.choices[0].text for chunk in pieces if chunk.choices)
    spent = wait_for_ledger(keys_server, name, 1)
    expected = count_text(prompt, "gpt-3.5-turbo-instruct") + count_text(
        text, "gpt-3.5-turbo-instruct"
    )
    assert spent["tokens"] == expected > 100
    assert spent["counted"] == 1
    # The day is spent: the next one is refused instead of passing for free.
    with pytest.raises(openai.RateLimitError) as refused:
        list(
            client.completions.create(
                model="gpt-3.5-turbo-instruct", prompt=prompt, max_tokens=4000, stream=True
            )
        )
    assert refused.value.code == "tokens_per_day_exceeded"
    # What the simulator itself reports for the same request, asked directly.
    direct = openai.OpenAI(api_key=UPSTREAM_KEY, base_url=simulator.base_url, max_retries=0)
    reported = direct.completions.create(
        model="gpt-3.5-turbo-instruct", prompt=prompt, max_tokens=4000
    ).usage
    assert spent["tokens"] == reported.total_tokens  # type: ignore[union-attr]


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/callChatGPT"])
def test_a_client_that_leaves_before_the_usage_chunk_is_charged(
    keys_server: LiveServer, route: str
) -> None:
    name, key = make_key(keys_server)
    content = "Tell me a long story [[sim: chunks=40 delay=0.05]]"
    if route == "/callChatGPT":
        request: dict[str, Any] = {"params": {"input": content, "stream": "1"}}
    else:
        request = {"json": question(content, 0, stream=True)}
    with (
        httpx2.Client(timeout=30, headers={"Authorization": f"Bearer {key}"}) as client,
        client.stream(
            "GET" if route == "/callChatGPT" else "POST", keys_server.url + route, **request
        ) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if "content" in line:
                break  # the first piece: then the client is gone
    spent = wait_for_ledger(keys_server, name, 1)
    assert spent["tokens"] > 0
    assert spent["counted"] == 1
    assert reservations(keys_server, name) == 0


def test_redis_away_a_key_with_a_minute_limit_is_answered_and_warned_once(
    make_server_with: Callable[..., LiveServer], chatproxy_log: list[Any]
) -> None:
    server = make_server_with(CHATPROXY_AUTH="keys", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    _, key = make_key(server, tpm=1000, rpm=100)
    headers = {"Authorization": f"Bearer {key}"}
    for _ in range(3):
        answered = httpx2.get(
            f"{server.url}/callChatGPT", params={"input": "hello"}, headers=headers, timeout=30
        )
        assert answered.status_code == 200, answered.text
    wait_for_record(chatproxy_log, "answering without the per-minute limits")
    warnings = [r for r in chatproxy_log if "per-minute limits" in r.getMessage()]
    assert len(warnings) == 1
    ready = httpx2.get(f"{server.url}/readyz", timeout=30)
    assert ready.status_code == 503
    assert "unreachable" in ready.json()["checks"]["redis"]
