"""One log line per request: request id in and out, key name, model, status, tokens, time."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest

from chatproxy.access.keys import issue_key
from chatproxy.simulator import Simulator
from tests.conftest import LiveServer, wait_for_record
from tests.servers import Gunicorn, Launcher, upstream_settings


def lines(records: list, request_id: str) -> list[str]:
    return [
        r.getMessage()
        for r in records
        if r.name == "chatproxy.requests" and request_id in r.getMessage()
    ]


def test_every_answer_carries_a_request_id(api_server: LiveServer) -> None:
    made = httpx2.get(f"{api_server.url}/healthz")
    assert len(made.headers["X-Request-Id"]) == 32
    mine = httpx2.get(f"{api_server.url}/healthz", headers={"X-Request-Id": "abc-123.X_y"})
    assert mine.headers["X-Request-Id"] == "abc-123.X_y"
    odd = httpx2.get(f"{api_server.url}/healthz", headers={"X-Request-Id": "a b\tc" + "x" * 80})
    assert odd.headers["X-Request-Id"] != "a b\tc" + "x" * 80


def test_a_json_line_names_the_key_model_status_and_tokens_but_no_secret(
    make_server_with: Callable[..., LiveServer], chatproxy_log: list
) -> None:
    server = make_server_with(CHATPROXY_AUTH="keys", CHATPROXY_LOG_FORMAT="json")
    name = f"log-{uuid.uuid4().hex[:8]}"
    with server.app.app_context():
        key = issue_key(name)
    request_id = uuid.uuid4().hex
    question = "A private question about my health"
    answer = httpx2.get(
        f"{server.url}/callChatGPT",
        params={"input": question, "format": "json", "key": key},
        headers={"X-Request-Id": request_id},
    ).json()
    wait_for_record(chatproxy_log, request_id)
    (line,) = lines(chatproxy_log, request_id)
    entry = json.loads(line)
    assert entry["request_id"] == request_id
    assert (entry["key"], entry["model"], entry["status"]) == (name, "gpt-4o-mini", 200)
    assert entry["path"] == "/callChatGPT"
    assert entry["prompt_tokens"] == answer["usage"]["prompt_tokens"]
    assert entry["completion_tokens"] == answer["usage"]["completion_tokens"]
    assert entry["outcome"] == "ok" and entry["ms"] > 0
    assert key not in line and question not in line and "key=" not in line


def test_a_stream_is_logged_when_it_ends_and_content_only_when_asked(
    make_server_with: Callable[..., LiveServer], chatproxy_log: list
) -> None:
    server = make_server_with(CHATPROXY_LOG_CONTENT="1")
    request_id = uuid.uuid4().hex
    with httpx2.stream(
        "GET",
        f"{server.url}/callChatGPT",
        params={"input": "Stream me", "stream": "1"},
        headers={"X-Request-Id": request_id},
    ) as response:
        body = response.read().decode()
    assert "event: done" in body
    wait_for_record(chatproxy_log, request_id)
    (line,) = lines(chatproxy_log, request_id)
    assert "status=200" in line and "outcome=ok" in line and "completion_tokens=" in line
    assert "input=Stream me" in line


# A path that would forge a line, ring the terminal's colours and hide in other control
# characters (C0, DEL, C1, Unicode's line separator), and a backslash escape of its own.
FORGING_PATH = "/x%0D%0Aforged=1%00%1B[31m%7F%C2%85%E2%80%A8%5Cx0d"
FORGING_SHOWN = r"/x\x0d\x0aforged=1\x00\x1b[31m\x7f\x85\u2028\\x0d"
CONTROLS = ("\r", "\n", "\x00", "\x1b", "\x7f", "\x85", "\u2028")


@pytest.mark.parametrize("log_format", ["plain", "json"])
def test_control_characters_from_the_client_are_escaped_in_the_log(
    make_server_with: Callable[..., LiveServer], chatproxy_log: list, log_format: str
) -> None:
    server = make_server_with(CHATPROXY_LOG_FORMAT=log_format, CHATPROXY_LOG_CONTENT="1")
    path_id, question_id = uuid.uuid4().hex, uuid.uuid4().hex

    response = httpx2.get(f"{server.url}{FORGING_PATH}", headers={"X-Request-Id": path_id})
    asked = httpx2.get(
        f"{server.url}/callChatGPT",
        params={"input": "two\nlines\x1b[0m"},
        headers={"X-Request-Id": question_id},
    )

    assert (response.status_code, asked.status_code) == (404, 200)
    wait_for_record(chatproxy_log, question_id)
    wait_for_record(chatproxy_log, path_id)
    (line,) = lines(chatproxy_log, path_id)
    (question,) = lines(chatproxy_log, question_id)
    assert not any(control in line + question for control in CONTROLS)
    if log_format == "json":
        assert json.loads(line)["path"] == FORGING_SHOWN
        assert json.loads(question)["input"] == r"two\x0alines\x1b[0m"
    else:
        assert f"path={FORGING_SHOWN} " in line
        assert r"input=two\x0alines\x1b[0m" in question


@pytest.fixture(scope="module")
def gunicorn_with_access_log(
    tmp_path_factory: pytest.TempPathFactory, simulator: Simulator, database_url: str
) -> Iterator[tuple[Gunicorn, Path]]:
    folder = tmp_path_factory.mktemp("gunicorn-access-log")
    launcher = Launcher(folder, database_url)
    access_log = folder / "access.log"
    try:
        settings = upstream_settings(simulator, WORKERS="1", ACCESS_LOG=str(access_log))
        yield launcher("access-log", **settings), access_log
    finally:
        launcher.stop_all()


def test_gunicorns_access_log_escapes_control_characters(
    gunicorn_with_access_log: tuple[Gunicorn, Path],
) -> None:
    server, access_log = gunicorn_with_access_log
    before = access_log.read_text() if access_log.exists() else ""

    response = httpx2.get(f"{server.url}{FORGING_PATH}")
    assert response.status_code == 404
    # gunicorn logs the path's bytes as WSGI has them (Latin-1), so U+0085 shows as `Â\x85`.
    shown = r"/x\x0d\x0aforged=1\x00\x1b[31m\x7f"
    deadline = time.monotonic() + 10
    while shown not in access_log.read_text():  # written once the request has ended
        assert time.monotonic() < deadline, access_log.read_text()
        time.sleep(0.05)

    # Other requests (the readiness check's /healthz) may be logged meanwhile: their own lines.
    lines = access_log.read_text()[len(before) :].split("\n")  # not splitlines: it cuts at \x85
    ours = [line for line in lines if "forged=1" in line]
    assert len(ours) == 1 and shown in ours[0]  # one line, none forged
    assert not any(control in line for line in lines for control in CONTROLS)
