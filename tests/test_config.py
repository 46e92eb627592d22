"""Settings: wrong values stop start-up with one line naming the variable."""

from __future__ import annotations

import pytest

from chatproxy import create_app
from chatproxy.config import ConfigError, load_server_settings, load_settings


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHATPROXY_TIMEOUT", "abc"),
        ("CHATPROXY_TIMEOUT", "0"),
        ("CHATPROXY_MAX_TOKENS", "1.5"),
        ("CHATPROXY_CONTEXT_WINDOW", "big"),
        ("CHATPROXY_CONTEXT_WINDOW", "100"),
        ("CHATPROXY_MAX_RETRIES", "-1"),
        ("CHATPROXY_MAX_INPUT_CHARS", "lots"),
        ("OPENAI_BASE_URL", "api.openai.com/v1"),
        ("OPENAI_BASE_URL", "ftp://example.com/v1"),
        ("OPENAI_PROXY", "ftp://127.0.0.1:1080"),
        ("OPENAI_PROXY", "127.0.0.1:1080"),
        ("CHATPROXY_UPSTREAM", "azure-magic"),
        ("CHATPROXY_AUTH", "nobody"),
        ("CHATPROXY_MODEL", "not-in-the-list"),
        ("CHATPROXY_CORS_ORIGINS", "*"),
        ("CHATPROXY_CORS_ORIGINS", "https://example.com:99999"),
        ("OPENAI_BASE_URL", "http://127.0.0.1:99999/v1"),
        ("OPENAI_BASE_URL", "http://127.0.0.1:eighty/v1"),
        ("OPENAI_BASE_URL", "http://127.0.0.1:0/v1"),
        ("OPENAI_BASE_URL", "http://:8000/v1"),
        ("OPENAI_PROXY", "http://127.0.0.1:65536"),
        ("REDIS_URL", "redis://127.0.0.1:123456/0"),
        ("CHATPROXY_UPSTREAMS", '[{"base_url": "http://127.0.0.1:99999/v1", "api_key": "k"}]'),
        (
            "CHATPROXY_UPSTREAMS",
            '[{"base_url": "http://127.0.0.1/v1", "api_key": "k", "weight": 1e309}]',
        ),
    ],
)
def test_wrong_setting_names_the_variable(name, value):
    with pytest.raises(ConfigError) as raised:
        load_settings({name: value})

    message = str(raised.value)
    assert name in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "value"), [("WORKERS", "0"), ("TIMEOUT", "soon"), ("LOG_LEVEL", "loud")]
)
def test_wrong_server_setting_names_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        load_server_settings({name: value})


@pytest.mark.parametrize(
    "proxy", ["http://127.0.0.1:3128", "https://proxy.example:443", "socks5://127.0.0.1:1080"]
)
def test_proxy_schemes_accepted(proxy):
    assert load_settings({"OPENAI_PROXY": proxy}).openai_proxy == proxy


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OPENAI_PROXY", "ftp://user:secret@proxy:21"),
        ("OPENAI_PROXY", "http://user:secret@proxy:99999"),
        ("REDIS_URL", "redis://:secret@127.0.0.1:99999/0"),
    ],
)
def test_credentials_not_shown_in_the_error(name, value):
    with pytest.raises(ConfigError) as raised:
        load_settings({name: value})

    assert "secret" not in str(raised.value)


def test_defaults_and_lists():
    settings = load_settings(
        {"CHATPROXY_MODELS": "gpt-4o-mini, llama3 ,", "CHATPROXY_AUTH": "open"}
    )

    assert settings.models == ("gpt-4o-mini", "llama3")
    assert settings.model == "gpt-4o-mini"
    assert settings.auth == "open"
    assert settings.max_retries == 2


def test_key_is_not_in_the_settings_repr():
    settings = load_settings({"OPENAI_API_KEY": "sk-sim-repr-check-key-000000000"})

    assert "sk-sim-repr" not in repr(settings)


def test_serving_refuses_to_start_without_a_key():
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        create_app({}, serving=True)


def test_simulator_mode_without_a_url_answers_from_the_simulator_port():
    settings = load_settings({"CHATPROXY_UPSTREAM": "simulator", "SIMULATOR_PORT": "8123"})
    assert settings.openai_base_url == "http://127.0.0.1:8123/v1"


def test_debug_start_without_key_answers_503(monkeypatch, database_url):
    monkeypatch.setenv("FLASK_DEBUG", "1")
    app = create_app({"DATABASE_URL": database_url, "CHATPROXY_AUTH": "open"})

    response = app.test_client().get("/callChatGPT?input=hi")
    ready = app.test_client().get("/readyz")

    assert response.status_code == 503
    assert response.json["error"]["code"] == "upstream_not_configured"
    assert "OPENAI_API_KEY" in response.json["error"]["message"]
    assert ready.status_code == 503
    assert ready.json["checks"]["upstream"] == "not configured"


@pytest.mark.parametrize("token", ["short", "has a space in it 0123456789", "x" * 201, "é" * 20])
def test_a_malformed_metrics_token_is_refused_without_showing_it(token):
    with pytest.raises(ConfigError) as raised:
        load_settings({"CHATPROXY_METRICS_TOKEN": token})

    assert "CHATPROXY_METRICS_TOKEN" in str(raised.value)
    assert token not in str(raised.value)
