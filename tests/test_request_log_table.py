"""The request log table: a row per request that reached the upstream or was refused by a
limit (streamed and whole answers, refusals, upstream failures), never a question, an answer
or a key; kept CHATPROXY_REQUEST_LOG_DAYS; `flask requests`; `/api/admin/requests`.

A real server needing keys, the real openai SDK, the simulator as the upstream. Rows are
written in the background after the response: each test waits for its rows to appear.
"""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import openai
import pytest
from flask import Flask
from sqlalchemy import select

from chatproxy.access.keys import issue_key
from chatproxy.store.database import db
from chatproxy.store.models import RequestLogRow, as_utc
from chatproxy.store.request_log import request_log
from tests.conftest import LiveServer, serve

QUESTION = "Tell me a secret about the 2022 World Cup"
WAIT_SECONDS = 10.0


@pytest.fixture(scope="module")
def server(make_app: Callable[..., Flask]) -> Iterator[LiveServer]:
    with serve(make_app(CHATPROXY_AUTH="keys")) as live:
        yield live


def make_key(server: LiveServer, **limits: Any) -> tuple[str, str]:
    name = f"log-{uuid.uuid4().hex[:10]}"
    with server.app.app_context():
        return name, issue_key(name, **limits)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def rows_of(server: LiveServer, key_name: str, count: int) -> list[RequestLogRow]:
    """The key's rows, oldest first, once `count` of them are written (fails after a while)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        with server.app.app_context():
            rows = db.session.scalars(
                select(RequestLogRow)
                .where(RequestLogRow.key_name == key_name)
                .order_by(RequestLogRow.id)
            ).all()
            db.session.expunge_all()
        if len(rows) >= count:
            return list(rows)
        assert time.monotonic() < deadline, f"{[(r.route, r.model) for r in rows]}, not {count}"
        time.sleep(0.05)


def sdk(server: LiveServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=f"{server.url}/v1", max_retries=0)


def test_whole_and_streamed_answers_have_their_rows(server: LiveServer) -> None:
    name, key = make_key(server)
    client = sdk(server, key)
    whole = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": QUESTION}],
        extra_headers={"X-Request-Id": f"whole-{name}"},
    )
    whole_usage = whole.parse().usage
    # Read to the end of the body, as a browser does (the SDK stops at `[DONE]`).
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": QUESTION}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx2.stream(
        "POST", f"{server.url}/v1/chat/completions", headers=bearer(key), json=body, timeout=30
    ) as passed:
        events = [line for line in passed.iter_lines() if line.startswith("data: {")]
    streamed_usage = json.loads(events[-1].removeprefix("data: "))["usage"]
    streamed = httpx2.get(
        f"{server.url}/callChatGPT",
        params={"input": QUESTION, "stream": "1"},
        headers=bearer(key),
        timeout=30,
    )
    assert streamed.status_code == 200
    first, second, third = rows_of(server, name, 3)

    assert first.request_id == f"whole-{name}" == whole.headers["x-request-id"]
    assert (first.route, first.model, first.status, first.outcome) == (
        "/v1/chat/completions",
        "gpt-4o-mini",
        200,
        "ok",
    )
    assert first.prompt_tokens == whole_usage.prompt_tokens
    assert first.completion_tokens == whole_usage.completion_tokens
    assert first.cost and first.cost > 0
    assert first.ttft_ms is None and first.total_ms > 0
    assert first.upstream  # the simulator's host and port
    assert as_utc(first.at) > datetime.now(UTC) - timedelta(minutes=5)

    assert (second.model, second.status) == ("gpt-4o", 200)
    assert second.completion_tokens == streamed_usage["completion_tokens"]
    assert second.ttft_ms is not None and 0 < second.ttft_ms <= second.total_ms

    assert (third.route, third.status, third.outcome) == ("/callChatGPT", 200, "ok")
    assert third.ttft_ms is not None and third.ttft_ms <= third.total_ms
    assert third.prompt_tokens and third.completion_tokens

    # Never the question, the answer or a key.
    answer = whole.parse().choices[0].message.content
    for row in (first, second, third):
        text = repr([getattr(row, c.name) for c in RequestLogRow.__table__.columns])
        assert QUESTION not in text and answer not in text and key not in text


def test_refusals_by_a_limit_have_rows_and_bad_requests_none(server: LiveServer) -> None:
    name, key = make_key(server, rpm=1)
    client = sdk(server, key)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "a"}])
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "b"}]
        )
    ok, refused = rows_of(server, name, 2)
    assert (ok.status, refused.status) == (200, 429)
    assert refused.outcome == "rate_limit_exceeded" and refused.prompt_tokens is None

    spent, spent_key = make_key(server, tokens_per_day=1)
    # Refused before asking anything, by no limit: no row (bad input, a model not allowed).
    for body in ({}, {"model": "gpt-4o-mini", "messages": "not a list"}):
        bad = httpx2.post(f"{server.url}/v1/chat/completions", headers=bearer(spent_key), json=body)
        assert bad.status_code == 400
    for question in ("hi", "again"):
        try:
            sdk(server, spent_key).chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
            )
        except openai.RateLimitError:
            assert question == "again"
    rows = rows_of(server, spent, 2)
    assert [(r.status, r.outcome) for r in rows] == [(200, "ok"), (429, "tokens_per_day_exceeded")]


def test_upstream_failures_have_rows(server: LiveServer) -> None:
    name, key = make_key(server)
    with pytest.raises(openai.APIStatusError) as failed:
        sdk(server, key).chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi [[sim: fault=server_error]]"}],
        )
    (row,) = rows_of(server, name, 1)
    assert row.status == failed.value.status_code >= 500
    assert row.outcome == failed.value.code and row.outcome
    assert row.upstream and row.prompt_tokens is None and row.cost is None


def test_old_rows_go_after_the_retention(server: LiveServer) -> None:
    name, _ = make_key(server)
    now = datetime.now(UTC)
    with server.app.app_context():
        log = request_log(db.engine, 30)
        for days in (31, 29):
            log.add(
                {
                    "at": (now - timedelta(days=days)).isoformat(),
                    "request_id": f"old-{days}",
                    "key_name": name,
                    "route": "/v1/chat/completions",
                    "status": 200,
                    "total_ms": 1.0,
                }
            )
        log.flush()
        assert [r.request_id for r in rows_of(server, name, 2)] == ["old-31", "old-29"]
        assert log.prune(now) >= 1
    assert [r.request_id for r in rows_of(server, name, 1)] == ["old-29"]
    printed = server.app.test_cli_runner().invoke(args=["requests", "--key", name, "--prune"])
    assert printed.exit_code == 0, printed.output
    assert "old-29" in printed.stdout


def test_no_table_rows_with_a_retention_of_zero(make_app: Callable[..., Flask]) -> None:
    with serve(make_app(CHATPROXY_AUTH="keys", CHATPROXY_REQUEST_LOG_DAYS="0")) as live:
        name, key = make_key(live)
        sdk(live, key).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        marker, marker_key = make_key(live)
    # Another server on the same store writes its row; this one's never came.
    with serve(make_app(CHATPROXY_AUTH="keys")) as other:
        sdk(other, marker_key).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        rows_of(other, marker, 1)
        with other.app.app_context():
            assert not db.session.scalars(
                select(RequestLogRow).where(RequestLogRow.key_name == name)
            ).all()


def test_flask_requests_and_the_admin_api_filter_and_page(server: LiveServer) -> None:
    name, key = make_key(server)
    client = sdk(server, key)
    for model in ("gpt-4o-mini", "gpt-4o", "gpt-4o-mini"):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    rows_of(server, name, 3)

    runner = server.app.test_cli_runner()
    printed = runner.invoke(args=["requests", "--key", name, "--model", "gpt-4o-mini", "--csv"])
    assert printed.exit_code == 0, printed.output
    lines = list(csv.DictReader(io.StringIO(printed.stdout)))
    assert [(r["key"], r["model"], r["status"]) for r in lines] == [
        (name, "gpt-4o-mini", "200")
    ] * 2

    _, admin = make_key(server, admin=True)
    http = httpx2.Client(base_url=server.url, headers=bearer(admin))
    page = http.get("/api/admin/requests", params={"key": name, "limit": 2}).json()
    assert [r["model"] for r in page["data"]] == ["gpt-4o-mini", "gpt-4o"]  # newest first
    assert page["has_more"] is True
    rest = http.get(
        "/api/admin/requests", params={"key": name, "limit": 2, "before": page["data"][-1]["id"]}
    ).json()
    assert [r["model"] for r in rest["data"]] == ["gpt-4o-mini"] and rest["has_more"] is False
    only = http.get("/api/admin/requests", params={"key": name, "model": "gpt-4o"}).json()
    assert len(only["data"]) == 1 and only["data"][0]["status"] == 200
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert (
        http.get("/api/admin/requests", params={"key": name, "since": later}).json()["data"] == []
    )
    for query, param in [
        ({"status": "abc"}, "status"),
        ({"status": "99"}, "status"),
        ({"since": "yesterday"}, "since"),
        ({"limit": "201"}, "limit"),
        ({"before": "-1"}, "before"),
        ({"key": "nul\x00"}, "key"),
        ({"model": "m" * 201}, "model"),
    ]:
        answer = http.get("/api/admin/requests", params=query)
        assert answer.status_code == 400 and answer.json()["error"]["param"] == param


def test_traffic_sums_equal_the_request_logs_rows(server: LiveServer) -> None:
    name, key = make_key(server, rpm=2)
    client = sdk(server, key)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "a"}])
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "b [[sim: fault=server_error]]"}],
        )
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "c"}]
        )
    rows_of(server, name, 3)
    _, admin = make_key(server, admin=True)
    shown = httpx2.get(
        f"{server.url}/api/admin/traffic", params={"hours": 3}, headers=bearer(admin)
    ).json()
    assert len(shown["hours"]) == 3
    first = datetime.fromisoformat(shown["hours"][0].replace("Z", "+00:00"))
    with server.app.app_context():
        rows = db.session.scalars(select(RequestLogRow).where(RequestLogRow.at >= first)).all()
    assert sum(sum(o["requests"]) for o in shown["outcomes"]) == len(rows)
    by_outcome = {o["name"]: sum(o["requests"]) for o in shown["outcomes"]}
    assert by_outcome["rate_limit_exceeded"] == sum(
        r.outcome == "rate_limit_exceeded" for r in rows
    )
    errors = {(e["code"], e["status"]): e["requests"] for e in shown["errors"]}
    assert errors[("rate_limit_exceeded", 429)] >= 1
    assert sum(errors.values()) == sum(r.status >= 400 for r in rows)
    upstream = next(u for u in shown["upstreams"] if u["requests"])
    assert upstream["failures"] == sum(
        r.status >= 500 and r.upstream == upstream["name"] for r in rows
    )
    assert upstream["set_aside_seconds"] == 0 and upstream["failovers"] == 0
    slowest = max(r.total_ms for r in rows if r.at is not None)
    assert max(v for v in shown["total_ms"]["p99"] if v is not None) <= slowest
    assert shown["streams_in_flight"] >= 0
    bad = httpx2.get(f"{server.url}/api/admin/traffic?hours=0", headers=bearer(admin))
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "hours"
