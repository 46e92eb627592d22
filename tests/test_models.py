"""Which models each route offers with the default CHATPROXY_MODELS.

Legacy completions, embeddings, moderations, audio and images work out of the box
(`gpt-3.5-turbo-instruct`, `text-embedding-3-small`, `omni-moderation-latest`,
`whisper-1`, `gpt-4o-mini-transcribe`, `tts-1`, `gpt-4o-mini-tts`, `dall-e-3` and
`gpt-image-1` are allowed by default), and since those models answer no chat, the
page, `/callChatGPT` and `/api/models` keep to the chat models.
"""

from __future__ import annotations

import re

import httpx2
import pytest

from chatproxy.config import DEFAULT_MODELS, ConfigError, load_settings

CHAT_MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1"]
LEGACY = "gpt-3.5-turbo-instruct"
AUDIO = ["whisper-1", "gpt-4o-mini-transcribe", "tts-1", "gpt-4o-mini-tts"]
NOT_CHAT = [LEGACY, "text-embedding-3-small", "omni-moderation-latest", *AUDIO]
NOT_CHAT += ["dall-e-3", "gpt-image-1"]


def test_the_defaults_allow_the_chat_models_and_a_model_of_each_other_endpoint():
    assert list(DEFAULT_MODELS) == [*CHAT_MODELS, *NOT_CHAT]


def test_v1_lists_every_allowed_model_and_serves_a_legacy_completion(live_server):
    listed = httpx2.get(f"{live_server.url}/v1/models").json()
    completion = httpx2.post(
        f"{live_server.url}/v1/completions",
        json={"model": LEGACY, "prompt": "Say this is a test", "max_tokens": 7},
        timeout=30,
    )

    assert [model["id"] for model in listed["data"]] == [*CHAT_MODELS, *NOT_CHAT]
    assert completion.status_code == 200, completion.text
    assert completion.json()["choices"][0]["text"]


def test_the_page_and_api_models_offer_only_chat_models(live_server):
    page = httpx2.get(f"{live_server.url}/").text
    picker = re.search(r'<select id="model".*?</select>', page, re.DOTALL)
    api = httpx2.get(f"{live_server.url}/api/models").json()

    assert picker is not None
    assert re.findall(r'<option value="([^"]+)"', picker.group()) == CHAT_MODELS
    assert [model["id"] for model in api["data"]] == CHAT_MODELS


def test_a_question_to_a_legacy_completion_model_is_refused_before_the_upstream(
    live_server, simulator
):
    simulator.reset()

    response = httpx2.get(
        f"{live_server.url}/callChatGPT", params={"input": "hello", "model": LEGACY}
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("model", "model_not_supported")
    assert "/v1/completions" in error["message"]
    assert simulator.requests == []


@pytest.mark.parametrize("model", NOT_CHAT)
def test_the_default_model_must_be_a_chat_model(model):
    with pytest.raises(ConfigError, match="CHATPROXY_MODEL="):
        load_settings({"CHATPROXY_MODEL": model})
