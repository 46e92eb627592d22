"""Personas: shipped presets load, malformed files stop start-up, `persona=` and `/api/personas`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx2
import pytest

from chatproxy.config import DEFAULT_MODELS, PROJECT_ROOT, ConfigError, load_settings
from chatproxy.personas import load_personas

SHIPPED = PROJECT_ROOT / "personas"
SHIPPED_IDS = ["assistant", "editor", "engineer", "translator"]
ENGINEER_PROMPT = json.loads((SHIPPED / "engineer.json").read_text("utf-8"))["messages"][0]


def write_personas(folder: Path, files: dict[str, str | dict]) -> Path:
    """Write `{file name: text or JSON value}` into `folder`; returns the folder."""
    folder.mkdir(exist_ok=True)
    for name, content in files.items():
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_shipped_personas_load():
    personas = load_personas(SHIPPED, DEFAULT_MODELS)

    assert list(personas) == SHIPPED_IDS
    for persona in personas.values():
        assert persona.name and persona.description
        assert persona.messages[0]["role"] == "system"
        assert len(persona.messages[0]["content"]) > 200
        # No model pinned, so they work with any upstream's CHATPROXY_MODELS.
        assert persona.model is None
    assert "中" in personas["translator"].name


def test_name_defaults_to_the_id_and_examples_may_follow(tmp_path):
    folder = write_personas(
        tmp_path / "personas",
        {
            "polite.json": {
                "model": "gpt-4o",
                "messages": [
                    {"role": "system", "content": "Be polite."},
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "Good day to you."},
                ],
            },
            "notes.txt": "not a persona",
            ".draft.json": "{",
        },
    )

    personas = load_personas(folder, DEFAULT_MODELS)

    assert list(personas) == ["polite"]
    assert personas["polite"].name == "polite"
    assert personas["polite"].description == ""
    assert personas["polite"].model == "gpt-4o"
    assert len(personas["polite"].messages) == 3


SYSTEM = [{"role": "system", "content": "You are terse."}]


@pytest.mark.parametrize(
    ("content", "fault"),
    [
        ('{"messages": [', "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        ("[]", "must be a JSON object"),
        ('"You are terse."', "must be a JSON object"),
        ({"model": "gpt-4o"}, '"messages" is missing'),
        ({"messages": []}, "1 to 64 messages"),
        ({"messages": "You are terse."}, '"messages" must be a list'),
        ({"messages": ["You are terse."]}, "message 1 must be an object"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "message 1: role must be"),
        ({"messages": [{"content": "x"}]}, "message 1: role must be"),
        ({"messages": [{"role": "system", "content": 42}]}, "content must be a non-empty string"),
        ({"messages": [{"role": "system", "content": "  "}]}, "content must be a non-empty"),
        ({"messages": [{"role": "system", "content": "x" * 32_001}]}, "the limit is 32000"),
        ({"messages": [*SYSTEM, {"role": "user", "content": "x", "name": "a"}]}, "message 2"),
        ({"messages": SYSTEM, "temperature": 0.2}, "unknown key 'temperature'"),
        ({"messages": SYSTEM, "model": "gpt-3.5-turbo"}, "not one of CHATPROXY_MODELS"),
        ({"messages": SYSTEM, "model": ""}, "'model' must be a non-empty string"),
        ({"messages": SYSTEM, "name": ["a"]}, "'name' must be a non-empty string"),
        ({"messages": SYSTEM, "description": "d" * 501}, "the limit is 500"),
        ('{"messages": [], "messages": []}', "appears twice"),
    ],
)
def test_malformed_persona_stops_start_up_naming_the_file(make_app, tmp_path, content, fault):
    folder = tmp_path / "personas"
    write_personas(folder, {"fine.json": {"messages": SYSTEM}})
    path = folder / "broken.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        write_personas(folder, {"broken.json": content})

    with pytest.raises(ConfigError) as raised:
        make_app(CHATPROXY_PERSONAS_DIR=str(folder))

    message = str(raised.value)
    assert message.startswith("personas/broken.json: ")
    assert fault in message
    assert "\n" not in message


def test_file_name_must_make_a_usable_id(make_app, tmp_path):
    folder = write_personas(tmp_path / "personas", {"my persona!.json": {"messages": SYSTEM}})

    with pytest.raises(ConfigError, match=r"^personas/my persona!\.json: the file name"):
        make_app(CHATPROXY_PERSONAS_DIR=str(folder))


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, SHIPPED), ("team", PROJECT_ROOT / "team"), ("/srv/personas", Path("/srv/personas"))],
)
def test_folder_setting_is_taken_from_the_project_folder(value, expected):
    environ = {} if value is None else {"CHATPROXY_PERSONAS_DIR": value}

    assert load_settings(environ).personas_dir == expected


def test_missing_folder_names_the_setting(make_app, tmp_path):
    with pytest.raises(ConfigError, match="CHATPROXY_PERSONAS_DIR"):
        make_app(CHATPROXY_PERSONAS_DIR=str(tmp_path / "nowhere"))


def test_empty_folder_means_no_personas(make_app, tmp_path):
    (tmp_path / "empty").mkdir()
    client = make_app(CHATPROXY_PERSONAS_DIR=str(tmp_path / "empty")).test_client()

    assert client.get("/api/personas").json == {"object": "list", "data": []}
    assert 'id="persona"' not in client.get("/").text


@pytest.mark.parametrize(
    "how",
    [
        {"method": "GET", "params": {"input": "Why is my loop slow?", "persona": "engineer"}},
        {"method": "POST", "data": {"input": "Why is my loop slow?", "persona": "engineer"}},
        {"method": "POST", "json": {"input": "Why is my loop slow?", "persona": "engineer"}},
    ],
    ids=["get-query", "post-form", "post-json"],
)
def test_persona_prompt_goes_first(api_server, simulator, how):
    simulator.reset()
    response = httpx2.request(url=f"{api_server.url}/callChatGPT", **how)

    assert response.status_code == 200
    sent = simulator.requests[-1]["json"]
    assert sent["messages"] == [
        ENGINEER_PROMPT,
        {"role": "user", "content": "Why is my loop slow?"},
    ]
    assert sent["model"] == "gpt-4o-mini"  # the shipped persona keeps the default model


def test_system_parameter_follows_the_persona_prompt(api_server, simulator):
    simulator.reset()
    response = httpx2.post(
        f"{api_server.url}/callChatGPT",
        json={"input": "Review: x=x+1", "persona": "engineer", "system": "Answer in Python 2."},
    )

    assert response.status_code == 200
    assert simulator.requests[-1]["json"]["messages"] == [
        ENGINEER_PROMPT,
        {"role": "system", "content": "Answer in Python 2."},
        {"role": "user", "content": "Review: x=x+1"},
    ]


def test_persona_streams_too(api_server, simulator):
    simulator.reset()
    response = httpx2.get(
        f"{api_server.url}/callChatGPT",
        params={"input": "hi", "persona": "translator", "stream": "1"},
    )

    assert "event: done" in response.text
    assert simulator.requests[-1]["json"]["messages"][0]["content"].startswith(
        "You are a professional translator"
    )


@pytest.mark.parametrize("persona", ["pirate", "Engineer", "engineer.json"])
def test_unknown_persona_is_a_400_naming_it(api_server, simulator, persona):
    simulator.reset()
    response = httpx2.get(
        f"{api_server.url}/callChatGPT", params={"input": "hi", "persona": persona}
    )

    error = response.json()["error"]
    assert response.status_code == 400
    assert (error["param"], error["code"]) == ("persona", "persona_not_found")
    assert "engineer" in error["message"]  # the ones that exist are listed
    assert simulator.requests == []


def test_empty_persona_means_none(api_server, simulator):
    # The page's form without JavaScript sends `persona=` for "No persona".
    simulator.reset()
    response = httpx2.get(f"{api_server.url}/callChatGPT", params={"input": "hi", "persona": ""})

    assert response.status_code == 200
    assert simulator.requests[-1]["json"]["messages"] == [{"role": "user", "content": "hi"}]


def test_persona_model_is_the_default_unless_model_is_given(make_server_with, simulator, tmp_path):
    folder = write_personas(
        tmp_path / "personas",
        {"reviewer.json": {"model": "gpt-4o", "messages": [{"role": "system", "content": "Hi"}]}},
    )
    server = make_server_with(CHATPROXY_PERSONAS_DIR=str(folder))

    pinned = httpx2.get(
        f"{server.url}/callChatGPT", params={"input": "hi", "persona": "reviewer", "format": "json"}
    )
    chosen = httpx2.get(
        f"{server.url}/callChatGPT",
        params={"input": "hi", "persona": "reviewer", "model": "gpt-4.1", "format": "json"},
    )

    assert pinned.json()["model"] == "gpt-4o"
    assert chosen.json()["model"] == "gpt-4.1"
    assert simulator.requests[-1]["json"]["messages"][0] == {"role": "system", "content": "Hi"}


def test_api_personas_lists_them_with_their_prompts(api_server):
    response = httpx2.get(f"{api_server.url}/api/personas")

    body = response.json()
    assert response.status_code == 200
    assert body["object"] == "list"
    assert [item["id"] for item in body["data"]] == SHIPPED_IDS
    engineer = body["data"][2]
    assert set(engineer) == {"id", "name", "description", "model", "messages"}
    assert engineer["name"] == "Software engineer · 软件工程师"
    assert engineer["model"] is None
    assert engineer["messages"] == [ENGINEER_PROMPT]


def test_api_models_marks_the_default(make_server_with):
    server = make_server_with(CHATPROXY_MODELS="llama3.2,qwen2.5", CHATPROXY_MODEL="qwen2.5")

    body = httpx2.get(f"{server.url}/api/models").json()

    assert body == {
        "object": "list",
        "data": [{"id": "llama3.2", "default": False}, {"id": "qwen2.5", "default": True}],
    }


def test_page_offers_the_personas(api_server):
    html = httpx2.get(f"{api_server.url}/").text

    assert re.search(r'<option value=""[^>]*>No persona</option>', html)
    assert '<option value="translator"' in html
    assert "Translator 中⇄英" in html
