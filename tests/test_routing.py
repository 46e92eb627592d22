"""Routing by model across providers: each CHATPROXY_UPSTREAMS entry serves some models.

Three simulators stand for three providers, each serving only its own models
(others: OpenAI's 404 `model_not_found`), two of them "DeepSeek" copies that
refuse `stream_options` as some OpenAI-compatible servers do. Clients are the
official `openai` SDK and plain HTTP, over real sockets.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import openai
import pytest
from flask import Flask
from sqlalchemy import select

from chatproxy.access.keys import issue_key
from chatproxy.prices import cost
from chatproxy.simulator import Simulator
from chatproxy.store.database import db
from chatproxy.store.models import UsageDay
from chatproxy.tokens import count_text
from tests.conftest import UPSTREAM_KEY, LiveServer, serve
from tests.servers import free_port
from tests.test_ask import read_events
from tests.test_bad_input import assert_openai_error
from tests.test_budgets import wait_for_ledger

OPENAI_MODELS = ["gpt-4o-mini", "gpt-4o"]
DEEPSEEK_MODELS = ["deepseek-chat", "deepseek-reasoner"]
QUESTION = [{"role": "user", "content": "what is the capital of France?"}]


@pytest.fixture(scope="module")
def providers() -> Iterator[dict[str, Simulator]]:
    """`openai` serves OpenAI's models; `deepseek` and `deepseek_backup` DeepSeek's, without
    `stream_options`."""
    started = {
        "openai": Simulator(api_key=UPSTREAM_KEY, models=OPENAI_MODELS),
        "deepseek": Simulator(api_key=UPSTREAM_KEY, models=DEEPSEEK_MODELS, stream_options=False),
        "deepseek_backup": Simulator(
            api_key=UPSTREAM_KEY, models=DEEPSEEK_MODELS, stream_options=False
        ),
    }
    for simulator in started.values():
        simulator.base_url = simulator.start_in_thread()
    yield started
    for simulator in started.values():
        simulator.stop()


@pytest.fixture(autouse=True)
def forget_requests(providers: dict[str, Simulator]) -> None:
    for simulator in providers.values():
        simulator.reset()


def entries(providers: dict[str, Simulator], first_deepseek: str | None = None) -> str:
    """CHATPROXY_UPSTREAMS: OpenAI by exact names and an alias, DeepSeek by a pattern and an
    alias, twice."""
    deepseek = {
        "models": ["deepseek-*"],
        "aliases": {"fast": "deepseek-chat"},
        "stream_options": False,
        "api_key": UPSTREAM_KEY,
    }
    return json.dumps(
        [
            {
                "name": "openai",
                "base_url": providers["openai"].base_url,
                "api_key": UPSTREAM_KEY,
                "models": OPENAI_MODELS,
                "aliases": {"mini": "gpt-4o-mini"},
            },
            {
                "name": "deepseek",
                "base_url": first_deepseek or providers["deepseek"].base_url,
                **deepseek,
            },
            {
                "name": "deepseek-backup",
                "base_url": providers["deepseek_backup"].base_url,
                **deepseek,
            },
        ]
    )


@pytest.fixture(scope="module")
def routed(make_app: Callable[..., Flask], providers: dict[str, Simulator]) -> Iterator[LiveServer]:
    """chatproxy in front of the three providers, CHATPROXY_MODELS left unset."""
    with serve(make_app(CHATPROXY_UPSTREAMS=entries(providers))) as server:
        yield server


def sdk(server: LiveServer, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def chat_bodies(simulator: Simulator) -> list[dict[str, Any]]:
    """The chat completion bodies `simulator` received, oldest first."""
    return [r["json"] for r in simulator.requests if r["path"] == "/v1/chat/completions"]


def ask_sdk(client: openai.OpenAI, model: str, stream: bool) -> str:
    """The answer of `model` to QUESTION through `/v1/chat/completions`, whole or streamed."""
    if not stream:
        whole = client.chat.completions.create(model=model, messages=QUESTION)  # type: ignore[arg-type]
        return whole.choices[0].message.content or ""
    pieces = client.chat.completions.create(model=model, messages=QUESTION, stream=True)  # type: ignore[arg-type]
    return "".join(c.choices[0].delta.content or "" for c in pieces if c.choices)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(
    ("model", "provider", "sent"),
    [
        ("gpt-4o", "openai", "gpt-4o"),  # an exact name
        ("deepseek-reasoner", "deepseek", "deepseek-reasoner"),  # a pattern
        ("fast", "deepseek", "deepseek-chat"),  # an alias: the upstream gets its own name
    ],
    ids=["exact", "pattern", "alias"],
)
def test_a_request_goes_to_the_upstream_that_serves_its_model(
    routed, providers, model, provider, sent, stream
):
    text = ask_sdk(sdk(routed), model, stream)

    assert "capital of France" in text
    [body] = chat_bodies(providers[provider])
    assert body["model"] == sent
    others = [name for name in providers if name != provider]
    assert all(not chat_bodies(providers[name]) for name in others)
    if provider == "deepseek":  # it refuses stream_options: none is sent to it
        assert "stream_options" not in body


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_model_nobody_serves_is_404_model_not_found(routed, providers, stream):
    client = sdk(routed)

    with pytest.raises(openai.NotFoundError) as raised:
        ask_sdk(client, "claude-3-opus", stream)

    assert raised.value.status_code == 404
    assert raised.value.code == "model_not_found"
    assert raised.value.param == "model"
    assert all(not simulator.requests for simulator in providers.values())
    error = assert_openai_error(
        httpx2.post(
            f"{routed.url}/v1/chat/completions",
            json={"model": "claude-3-opus", "messages": QUESTION, "stream": stream},
        ),
        404,
        "model",
    )
    assert error["code"] == "model_not_found"
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_call_chatgpt_routes_by_model_and_refuses_a_model_nobody_serves(routed, providers, stream):
    params = {"input": "what is the capital of France?", "model": "fast"}
    if stream:
        with httpx2.stream(
            "GET", f"{routed.url}/callChatGPT", params={**params, "stream": "1"}, timeout=30
        ) as response:
            assert response.status_code == 200
            events = read_events(response)
        assert events[-1][0] == "done"
        text = "".join(data["content"] for name, data, _ in events if name == "delta")
    else:
        response = httpx2.get(f"{routed.url}/callChatGPT", params=params, timeout=30)
        assert response.status_code == 200, response.text
        text = response.text

    assert "capital of France" in text
    [body] = chat_bodies(providers["deepseek"])
    assert body["model"] == "deepseek-chat"
    assert "stream_options" not in body
    refused = httpx2.get(
        f"{routed.url}/callChatGPT",
        params={**params, "model": "claude-3-opus", **({"stream": "1"} if stream else {})},
    )
    assert assert_openai_error(refused, 404, "model")["code"] == "model_not_found"


def test_a_pattern_admits_a_model_it_matches_though_no_list_names_it(routed, providers):
    """`deepseek-*` admits deepseek-reasoner, which is not offered (patterns cannot be
    listed), and a name it matches that the provider lacks is the provider's 404."""
    assert "deepseek-reasoner" not in [m.id for m in sdk(routed).models.list()]
    assert sdk(routed).models.retrieve("deepseek-reasoner").id == "deepseek-reasoner"

    with pytest.raises(openai.NotFoundError) as raised:
        ask_sdk(sdk(routed), "deepseek-coder", False)

    assert raised.value.code == "model_not_found"
    assert len(chat_bodies(providers["deepseek"])) == 1  # asked once: not failed over


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_failover_stays_within_the_upstreams_of_the_model(make_server_with, providers, stream):
    nobody = f"http://127.0.0.1:{free_port()}/v1"  # the first DeepSeek is down
    server = make_server_with(CHATPROXY_UPSTREAMS=entries(providers, first_deepseek=nobody))
    client = sdk(server)

    assert "capital of France" in ask_sdk(client, "fast", stream)
    [body] = chat_bodies(providers["deepseek_backup"])
    assert body["model"] == "deepseek-chat"
    assert not chat_bodies(providers["openai"])  # serves no DeepSeek model: never asked

    # OpenAI's models have one upstream: when it fails, the DeepSeeks are not asked.
    failing = [{"role": "user", "content": "hi [[sim: fault=server_error]]"}]
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o", messages=failing)  # type: ignore[arg-type]
    assert len(chat_bodies(providers["openai"])) == 1
    assert len(chat_bodies(providers["deepseek_backup"])) == 1


def test_the_model_lists_name_every_upstreams_models_and_aliases(routed):
    offered = ["mini", "gpt-4o-mini", "gpt-4o", "fast"]

    assert [m.id for m in sdk(routed).models.list()] == offered
    listed = httpx2.get(f"{routed.url}/api/models").json()["data"]
    assert [m["id"] for m in listed] == offered
    assert [m["id"] for m in listed if m["default"]] == ["gpt-4o-mini"]
    page = httpx2.get(f"{routed.url}/").text
    for model in offered:
        assert f'<option value="{model}"' in page
    assert '<option value="deepseek-chat"' not in page


@pytest.fixture(scope="module")
def keyed(make_app: Callable[..., Flask], providers: dict[str, Simulator]) -> Iterator[LiveServer]:
    """As `routed`, with access keys required."""
    app = make_app(CHATPROXY_UPSTREAMS=entries(providers), CHATPROXY_AUTH="keys")
    with serve(app) as server:
        yield server


def make_key(server: LiveServer, models: list[str] | None = None) -> tuple[str, str]:
    name = f"routing-{uuid.uuid4().hex[:10]}"
    with server.app.app_context():
        return name, issue_key(name, models=models, tokens_per_day=1_000_000)


def test_a_keys_models_may_name_aliases_and_what_a_pattern_admits(keyed):
    _, key = make_key(keyed, ["fast", "deepseek-reasoner"])
    client = sdk(keyed, key)
    headers = {"Authorization": f"Bearer {key}"}

    assert [m.id for m in client.models.list()] == ["fast", "deepseek-reasoner"]
    listed = httpx2.get(f"{keyed.url}/api/models", headers=headers).json()["data"]
    assert [(m["id"], m["default"]) for m in listed] == [
        ("fast", True),
        ("deepseek-reasoner", False),
    ]
    assert "capital of France" in ask_sdk(client, "deepseek-reasoner", False)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        ask_sdk(client, "gpt-4o", False)  # served, but not this key's
    assert refused.value.code == "model_not_allowed"
    with pytest.raises(openai.PermissionDeniedError):
        ask_sdk(client, "deepseek-chat", False)  # the pattern admits no more for this key


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_usage_is_counted_and_recorded_where_stream_options_are_refused(keyed, providers, stream):
    name, key = make_key(keyed)
    client = sdk(keyed, key)
    prompt = "Write at length [[sim: words=120]]"
    messages = [{"role": "user", "content": prompt}]

    if stream:
        # The client asks for the usage chunk; the upstream refuses the field, so none comes.
        pieces = client.chat.completions.create(
            model="fast",
            messages=messages,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        text = "".join(c.choices[0].delta.content or "" for c in pieces if c.choices)
    else:
        answer = client.chat.completions.create(model="fast", messages=messages)  # type: ignore[arg-type]
        text = answer.choices[0].message.content or ""

    spent = wait_for_ledger(keyed, name, 1)
    [body] = chat_bodies(providers["deepseek"])
    assert "stream_options" not in body
    assert spent["requests"] == 1
    if stream:  # no usage came: counted with tiktoken from what passed
        assert spent["counted"] == 1
        assert spent["tokens"] >= count_text(text, "deepseek-chat") > 100
    else:  # the whole answer reports its usage
        assert spent["counted"] == 0
        assert spent["tokens"] > 100


def test_a_streamed_question_to_a_server_without_stream_options_is_charged(keyed, providers):
    name, key = make_key(keyed)
    params = {"input": "Write at length [[sim: words=80]]", "model": "fast", "stream": "1"}
    with httpx2.stream(
        "GET",
        f"{keyed.url}/callChatGPT",
        params=params,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        events = read_events(response)

    assert events[-1][0] == "done"
    spent = wait_for_ledger(keyed, name, 1)
    assert spent["counted"] == 1
    assert spent["tokens"] > 80
    assert "stream_options" not in chat_bodies(providers["deepseek"])[0]


def test_the_responses_api_and_embeddings_are_routed_by_model_too(routed, providers):
    client = sdk(routed)

    response = client.responses.create(model="fast", input="what is the capital of France?")
    with pytest.raises(openai.NotFoundError) as raised:  # no entry here names one
        client.embeddings.create(model="text-embedding-3-small", input="hello")

    assert "capital of France" in response.output_text
    [asked] = [r["json"] for r in providers["deepseek"].requests if r["path"] == "/v1/responses"]
    assert asked["model"] == "deepseek-chat"
    assert raised.value.code == "model_not_found"
    assert all(r["path"] != "/v1/embeddings" for s in providers.values() for r in s.requests)


def test_an_upstream_set_aside_is_set_aside_for_all_its_models(make_server_with):
    failing = Simulator(api_key=UPSTREAM_KEY, models=OPENAI_MODELS, fault="unavailable")
    healthy = Simulator(api_key=UPSTREAM_KEY, models=OPENAI_MODELS)
    for simulator in (failing, healthy):
        simulator.base_url = simulator.start_in_thread()
    try:
        listed = [
            {"base_url": s.base_url, "api_key": UPSTREAM_KEY, "models": models}
            for s, models in ((failing, OPENAI_MODELS), (healthy, ["gpt-4o*"]))
        ]
        server = make_server_with(
            CHATPROXY_UPSTREAMS=json.dumps(listed), CHATPROXY_UPSTREAM_FAILURES="1"
        )
        client = sdk(server)

        assert "capital of France" in ask_sdk(client, "gpt-4o", False)  # failed over
        assert "capital of France" in ask_sdk(client, "gpt-4o-mini", False)

        assert len(chat_bodies(failing)) == 1  # set aside after gpt-4o: not asked for -mini
        assert [b["model"] for b in chat_bodies(healthy)] == ["gpt-4o", "gpt-4o-mini"]
    finally:
        failing.stop()
        healthy.stop()


def test_the_ledger_records_the_alias_priced_as_the_real_model(keyed, providers):
    name, key = make_key(keyed)

    answer = sdk(keyed, key).chat.completions.create(model="mini", messages=QUESTION)  # type: ignore[arg-type]

    wait_for_ledger(keyed, name, 1)
    with keyed.app.app_context():
        rows = db.session.execute(
            select(
                UsageDay.model, UsageDay.prompt_tokens, UsageDay.completion_tokens, UsageDay.cost
            ).where(UsageDay.key_name == name)
        ).all()
        db.session.remove()
    assert answer.usage is not None
    usage = {
        "prompt_tokens": answer.usage.prompt_tokens,
        "completion_tokens": answer.usage.completion_tokens,
    }
    assert [tuple(row) for row in rows] == [
        (
            "mini",
            usage["prompt_tokens"],
            usage["completion_tokens"],
            pytest.approx(cost("gpt-4o-mini", usage)),
        )
    ]
    assert cost("gpt-4o-mini", usage)  # a price the table knows, not the alias's none
    assert chat_bodies(providers["openai"])[0]["model"] == "gpt-4o-mini"
