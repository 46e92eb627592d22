"""docs/upstreams.md's routing example works as written: OpenAI, DeepSeek, Qwen and Ollama
behind one chatproxy, each provider a simulator process serving only its own models
and taking only its own key, so a request routed wrong would meet a 401 or a 404.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import httpx2
import openai
import pytest
from dotenv import dotenv_values
from flask import Flask

from chatproxy.simulator_process import start_simulator
from tests.conftest import LiveServer, serve
from tests.servers import ROOT
from tests.test_routing import ask_sdk, sdk


def documented_upstreams() -> str:
    """The CHATPROXY_UPSTREAMS of docs/upstreams.md's routing example, as written."""
    text = (ROOT / "docs" / "upstreams.md").read_text(encoding="utf-8")
    section = text.split("## Routing by model across providers", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    value = dotenv_values(stream=io.StringIO(block))["CHATPROXY_UPSTREAMS"]
    assert value is not None
    return value


def sample(pattern: str) -> str:
    """A model name the pattern admits: `gpt-4.1*` gpt-4.1-mini, `qwen-*` qwen-turbo."""
    return pattern.replace("-*", "-turbo").replace("*", "-mini")


@pytest.fixture(scope="module")
def documented(make_app: Callable[..., Flask]) -> Iterator[LiveServer]:
    """chatproxy with the documented configuration, each provider a simulator process that
    serves only that provider's models and takes only its key (`--models`, `--api-key`)."""
    entries = json.loads(documented_upstreams())
    started = []
    try:
        for entry in entries:
            served = [m for m in entry["models"] if "*" not in m]
            served += list(entry.get("aliases", {}).values())
            # What each pattern admits here: gpt-4.1-mini, qwen-turbo.
            served += [sample(m) for m in entry["models"] if "*" in m]
            options = ["--models", ",".join(served)]
            if entry.get("stream_options") is False:
                options.append("--no-stream-options")
            process = start_simulator(0, entry["api_key"], options)
            started.append(process)
            entry["base_url"] = process.url
        with serve(make_app(CHATPROXY_UPSTREAMS=json.dumps(entries))) as server:
            yield server
    finally:
        for process in started:
            process.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(
    "model", ["gpt-4o", "gpt-4.1-mini", "fast", "deepseek-reasoner", "qwen-turbo", "local"]
)
def test_the_documented_four_providers_answer_each_its_models(documented, model, stream):
    """A wrong route would meet another provider's key (401) or models (404)."""
    assert "capital of France" in ask_sdk(sdk(documented), model, stream)


def test_the_documented_configuration_offers_its_names_and_refuses_others(documented):
    client = sdk(documented)

    assert [m.id for m in client.models.list()] == [
        "gpt-4o-mini",
        "gpt-4o",
        "text-embedding-3-small",
        "fast",
        "deepseek-chat",
        "deepseek-reasoner",
        "qwen-plus",
        "qwen-max",
        "local",
        "llama3.2",
    ]
    embedding = client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert embedding.data[0].embedding
    with pytest.raises(openai.NotFoundError) as raised:
        ask_sdk(client, "claude-3-opus", False)
    assert raised.value.code == "model_not_found"


def test_a_simulator_process_serves_only_the_models_its_environment_names():
    """SIMULATOR_MODELS and SIMULATOR_STREAM_OPTIONS=0, as `--models` and `--no-stream-options`."""
    command = [sys.executable, "-m", "chatproxy.simulator", "--port", "0", "--no-record"]
    environ = {**os.environ, "SIMULATOR_MODELS": "qwen-plus", "SIMULATOR_STREAM_OPTIONS": "0"}
    process = subprocess.Popen(command, env=environ, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip().rsplit(" ", 1)[-1]
        headers = {"Authorization": "Bearer sk-sim-local"}
        body = {"messages": [{"role": "user", "content": "hi"}]}

        def post(**more: object) -> httpx2.Response:
            return httpx2.post(f"{url}/chat/completions", json={**body, **more}, headers=headers)

        assert post(model="qwen-plus").status_code == 200
        missing = post(model="gpt-4o-mini")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "model_not_found"
        refused = post(model="qwen-plus", stream=True, stream_options={"include_usage": True})
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == "stream_options"
        listed = httpx2.get(f"{url}/models", headers=headers).json()["data"]
        assert [m["id"] for m in listed] == ["qwen-plus"]
    finally:
        process.terminate()
        process.wait(timeout=10)
