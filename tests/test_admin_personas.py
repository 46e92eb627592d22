"""Personas in the console: the files' read-only; those made in the console stored, checked
by the rules of files, and offered by every worker without a restart (here a second server
on the same database stands for another worker or host).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
from flask import Flask

from chatproxy.access.keys import issue_key
from chatproxy.simulator import Simulator
from tests.conftest import LiveServer, serve

WAIT_SECONDS = 15.0  # a worker reads the stored personas again after 5 s
HOSTILE = '<img src=x onerror="window.__pwned=1">'


@pytest.fixture(scope="module")
def workers(make_app: Callable[..., Flask]) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Two servers on one database: the console's and another worker's."""
    with serve(make_app()) as first, serve(make_app()) as second:
        yield first, second


@pytest.fixture(scope="module")
def admin(workers: tuple[LiveServer, LiveServer]) -> dict[str, str]:
    with workers[0].app.app_context():
        key = issue_key(f"persona-admin-{uuid.uuid4().hex[:8]}", admin=True)
    return {"Authorization": f"Bearer {key}"}


def listed(server: LiveServer) -> dict[str, Any]:
    return {p["id"]: p for p in httpx2.get(f"{server.url}/api/personas").json()["data"]}


def wait_until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not check():
        assert time.monotonic() < deadline, "not within the time a worker trusts its copy"
        time.sleep(0.1)


def test_a_persona_made_in_the_console_is_used_by_another_worker(
    workers: tuple[LiveServer, LiveServer], admin: dict[str, str], simulator: Simulator
) -> None:
    console, other = workers
    persona_id = f"pirate-{uuid.uuid4().hex[:6]}"
    prompt = "You are a pirate. Answer like one."
    made = httpx2.post(
        f"{console.url}/api/admin/personas",
        headers=admin,
        json={
            "id": persona_id,
            "name": HOSTILE,
            "messages": [{"role": "system", "content": prompt}],
        },
    )
    assert made.status_code == 201, made.text
    assert made.json()["source"] == "console"
    assert listed(console)[persona_id]["name"] == HOSTILE  # at once where it was made

    wait_until(lambda: persona_id in listed(other))
    simulator.reset()
    answer = httpx2.get(
        f"{other.url}/callChatGPT", params={"input": "Hello", "persona": persona_id}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    assert simulator.requests[-1]["json"]["messages"][0] == {"role": "system", "content": prompt}
    # On the Q&A page, its name is text, escaped.
    page = httpx2.get(f"{other.url}/").text
    assert "&lt;img src=x onerror=" in page and HOSTILE not in page

    changed = httpx2.put(
        f"{console.url}/api/admin/personas/{persona_id}",
        headers=admin,
        json={"name": "Pirate", "messages": [{"role": "system", "content": "Arr."}]},
    )
    assert changed.status_code == 200, changed.text
    wait_until(lambda: listed(other)[persona_id]["messages"][0]["content"] == "Arr.")

    gone = httpx2.delete(f"{console.url}/api/admin/personas/{persona_id}", headers=admin)
    assert gone.json() == {"id": persona_id, "object": "persona.deleted", "deleted": True}
    wait_until(lambda: persona_id not in listed(other))
    refused = httpx2.get(f"{other.url}/callChatGPT", params={"input": "Hi", "persona": persona_id})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "persona_not_found"


def test_file_personas_are_listed_read_only(
    workers: tuple[LiveServer, LiveServer], admin: dict[str, str]
) -> None:
    console, _ = workers
    everyone = httpx2.get(f"{console.url}/api/admin/personas", headers=admin).json()["data"]
    files = {p["id"] for p in everyone if p["source"] == "file"}
    assert "assistant" in files
    body = {"messages": [{"role": "system", "content": "x"}]}
    put = httpx2.put(f"{console.url}/api/admin/personas/assistant", headers=admin, json=body)
    assert put.status_code == 403 and put.json()["error"]["code"] == "persona_read_only"
    deleted = httpx2.delete(f"{console.url}/api/admin/personas/assistant", headers=admin)
    assert deleted.status_code == 403
    for missing in ("no-such-persona", "nul%00"):
        assert (
            httpx2.delete(f"{console.url}/api/admin/personas/{missing}", headers=admin).status_code
            == 404
        )


SYSTEM = [{"role": "system", "content": "Be brief."}]


@pytest.mark.parametrize(
    "body",
    [
        {"messages": SYSTEM},  # no id
        {"id": "", "messages": SYSTEM},
        {"id": "-starts-with-a-dash", "messages": SYSTEM},
        {"id": "has space", "messages": SYSTEM},
        {"id": "x" * 65, "messages": SYSTEM},
        {"id": "assistant", "messages": SYSTEM},  # a file's
        {"id": "ok-id"},
        {"id": "ok-id", "messages": []},
        {"id": "ok-id", "messages": "Be brief."},
        {"id": "ok-id", "messages": [{"role": "tool", "content": "x"}]},
        {"id": "ok-id", "messages": [{"role": "system", "content": "  "}]},
        {"id": "ok-id", "messages": [{"role": "system", "content": "x", "name": "y"}]},
        {"id": "ok-id", "messages": SYSTEM, "model": "gpt-5-imaginary"},
        {"id": "ok-id", "messages": SYSTEM, "name": "n" * 101},
        {"id": "ok-id", "messages": SYSTEM, "colour": "red"},
    ],
)
def test_the_rules_of_persona_files_apply(
    workers: tuple[LiveServer, LiveServer], admin: dict[str, str], body: dict[str, Any]
) -> None:
    answer = httpx2.post(f"{workers[0].url}/api/admin/personas", headers=admin, json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["type"] == "invalid_request_error"
