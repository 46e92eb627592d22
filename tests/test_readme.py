"""The README's requests, run as written against a server with the default settings.

Every `curl` line of the README (and its Python example) is read from
README.md, pointed at a real server in keys mode with every other setting at
its default (the upstream is the simulator), given a fresh access key for
`$KEY`, and must be answered as a user expects: 200, with an answer.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest
from flask import Flask

from chatproxy.access.keys import issue_key
from tests.conftest import LiveServer, serve
from tests.servers import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
README_URL = "http://127.0.0.1:8000"


def code_blocks(language: str) -> list[str]:
    """The README's fenced code blocks in `language`."""
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.MULTILINE | re.DOTALL)


def curl_commands() -> list[str]:
    """Each `curl` command of the README's shell blocks, continuation lines joined."""
    commands = []
    for block in code_blocks("sh"):
        joined = re.sub(r"\\\n\s*", " ", block)
        commands += [line.strip() for line in joined.splitlines() if line.startswith("curl ")]
    return commands


@dataclass
class Request:
    """What a `curl` command line sends (the options the README uses)."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    params: list[tuple[str, str]] = field(default_factory=list)
    body: str | None = None


def as_request(command: str, key: str, base_url: str) -> Request:
    """The request `command` makes, with `$KEY` as `key` and the README's host as `base_url`."""
    words = shlex.split(command.replace("$KEY", key))[1:]
    get, data, url, headers = False, [], "", {}
    while words:
        word = words.pop(0)
        if word == "-G":
            get = True
        elif word == "-N":
            pass  # no buffering: the whole answer is read anyway
        elif word == "-H":
            name, _, value = words.pop(0).partition(":")
            headers[name.strip()] = value.strip()
        elif word in ("-d", "--data-urlencode"):
            data.append(words.pop(0))
        elif word.startswith("http"):
            url = word.replace(README_URL, base_url)
        else:
            raise AssertionError(f"an option this test does not know: {word!r} in {command}")
    if get:
        params = [tuple(item.split("=", 1)) for item in data]
        return Request("GET", url, headers, params)  # type: ignore[arg-type]
    return Request("POST" if data else "GET", url, headers, body="&".join(data) or None)


@pytest.fixture(scope="module")
def default_server(make_app: Callable[..., Flask]) -> Iterator[LiveServer]:
    """Default settings but the upstream (the simulator) and the store: keys mode and all."""
    with serve(make_app(CHATPROXY_AUTH="keys")) as server:
        yield server


@pytest.fixture(scope="module")
def key(default_server: LiveServer) -> str:
    """An access key, as `make key` makes one."""
    with default_server.app.app_context():
        return issue_key("readme")


def test_the_readme_shows_the_requests_this_test_runs() -> None:
    urls = [re.search(r"http\S+", command).group() for command in curl_commands()]  # type: ignore[union-attr]
    assert f"{README_URL}/v1/completions" in urls
    assert f"{README_URL}/v1/chat/completions" in urls
    assert f"{README_URL}/callChatGPT" in urls


@pytest.mark.parametrize("command", curl_commands(), ids=lambda c: c.split(README_URL)[1][:40])
def test_each_readme_curl_command_is_answered_with_default_settings(
    command: str, default_server: LiveServer, key: str
) -> None:
    request = as_request(command, key, default_server.url)
    content_type = request.headers.get("Content-Type", "application/x-www-form-urlencoded")
    headers = {**request.headers, "Content-Type": content_type} if request.body else request.headers

    response = httpx2.request(
        request.method,
        request.url,
        headers=headers,
        params=request.params,
        content=request.body,
        timeout=30,
    )

    assert response.status_code == 200, response.text
    assert response.text.strip()
    if "/v1/completions" in request.url:
        completion = response.json()
        assert completion["object"] == "text_completion"
        assert completion["choices"][0]["text"]
        assert completion["usage"]["completion_tokens"] <= json.loads(request.body or "{}").get(
            "max_tokens", 16
        )


def test_the_readme_python_example_prints_an_answer(default_server: LiveServer, key: str) -> None:
    (example,) = [block for block in code_blocks("python") if "from openai import" in block]
    source = example.replace(f"{README_URL}/v1", f"{default_server.url}/v1").replace(
        '"cpk-..."', repr(key)
    )
    printed = io.StringIO()
    namespace: dict[str, Any] = {}

    with contextlib.redirect_stdout(printed):
        exec(compile(source, "README.md", "exec"), namespace)

    assert "阿根廷" in printed.getvalue()  # the simulator's answer to the README's question
