"""Routing by model, as settings: CHATPROXY_UPSTREAMS entries' `models`, `aliases` and
`stream_options` read and checked, the models offered, and what follows from them
(the cap's field of an aliased model, the OpenAPI document, the hot path's choice).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatproxy.config import DEFAULT_MODELS, ConfigError, load_settings
from chatproxy.questions import parse_question
from chatproxy.upstream.client import Upstream
from chatproxy.web.openapi import build_document
from chatproxy.web.passthrough import check_chat

QUESTION = [{"role": "user", "content": "what is the capital of France?"}]


def settings_with(*targets: dict[str, Any], **more: str) -> Any:
    """Settings of CHATPROXY_UPSTREAMS listing `targets` (each on a local base URL)."""
    listed = [{"base_url": f"http://127.0.0.1:{8100 + i}/v1", **t} for i, t in enumerate(targets)]
    return load_settings(
        {"OPENAI_API_KEY": "sk-test", "CHATPROXY_UPSTREAMS": json.dumps(listed), **more}
    )


def test_entries_without_models_keep_todays_configuration():
    settings = settings_with({}, {"weight": 2})

    assert settings.models == DEFAULT_MODELS
    assert settings.model == DEFAULT_MODELS[0]
    assert settings.routes is None  # nothing is looked up per request
    assert settings.model_patterns == ()


def test_the_offered_models_are_the_entries_names_and_aliases():
    settings = settings_with(
        {"models": ["gpt-4o", "gpt-4.1*"]},
        {"models": ["qwen-plus", "qwen-*"], "aliases": {"cheap": "qwen-turbo"}},
    )

    assert settings.models == ("gpt-4o", "cheap", "qwen-plus")
    assert settings.model == "gpt-4o"  # gpt-4o-mini is not offered: the first chat model
    assert settings.allows("gpt-4.1-mini") and settings.allows("qwen-max")
    assert not settings.allows("llama3.2") and not settings.served("llama3.2")
    assert settings.upstream_model("cheap") == "qwen-turbo"
    assert settings.upstream_model("gpt-4o") == "gpt-4o"


def test_an_entry_serving_every_model_brings_the_default_list():
    settings = settings_with({"models": ["llama3.2"]}, {})

    assert settings.models == ("llama3.2", *DEFAULT_MODELS)
    assert settings.model == DEFAULT_MODELS[0]
    assert settings.served("anything-at-all")  # the second entry serves every model


def test_chatproxy_models_still_limits():
    settings = settings_with(
        {"models": ["gpt-4o", "gpt-4o-mini", "deepseek-*"]}, CHATPROXY_MODELS="gpt-4o-mini"
    )

    assert settings.models == ("gpt-4o-mini",)
    assert not settings.allows("gpt-4o") and not settings.allows("deepseek-chat")


@pytest.mark.parametrize(
    ("entry", "more", "said"),
    [
        ({"models": "gpt-4o"}, {}, "entry 1: models must be a non-empty list"),
        ({"models": []}, {}, "entry 1: models must be a non-empty list"),
        ({"models": ["gpt-4o", 4]}, {}, "entry 1: models must be a non-empty list"),
        ({"models": [" gpt-4o"]}, {}, "entry 1: models must be a non-empty list"),
        ({"aliases": ["fast"]}, {}, "entry 1: aliases must be an object"),
        ({"aliases": {"fast": 1}}, {}, "entry 1: aliases must be an object"),
        ({"aliases": {"fast-*": "gpt-4o"}}, {}, "entry 1: an alias is a name, not a pattern"),
        ({"stream_options": "no"}, {}, "entry 1: stream_options must be true or false"),
        ({"model": ["gpt-4o"]}, {}, "entry 1 has unknown fields ['model']"),
        ({"models": ["gpt-4o"]}, {"CHATPROXY_MODELS": "gpt-4o,o3"}, "CHATPROXY_MODELS names 'o3'"),
        ({"models": ["gpt-4o"]}, {"CHATPROXY_MODEL": "o3"}, "CHATPROXY_MODEL='o3' is not one of"),
        ({"models": ["o*"]}, {}, "CHATPROXY_MODEL='gpt-4o-mini' is not one of"),
    ],
)
def test_a_wrong_entry_is_named(entry, more, said):
    with pytest.raises(ConfigError) as raised:
        settings_with(entry, **more)

    assert said in str(raised.value)
    assert "sk-test" not in str(raised.value)


def test_facts_about_an_aliased_model_are_the_real_ones():
    """An alias of a reasoning model gets its cap as `max_completion_tokens` (they refuse
    `max_tokens`) and may take `reasoning_effort`, on /v1 and /callChatGPT alike."""
    settings = settings_with({"models": ["o3*", "gpt-4o-mini"], "aliases": {"think": "o3"}})

    call = check_chat({"model": "think", "messages": QUESTION}, settings)
    assert call.body["max_completion_tokens"] == settings.max_tokens
    assert "max_tokens" not in call.body
    question = parse_question(
        {"input": "why?", "model": "think", "reasoning_effort": "low"}, settings, wants="text"
    )
    params = question.chat_params(settings)
    assert params["model"] == "think"  # the upstream's entry puts its own name on the way out
    assert "max_completion_tokens" in params and params["reasoning_effort"] == "low"


def test_the_openapi_document_lists_no_models_while_a_pattern_admits_more():
    listed = build_document(settings_with({"models": ["gpt-4o-mini", "gpt-4o"]}), ())
    patterned = build_document(settings_with({"models": ["gpt-4o-mini", "deepseek-*"]}), ())

    def model_field(document: dict[str, Any]) -> dict[str, Any]:
        schema = document["components"]["schemas"]["ChatCompletionRequest"]
        return schema["properties"]["model"]  # type: ignore[no-any-return]

    assert model_field(listed)["enum"] == ["gpt-4o-mini", "gpt-4o"]
    assert "enum" not in model_field(patterned)


def test_one_upstream_naming_no_models_is_chosen_without_a_lookup():
    """The hot path (one upstream, no models named) asks nothing per request."""
    upstream = Upstream(load_settings({"OPENAI_API_KEY": "sk-test"}))

    assert upstream.selection.serving("gpt-4o") is upstream.selection.servers
    assert upstream._in_turn("any-model-at-all") == upstream.selection.servers
