"""Access keys, limits, quotas and the usage ledger, through a real server and the real openai SDK.

Each test makes its own keys (names are unique per test), on the session's store.
"""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import openai
import pytest
from flask import Flask

from chatproxy.access.keys import issue_key
from chatproxy.access.quotas import CLOCK
from chatproxy.simulator import Simulator
from chatproxy.store.database import db
from chatproxy.store.models import UsageDay
from tests.conftest import UPSTREAM_KEY, LiveServer

QUESTION = [{"role": "user", "content": "谁赢了2022年世界杯?"}]


@pytest.fixture(scope="module")
def keys_server(make_app: Callable[..., Flask]) -> Any:
    """A server that needs access keys (CHATPROXY_AUTH=keys), for the whole module."""
    from tests.conftest import serve

    models = "gpt-4o-mini,gpt-4o,gpt-4.1-mini,gpt-4.1,gpt-3.5-turbo-instruct"
    with serve(make_app(CHATPROXY_AUTH="keys", CHATPROXY_MODELS=models)) as server:
        yield server


def make_key(server: LiveServer, **limits: Any) -> tuple[str, str]:
    """A new key on `server`'s store: (name, key)."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    with server.app.app_context():
        return name, issue_key(name, **limits)


def cli(server: LiveServer, *args: str) -> str:
    result = server.app.test_cli_runner().invoke(args=list(args))
    assert result.exit_code == 0, (result.output, result.stderr)
    return result.output


def sdk(server: LiveServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=f"{server.url}/v1", max_retries=0)


def upstream_sdk(simulator: Simulator) -> openai.OpenAI:
    return openai.OpenAI(api_key=UPSTREAM_KEY, base_url=simulator.base_url, max_retries=0)


def test_the_sdk_with_an_access_key_gets_what_the_upstream_produced(
    keys_server: LiveServer, simulator: Simulator
) -> None:
    _, key = make_key(keys_server)
    ours = sdk(keys_server, key).chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    theirs = upstream_sdk(simulator).chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    assert ours.choices[0].message.content == theirs.choices[0].message.content

    streamed = sdk(keys_server, key).chat.completions.create(
        model="gpt-4o-mini", messages=QUESTION, stream=True
    )
    pieces = [c.choices[0].delta.content or "" for c in streamed if c.choices]
    assert "".join(pieces) == theirs.choices[0].message.content

    async def ask_async() -> tuple[str, str]:
        client = openai.AsyncOpenAI(api_key=key, base_url=f"{keys_server.url}/v1", max_retries=0)
        whole = await client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=QUESTION, stream=True
        )
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        await client.close()
        return whole.choices[0].message.content or "", "".join(parts)

    assert asyncio.run(ask_async()) == (theirs.choices[0].message.content,) * 2


@pytest.mark.parametrize(
    ("headers", "params", "code"),
    [
        ({}, {}, "missing_api_key"),
        (
            {"Authorization": "Bearer cpk-not-a-real-key-000000000000000000000"},
            {},
            "invalid_api_key",
        ),
        ({"Authorization": f"Bearer {UPSTREAM_KEY}"}, {}, "invalid_api_key"),
        ({}, {"key": "cpk-nope"}, "invalid_api_key"),
    ],
    ids=["none", "unknown", "openai-key", "unknown-in-url"],
)
def test_requests_without_a_valid_key_get_401(
    keys_server: LiveServer, simulator: Simulator, headers: dict, params: dict, code: str
) -> None:
    simulator.reset()
    for method, path in [
        ("GET", "/callChatGPT?input=hi"),
        ("GET", "/api/conversations"),
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
    ]:
        response = httpx2.request(
            method, keys_server.url + path, headers=headers, params=params, json={}
        )
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == code
    assert simulator.requests == []


def test_the_page_and_health_need_no_key(keys_server: LiveServer) -> None:
    assert httpx2.get(f"{keys_server.url}/").status_code == 200
    assert httpx2.get(f"{keys_server.url}/healthz").status_code == 200


def test_a_revoked_or_expired_key_is_refused(keys_server: LiveServer) -> None:
    name, key = make_key(keys_server)
    client = sdk(keys_server, key)
    assert client.models.list().data
    assert f"Key {name!r} revoked." in cli(keys_server, "keys", "revoke", name)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()

    _, old = make_key(keys_server, expires_at=datetime.now(UTC) - timedelta(minutes=1))
    with pytest.raises(openai.AuthenticationError):
        sdk(keys_server, old).models.list()


def test_a_key_in_the_url_works_for_get_clients(keys_server: LiveServer) -> None:
    _, key = make_key(keys_server)
    response = httpx2.get(f"{keys_server.url}/callChatGPT", params={"input": "hi", "key": key})
    assert response.status_code == 200
    assert response.text


def test_models_are_those_of_the_key(keys_server: LiveServer) -> None:
    _, key = make_key(keys_server, models=["gpt-4o", "gpt-4.1"])
    client = sdk(keys_server, key)
    assert [m.id for m in client.models.list().data] == ["gpt-4o", "gpt-4.1"]
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    assert refused.value.code == "model_not_allowed"
    assert client.chat.completions.create(model="gpt-4o", messages=QUESTION).choices
    # /callChatGPT and the page's list of models follow the key too.
    auth = {"Authorization": f"Bearer {key}"}
    page_models = httpx2.get(f"{keys_server.url}/api/models", headers=auth).json()["data"]
    assert [m["id"] for m in page_models] == ["gpt-4o", "gpt-4.1"]
    default = httpx2.get(f"{keys_server.url}/callChatGPT?input=hi&format=json", headers=auth)
    assert default.json()["model"].startswith("gpt-4o")


def test_conversations_are_each_keys_own(keys_server: LiveServer) -> None:
    _, mine = make_key(keys_server)
    _, theirs = make_key(keys_server)
    made = httpx2.get(
        f"{keys_server.url}/callChatGPT", params={"input": "private"}, headers=bearer(mine)
    )
    conversation_id = made.headers["X-Conversation-Id"]
    seen = httpx2.get(
        f"{keys_server.url}/api/conversations/{conversation_id}", headers=bearer(theirs)
    )
    assert seen.status_code == 404
    listed = httpx2.get(f"{keys_server.url}/api/conversations", headers=bearer(theirs)).json()
    assert conversation_id not in [c["id"] for c in listed["data"]]
    going_on = httpx2.get(
        f"{keys_server.url}/callChatGPT",
        params={"input": "again", "conversation_id": conversation_id},
        headers=bearer(theirs),
    )
    assert going_on.status_code == 404


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_requests_per_minute_per_key(keys_server: LiveServer) -> None:
    _, key = make_key(keys_server, rpm=3)
    statuses = []
    for _ in range(5):
        response = httpx2.get(f"{keys_server.url}/v1/models", headers=bearer(key))
        statuses.append(response.status_code)
    assert statuses == [200, 200, 200, 429, 429]
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert response.json()["error"]["type"] == "rate_limit_error"
    assert 0 < int(response.headers["Retry-After"]) <= 60
    assert response.headers["X-RateLimit-Limit"] == "3"
    assert response.headers["X-RateLimit-Remaining"] == "0"
    # Another key is not slowed down by this one.
    _, other = make_key(keys_server, rpm=3)
    assert httpx2.get(f"{keys_server.url}/v1/models", headers=bearer(other)).status_code == 200


def test_a_daily_token_quota_stops_the_key_until_the_next_day(keys_server: LiveServer) -> None:
    _, key = make_key(keys_server, tokens_per_day=50)
    clock = {"now": datetime(2026, 11, 21, 23, 59, 0, tzinfo=UTC)}
    keys_server.app.extensions[CLOCK] = lambda: clock["now"]
    try:
        client = sdk(keys_server, key)
        first = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
        assert first.usage.total_tokens > 50  # the answer that spends the quota is not cut
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
        assert refused.value.code == "tokens_per_day_exceeded"
        assert refused.value.response.headers["Retry-After"] == "60"  # until midnight UTC
        clock["now"] += timedelta(minutes=2)  # the next day
        assert client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION).choices
    finally:
        keys_server.app.extensions[CLOCK] = lambda: datetime.now(UTC)


def test_a_daily_dollar_quota(keys_server: LiveServer) -> None:
    _, key = make_key(keys_server, usd_per_day=0.000001)
    client = sdk(keys_server, key)
    client.chat.completions.create(model="gpt-4o", messages=QUESTION)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert refused.value.code == "usd_per_day_exceeded"


def test_tokens_per_minute(keys_server: LiveServer) -> None:
    _, key = make_key(keys_server, tpm=40)
    client = sdk(keys_server, key)
    client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    assert refused.value.code == "tokens_per_minute_exceeded"
    assert 0 < int(refused.value.response.headers["Retry-After"]) <= 60


def test_usage_report_equals_what_the_upstream_reported(
    keys_server: LiveServer, simulator: Simulator
) -> None:
    name, key = make_key(keys_server)
    client = sdk(keys_server, key)
    reported = []
    whole = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    reported.append(whole.usage)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "Explain SSE"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    reported.append(chunks[-1].usage)
    legacy = client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt="Say hi", max_tokens=20
    )
    reported.append(legacy.usage)
    # A stream whose client did not ask for the usage is still counted: the same
    # question asked of the upstream directly says how much it used.
    question = [{"role": "user", "content": "Tell me about tokens"}]
    quiet = list(
        client.chat.completions.create(model="gpt-4o-mini", messages=question, stream=True)
    )
    assert all(chunk.choices for chunk in quiet)  # no usage chunk it did not ask for
    direct = upstream_sdk(simulator).chat.completions.create(
        model="gpt-4o-mini", messages=question, max_tokens=4096
    )
    reported.append(direct.usage)
    asked = httpx2.get(
        f"{keys_server.url}/callChatGPT",
        params={"input": "hello", "format": "json"},
        headers=bearer(key),
    ).json()
    prompt = sum(u.prompt_tokens for u in reported) + asked["usage"]["prompt_tokens"]
    completion = sum(u.completion_tokens for u in reported) + asked["usage"]["completion_tokens"]

    today = httpx2.get(f"{keys_server.url}/api/usage", headers=bearer(key)).json()
    assert today["key"]["name"] == name
    assert today["today"]["requests"] == 5
    assert today["today"]["prompt_tokens"] == prompt
    assert today["today"]["completion_tokens"] == completion
    assert today["today"]["cost"] > 0

    rows = list(csv.DictReader(io.StringIO(cli(keys_server, "usage", "--key", name, "--csv"))))
    assert sum(int(r["requests"]) for r in rows) == 5
    assert sum(int(r["prompt_tokens"]) for r in rows) == prompt
    assert sum(int(r["completion_tokens"]) for r in rows) == completion
    assert {r["model"] for r in rows} == {"gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo-instruct"}


def test_litellms_usage_chunk_is_kept_from_a_client_that_did_not_ask_but_counted(
    keys_server: LiveServer, simulator: Simulator
) -> None:
    """LiteLLM's proxy sends the usage chunk with a choice (an empty delta), not `[]`."""
    _, key = make_key(keys_server)
    question = [{"role": "user", "content": "Tokens, please [[sim: dialect=litellm]]"}]

    quiet = list(
        sdk(keys_server, key).chat.completions.create(
            model="gpt-4o-mini", messages=question, stream=True
        )
    )
    asked = list(
        sdk(keys_server, key).chat.completions.create(
            model="gpt-4o-mini",
            messages=question,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert quiet and all(chunk.usage is None for chunk in quiet)
    assert "".join(c.choices[0].delta.content or "" for c in quiet).startswith("**Simulated")
    assert asked[-1].usage is not None and asked[-1].choices[0].delta.content is None
    used = asked[-1].usage  # the same question: the same usage, which the ledger holds twice
    today = httpx2.get(f"{keys_server.url}/api/usage", headers=bearer(key)).json()["today"]
    assert (today["requests"], today["prompt_tokens"], today["completion_tokens"]) == (
        2,
        2 * used.prompt_tokens,
        2 * used.completion_tokens,
    )


def test_limits_and_a_days_tokens_beyond_32_bits_are_kept(keys_server: LiveServer) -> None:
    """A key allowed billions of tokens, and a ledger past 2**31 tokens a day, on either store."""
    billions = str(3 * 10**9)
    name = f"big-{uuid.uuid4().hex[:8]}"
    made = keys_server.app.test_cli_runner().invoke(
        args=["keys", "create", "--name", name, "--tpm", billions, "--tokens-per-day", billions]
    )
    assert made.exit_code == 0, made.stderr
    key = made.stdout.strip()
    with keys_server.app.app_context():  # a busy day so far
        db.session.add(
            UsageDay(
                key_name=name,
                day=datetime.now(UTC).date(),
                model="gpt-4o-mini",
                requests=1,
                prompt_tokens=2**31 - 1,
                completion_tokens=0,
                cost=0.0,
            )
        )
        db.session.commit()

    answer = sdk(keys_server, key).chat.completions.create(model="gpt-4o-mini", messages=QUESTION)

    today = httpx2.get(f"{keys_server.url}/api/usage", headers=bearer(key)).json()
    assert today["today"]["prompt_tokens"] == 2**31 - 1 + answer.usage.prompt_tokens
    listed = next(line for line in cli(keys_server, "keys", "list").splitlines() if name in line)
    assert listed.split("\t")[3:5] == [billions, billions]  # tpm, tokens/day


def test_keys_create_prints_the_key_once_and_list_never(keys_server: LiveServer) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    runner = keys_server.app.test_cli_runner()
    made = runner.invoke(
        args=["keys", "create", "--name", name, "--rpm", "30", "--models", "gpt-4o-mini"]
    )
    assert made.exit_code == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("cpk-") and len(key) > 40
    assert "cannot be shown again" in made.stderr
    listing = cli(keys_server, "keys", "list")
    line = next(line for line in listing.splitlines() if line.startswith(name + "\t"))
    assert key[:12] + "..." in line and key not in listing
    assert "\t30\t" in line and "gpt-4o-mini" in line
    again = runner.invoke(args=["keys", "create", "--name", name])
    assert again.exit_code != 0
    assert sdk(keys_server, key).models.list().data


def test_open_mode_shows_a_banner_and_needs_no_key(live_server: LiveServer) -> None:
    page = httpx2.get(f"{live_server.url}/").text
    assert 'id="open-banner"' in page
    assert httpx2.get(f"{live_server.url}/v1/models").status_code == 200
