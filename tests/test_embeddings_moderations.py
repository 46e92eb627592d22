"""Embeddings (`/v1/embeddings`) and moderations (`/v1/moderations`) through a real server, with
the official SDK: passed through as the upstream answered, charged in the ledger (embeddings
by their input tokens, moderations free), a model the key may not use refused."""

from __future__ import annotations

import base64
import struct
import uuid
from typing import Any

import httpx2
import openai
import pytest

from chatproxy.access.keys import issue_key
from chatproxy.tokens import PRICES
from tests.conftest import LiveServer, serve
from tests.test_responses_api import ledger

EMBEDDING, MODERATION = "text-embedding-3-small", "omni-moderation-latest"
MODELS = f"gpt-4o-mini,{EMBEDDING},{MODERATION}"


@pytest.fixture(scope="module")
def server(make_app):  # type: ignore[no-untyped-def]
    with serve(make_app(CHATPROXY_AUTH="keys", CHATPROXY_MODELS=MODELS)) as live:
        yield live


def make_key(server: LiveServer, **limits: Any) -> tuple[str, str]:
    name = f"vec-{uuid.uuid4().hex[:10]}"
    with server.app.app_context():
        return name, issue_key(name, **limits)


def sdk(server: LiveServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=30)


@pytest.mark.parametrize(
    "given, count",
    [("hello world", 1), (["one", "two", "three"], 3), ([15339, 1917], 1), ([[15339], [1917]], 2)],
    ids=["string", "strings", "tokens", "token-arrays"],
)
def test_embeddings_of_each_input_shape_are_charged_by_prompt_tokens(server, given, count):
    name, key = make_key(server)
    result = sdk(server, key).embeddings.create(model=EMBEDDING, input=given)
    assert len(result.data) == count and len(result.data[0].embedding) == 1536
    tokens = result.usage.prompt_tokens
    assert tokens > 0
    requests, prompt, completion, cost = ledger(server, name)[EMBEDDING]
    assert (requests, prompt, completion) == (1, tokens, 0)
    assert cost == pytest.approx(tokens * PRICES[EMBEDDING].input / 1e6)


def test_base64_embeddings_come_back_as_the_upstream_encoded_them(server):
    _, key = make_key(server)
    answer = httpx2.post(
        f"{server.url}/v1/embeddings",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": EMBEDDING, "input": "hello", "encoding_format": "base64", "dimensions": 8},
        timeout=30,
    )
    assert answer.status_code == 200
    packed = base64.b64decode(answer.json()["data"][0]["embedding"])
    assert len(struct.unpack("<8f", packed)) == 8
    floats = sdk(server, key).embeddings.create(model=EMBEDDING, input="hello", dimensions=8)
    assert struct.unpack("<8f", packed) == pytest.approx(floats.data[0].embedding, abs=1e-6)


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": EMBEDDING}, "input"),
        ({"model": EMBEDDING, "input": []}, "input"),
        ({"model": EMBEDDING, "input": [1, "two"]}, "input"),
        ({"model": EMBEDDING, "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ],
)
def test_bad_embedding_requests_are_400_before_the_upstream(server, body, param):
    _, key = make_key(server)
    answer = httpx2.post(
        f"{server.url}/v1/embeddings", headers={"Authorization": f"Bearer {key}"}, json=body
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == param


def test_moderations_are_passed_through_and_free(server):
    name, key = make_key(server)
    result = sdk(server, key).moderations.create(input=["I will kill the process", "hello"])
    assert [r.flagged for r in result.results] == [True, False]
    assert result.model == MODERATION  # the default model, sent explicitly
    requests, prompt, completion, cost = ledger(server, name)[MODERATION]
    assert (requests, prompt, completion, cost) == (1, 0, 0, 0.0)


@pytest.mark.parametrize("route", ["embeddings", "moderations"])
def test_a_model_the_key_may_not_use_is_refused(server, route):
    _, key = make_key(server, models=["gpt-4o-mini"])
    client = sdk(server, key)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        if route == "embeddings":
            client.embeddings.create(model=EMBEDDING, input="hello")
        else:
            client.moderations.create(input="hello")  # the default model is not the key's
    assert refused.value.code == "model_not_allowed"


def test_an_unknown_model_upstream_is_404(make_app):
    with serve(make_app(CHATPROXY_MODELS="gpt-4o-mini,text-embedding-9")) as live:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.NotFoundError) as refused:
            client.embeddings.create(model="text-embedding-9", input="hello")
    assert refused.value.code == "model_not_found"


def test_a_prices_file_may_give_an_embedding_model_its_input_price_alone(tmp_path):
    from chatproxy.tokens import cost, load_prices, usage_in_chat_terms

    path = tmp_path / "prices.json"
    path.write_text('{"my-embedder": {"input": 0.5}}')
    prices = load_prices(path)
    usage = usage_in_chat_terms({"prompt_tokens": 2_000_000, "total_tokens": 2_000_000})
    assert cost("my-embedder", usage, prices) == pytest.approx(1.0)
