"""The upstream client: connections reused and released, the SDK's retry waits, the proxy
fallback, and workers that never load the `openai` SDK."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httpx2
import pytest

from chatproxy.upstream.retries import retry_wait
from tests.conftest import wait_for_record

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def test_connections_to_the_upstream_are_reused(api_server, simulator):
    simulator.reset()
    asked = [
        ("GET", "/callChatGPT", {"params": {"input": "one"}}),
        ("GET", "/callChatGPT", {"params": {"input": "two", "stream": "1"}}),
        ("POST", "/v1/chat/completions", {"json": CHAT}),
        ("POST", "/v1/chat/completions", {"json": {**CHAT, "stream": True}}),
    ]

    for method, path, how in asked:
        response = httpx2.request(method, f"{api_server.url}{path}", timeout=30, **how)
        assert response.status_code == 200

    # One after the other, every answer read to its end: one connection carried them all.
    assert len(simulator.requests) == len(asked)
    assert len({entry["peer"] for entry in simulator.requests}) == 1


def test_a_stream_the_client_left_gives_its_connection_up(
    make_server_with, simulator, chatproxy_log
):
    server = make_server_with(CHATPROXY_MAX_CONNECTIONS="1", CHATPROXY_TIMEOUT="5")
    simulator.reset()
    body = {**CHAT, "stream": True, "messages": [{"role": "user", "content": "long"}]}
    body["messages"][0]["content"] = "long [[sim: chunks=50 delay=0.1]]"
    with httpx2.stream("POST", f"{server.url}/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                break  # the client leaves after the first event
    wait_for_record(chatproxy_log, "client went away")

    # The only place in the pool is free again (else this waits 5 s for it and gets a 504),
    # and the connection left mid-answer was closed, not given to the next request.
    after = httpx2.post(f"{server.url}/v1/chat/completions", json=CHAT, timeout=30)

    assert after.status_code == 200
    first, second = (entry["peer"] for entry in simulator.requests)
    assert first != second


@pytest.mark.parametrize(
    ("headers", "low", "high"),
    [
        ({"retry-after": "2"}, 2.0, 2.0),
        ({"retry-after-ms": "1500"}, 1.5, 1.5),
        ({"retry-after": formatdate(usegmt=True)}, 0.375, 0.5),  # now: not over 0, backoff
        ({"retry-after": "61"}, 0.375, 0.5),  # too long to wait for: backoff
        ({"retry-after": "soon"}, 0.375, 0.5),
        ({}, 0.375, 0.5),
    ],
    ids=["seconds", "milliseconds", "date", "too long", "unreadable", "none"],
)
def test_the_wait_before_a_retry_is_the_sdks(headers, low, high):
    assert low <= retry_wait(0, headers) <= high


def test_backoff_doubles_up_to_eight_seconds():
    assert 0.75 <= retry_wait(1, {}) <= 1.0
    assert 6.0 <= retry_wait(4, {}) <= 8.0
    assert 6.0 <= retry_wait(9, {}) <= 8.0


class ForwardProxy(ThreadingHTTPServer):
    """A plain HTTP forward proxy (absolute-form requests) that counts what it carried; it
    passes streams on as they come."""

    daemon_threads = True
    carried: list[str]


class _Forward(BaseHTTPRequestHandler):
    server: ForwardProxy

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        self.server.carried.append(url.path)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        upstream = http.client.HTTPConnection(url.netloc, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "proxy-connection"}
        upstream.request("POST", url.path, body, headers)
        answer = upstream.getresponse()
        if answer.getheader("Content-Type", "").startswith("text/event-stream"):
            # Passed on as it comes (HTTP/1.0: the body ends with the connection).
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.getheader("Content-Type"))
            self.end_headers()
            while piece := answer.read1(65536):
                self.wfile.write(piece)
                self.wfile.flush()
            upstream.close()
            return
        content = answer.read()
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.getheader("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)
        upstream.close()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def forward_proxy() -> Iterator[ForwardProxy]:
    proxy = ForwardProxy(("127.0.0.1", 0), _Forward)
    proxy.carried = []
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    yield proxy
    proxy.shutdown()
    proxy.server_close()


@pytest.mark.parametrize("stream", [False, True])
def test_with_a_proxy_questions_go_through_it(make_server_with, forward_proxy, stream):
    port = forward_proxy.server_address[1]
    server = make_server_with(OPENAI_PROXY=f"http://127.0.0.1:{port}")

    response = httpx2.post(
        f"{server.url}/v1/chat/completions", json={**CHAT, "stream": stream}, timeout=30
    )

    assert response.status_code == 200
    assert response.text.rstrip().endswith("data: [DONE]") if stream else response.json()
    assert forward_proxy.carried == ["/v1/chat/completions"]


def test_with_a_proxy_uploads_and_audio_go_through_it(make_server_with, forward_proxy):
    # Through the SDK (OPENAI_PROXY): an upload's bytes as they came, its Content-Type kept.
    port = forward_proxy.server_address[1]
    server = make_server_with(OPENAI_PROXY=f"http://127.0.0.1:{port}")
    audio = bytes(range(256)) * 40

    transcript = httpx2.post(
        f"{server.url}/v1/audio/transcriptions",
        data={"model": "whisper-1"},
        files={"file": ("a.wav", audio)},
        timeout=30,
    )
    speech = httpx2.post(
        f"{server.url}/v1/audio/speech",
        json={"model": "tts-1", "voice": "alloy", "input": "hi"},
        timeout=30,
    )

    assert transcript.status_code == 200, transcript.text
    assert f"holds {len(audio)} bytes" in transcript.json()["text"]
    assert speech.status_code == 200 and speech.headers["content-type"] == "audio/mpeg"
    assert forward_proxy.carried == ["/v1/audio/transcriptions", "/v1/audio/speech"]


def test_with_a_proxy_an_idle_stream_still_gets_keepalive_comments(make_server_with, forward_proxy):
    # The SDK's responses cannot mark silence as the lean client's do: a helper thread
    # times it instead (chatproxy.web.sse).
    port = forward_proxy.server_address[1]
    server = make_server_with(OPENAI_PROXY=f"http://127.0.0.1:{port}", CHATPROXY_KEEPALIVE="0.2")

    with httpx2.stream(
        "GET",
        f"{server.url}/callChatGPT",
        params={"input": "slow [[sim: chunks=3 delay=0.7]]", "stream": "1"},
        timeout=30,
    ) as response:
        lines = list(response.iter_lines())

    deltas = [i for i, line in enumerate(lines) if line == "event: delta"]
    keepalives = [i for i, line in enumerate(lines) if line.startswith(":")]
    assert len(deltas) == 3 and "event: done" in lines
    assert any(deltas[0] < i < deltas[1] for i in keepalives)
    assert forward_proxy.carried == ["/v1/chat/completions"]


SDK_MODULES = ("openai", "httpx2", "httpcore2", "httpx", "httpcore")
WORKER = """
import json, sys
from chatproxy import create_app

# As gunicorn's workers make it (wsgi.py): no `flask` commands, no Alembic.
app = create_app(json.loads(sys.argv[1]), commands=False)
client = app.test_client()
whole = client.post("/v1/chat/completions", json=json.loads(sys.argv[2]))
streamed = client.get("/callChatGPT?input=hi&stream=1", headers={"Idempotency-Key": "once"})
assert whole.status_code == 200 and streamed.status_code == 200, (whole.data, streamed.data)
assert b"event: done" in streamed.data, streamed.data
wanted = sys.argv[3:]
print(json.dumps(sorted(n for n in sys.modules for w in wanted if n == w or n.startswith(w + "."))))
"""


def test_a_worker_without_a_proxy_never_imports_the_sdk(app_env):
    # `import openai` (with pydantic and httpx2) cost about 32 MB in every worker.
    ran = subprocess.run(
        [sys.executable, "-c", WORKER, json.dumps(app_env), json.dumps(CHAT), *SDK_MODULES],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout.splitlines()[-1]) == []


def test_a_worker_on_sqlite_never_imports_postgresql(app_env):
    # SQLAlchemy's PostgreSQL dialect cost a worker on SQLite about 2 MB.
    if not app_env["DATABASE_URL"].startswith("sqlite"):
        pytest.skip("SQLite only")
    ran = subprocess.run(
        [
            sys.executable,
            "-c",
            WORKER,
            json.dumps(app_env),
            json.dumps(CHAT),
            "sqlalchemy.dialects.postgresql",
            "psycopg",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout.splitlines()[-1]) == []
