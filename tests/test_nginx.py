"""chatproxy behind nginx, configured by the sample site in deploy/nginx/, as a real program.

Most tests have nginx in front of one gunicorn; those of several instances put
two behind the site's one `upstream` block, sharing the store and Redis, as
docs/production.md's "Several gunicorn hosts behind one nginx" says.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

from chatproxy.simulator import Simulator
from tests.conftest import need
from tests.servers import (
    REDIS_URL,
    ROOT,
    WORLD_CUP,
    Gunicorn,
    Launcher,
    accepts_connections,
    free_port,
    make_key,
    redis_is_there,
    served_by,
    streams_in_flight,
    upstream_settings,
)
from tests.sse_events import Event, EventReader, read_events

pytestmark = pytest.mark.e2e

SITE = ROOT / "deploy" / "nginx" / "chatproxy.conf"


def site_for_test(gunicorn_addresses: Sequence[str], port: int, folder: Path) -> str:
    """The sample site with its addresses and paths pointed at this test's servers.

    The sample's one `server` line in its `upstream` block becomes one per
    address in `gunicorn_addresses` (`host:port`); the rest of the block stays.
    """
    site = SITE.read_text()
    servers = "\n    ".join(f"server {address};" for address in gunicorn_addresses)
    replacements = {
        "listen 80;": f"listen 127.0.0.1:{port};",
        "server 127.0.0.1:8000;": servers,
        "/srv/chatproxy/static/": f"{ROOT}/static/",
        "/var/log/nginx/chatproxy.access.log": f"{folder}/access.log",
    }
    for sample, ours in replacements.items():
        assert sample in site, f"deploy/nginx/chatproxy.conf no longer has {sample!r}"
        site = site.replace(sample, ours)
    return site


@contextmanager
def running_nginx(folder: Path, gunicorn_addresses: Sequence[str]) -> Iterator[str]:
    """nginx with the sample site on a free loopback port, in front of `gunicorn_addresses`.

    Yields its base URL; nginx is stopped when the block ends.
    """
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if binary is None:
        need("nginx", "apt-get install nginx-light")
    port = free_port()
    (folder / "site.conf").write_text(site_for_test(gunicorn_addresses, port, folder))
    (folder / "nginx.conf").write_text(
        f"""daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    include {folder}/site.conf;
}}
"""
    )
    process = subprocess.Popen(
        [
            binary,
            "-p",
            str(folder),
            "-c",
            str(folder / "nginx.conf"),
            "-e",
            str(folder / "error.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not accepts_connections(port):
            if process.poll() is not None or time.monotonic() > deadline:
                errors = process.stderr.read().decode() if process.stderr else ""
                pytest.fail(f"nginx did not start on port {port}: {errors}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def address(server: Gunicorn) -> str:
    """`host:port` of `server`, as an nginx `server` line names it."""
    return server.url.removeprefix("http://")


@pytest.fixture(scope="module")
def upstream_gunicorn(
    tmp_path_factory: pytest.TempPathFactory, simulator: Simulator, database_url: str
) -> Iterator[Gunicorn]:
    launcher = Launcher(tmp_path_factory.mktemp("gunicorn-behind-nginx"), database_url)
    try:
        settings = upstream_settings(simulator, WORKERS="1", CHATPROXY_TRUSTED_PROXIES="1")
        yield launcher("behind-nginx", **settings)
    finally:
        launcher.stop_all()


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory, upstream_gunicorn: Gunicorn) -> Iterator[str]:
    """nginx on a free loopback port in front of gunicorn; yields its base URL."""
    with running_nginx(tmp_path_factory.mktemp("nginx"), [address(upstream_gunicorn)]) as url:
        yield url


@dataclass
class Instances:
    """Two gunicorn instances behind one nginx, sharing the store and Redis, in keys mode.

    `url` is nginx's, `nginx_log` its error log; `settings` reach the same store
    (for `make_key`).
    """

    url: str
    nginx_log: Path
    servers: tuple[Gunicorn, Gunicorn]
    settings: dict[str, str]


@contextmanager
def two_instances_behind_nginx(
    folder: Path, simulator: Simulator, database_url: str
) -> Iterator[Instances]:
    """Start two gunicorns (one gevent worker each) and nginx in front of both; stop them after."""
    redis_is_there()
    launcher = Launcher(folder, database_url)
    settings = upstream_settings(
        simulator, CHATPROXY_AUTH="keys", REDIS_URL=REDIS_URL, CHATPROXY_TRUSTED_PROXIES="1"
    )
    try:
        servers = (
            launcher("instance-a", WORKERS="1", **settings),
            launcher("instance-b", WORKERS="1", **settings),
        )
        with running_nginx(folder, [address(server) for server in servers]) as url:
            settings = {**settings, "DATABASE_URL": database_url}
            yield Instances(url, folder / "error.log", servers, settings)
    finally:
        for server, _ in launcher.started:  # both stop at once
            server.terminate()
        launcher.stop_all()


@pytest.fixture(scope="module")
def instances(
    tmp_path_factory: pytest.TempPathFactory, simulator: Simulator, database_url: str
) -> Iterator[Instances]:
    """Two instances behind one nginx, shared by the tests that only ask."""
    folder = tmp_path_factory.mktemp("nginx-two-instances")
    with two_instances_behind_nginx(folder, simulator, database_url) as started:
        yield started


@pytest.fixture
def instances_to_kill(
    tmp_path_factory: pytest.TempPathFactory, simulator: Simulator, database_url: str
) -> Iterator[Instances]:
    """Two instances behind one nginx for one test, which may kill one."""
    folder = tmp_path_factory.mktemp("nginx-instances-to-kill")
    with two_instances_behind_nginx(folder, simulator, database_url) as started:
        yield started


def recorded_request(simulator: Simulator, marker: str) -> dict[str, Any]:
    """The one request the simulator received whose last message holds `marker`."""
    found = [
        request
        for request in simulator.requests
        if isinstance(request["json"], dict)
        and marker in str(request["json"].get("messages", [{}])[-1].get("content"))
    ]
    assert len(found) == 1, f"the simulator received {len(found)} requests with {marker}"
    return found[0]


def test_page_and_static_files_load_through_nginx(nginx):
    page = httpx2.get(nginx + "/")
    script = httpx2.get(nginx + "/static/js/app.js")

    assert page.status_code == 200
    assert "<title>" in page.text
    assert script.status_code == 200
    # nginx itself served the file: gunicorn would have added chatproxy's headers.
    assert "content-security-policy" not in script.headers
    assert script.headers["server"].startswith("nginx")


def test_answer_streams_piece_by_piece_through_nginx(nginx, simulator):
    """Each piece leaves nginx within 200 ms of the upstream sending it, not buffered."""
    marker = uuid.uuid4().hex
    with httpx2.stream(
        "GET",
        nginx + "/callChatGPT",
        params={"input": f"tell me {marker} [[sim: chunks=6 delay=0.3]]", "stream": "1"},
        timeout=30,
    ) as response:
        events = read_events(response)

    deltas = [event.at for event in events if event.name == "delta"]
    assert len(deltas) == 6
    # Buffered by nginx, the pieces would arrive together at the end.
    assert deltas[-1] - deltas[0] > 1.0
    assert events[-1].name == "done"
    # The simulator runs in this process; time.monotonic() is one clock system-wide.
    sent = recorded_request(simulator, marker)["sent"]
    assert len(sent) == len(deltas)
    late = [round(arrived - left, 3) for left, arrived in zip(sent, deltas, strict=True)]
    assert all(0 <= lag <= 0.2 for lag in late), f"seconds from upstream to client: {late}"


def test_questions_stay_out_of_the_access_log(nginx, tmp_path_factory):
    response = httpx2.get(nginx + "/callChatGPT", params={"input": "my private question 4711"})
    assert response.status_code == 200

    logs = list(Path(tmp_path_factory.getbasetemp()).glob("nginx*/access.log"))
    text = "".join(log.read_text() for log in logs)
    assert "GET /callChatGPT HTTP/1.1" in text
    assert "4711" not in text


def test_oversized_body_is_413_in_openai_shape(nginx):
    response = httpx2.post(nginx + "/callChatGPT", data={"input": "x" * (2 * 1024 * 1024)})

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_uploads_may_be_larger_on_their_paths_only(nginx):
    audio = b"\x01" * (3 * 1024 * 1024)  # over the 1 MiB of every other path
    answer = httpx2.post(
        nginx + "/v1/audio/transcriptions",
        data={"model": "whisper-1"},
        files={"file": ("talk.mp3", audio)},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert f"holds {len(audio)} bytes" in answer.json()["text"]
    chat = httpx2.post(nginx + "/v1/chat/completions", content=audio, timeout=30)
    assert chat.status_code == 413
    assert chat.json()["error"]["code"] == "request_too_large"


def test_the_client_address_is_the_clients_not_nginxs(nginx, upstream_gunicorn):
    """Behind nginx (CHATPROXY_TRUSTED_PROXIES=1) chatproxy sees the client's address.

    It is what the per-address rate limit counts by (`request.remote_addr`), and
    what the request log says. The client connects from 127.0.0.2, nginx from
    127.0.0.1; a forged X-Forwarded-For from the client does not change it.
    """
    request_id = uuid.uuid4().hex
    transport = httpx2.HTTPTransport(local_address="127.0.0.2")
    with httpx2.Client(transport=transport, timeout=10) as client:
        response = client.get(
            f"{nginx}/healthz",
            headers={"X-Request-Id": request_id, "X-Forwarded-For": "203.0.113.9"},
        )
    assert response.status_code == 200
    deadline = time.monotonic() + 10
    while request_id not in upstream_gunicorn.log():
        assert time.monotonic() < deadline, upstream_gunicorn.log()[-2000:]
        time.sleep(0.05)
    line = next(line for line in upstream_gunicorn.log().splitlines() if request_id in line)
    assert "client=127.0.0.2 " in line, line


def test_metrics_through_nginx_are_for_this_host_only(nginx, upstream_gunicorn):
    """nginx lets 127.0.0.1 through to /metrics and names it to chatproxy, whatever the client
    claims; chatproxy, which serves loopback clients only, agrees. Others get a 403 from nginx
    in OpenAI's shape, and chatproxy itself refuses a non-loopback client as its proxy names it.
    """
    here = httpx2.get(f"{nginx}/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    transport = httpx2.HTTPTransport(local_address="127.0.0.2")
    with httpx2.Client(transport=transport, timeout=10) as client:
        elsewhere = client.get(f"{nginx}/metrics")
    past_nginx = httpx2.get(
        f"{upstream_gunicorn.url}/metrics", headers={"X-Forwarded-For": "203.0.113.9"}
    )

    assert here.status_code == 200 and "chatproxy_requests_total" in here.text
    for refused in (elsewhere, past_nginx):
        assert refused.status_code == 403
        assert refused.json()["error"]["type"] == "permission_error"


def test_nginx_says_no_gunicorn_answers_in_openai_shape(tmp_path_factory, nginx):
    """With no gunicorn listening, nginx answers 502 in OpenAI's error shape, not an HTML page.

    chatproxy's own 502 (its upstream failed) still passes through unchanged.
    """
    folder = tmp_path_factory.mktemp("nginx-nobody-home")
    with running_nginx(folder, [f"127.0.0.1:{free_port()}"]) as nobody:
        response = httpx2.get(nobody + "/callChatGPT", params={"input": "anyone?"})
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["type"] == "server_error"
    assert error["code"] == "service_unavailable"

    failed = httpx2.get(nginx + "/callChatGPT", params={"input": "[[sim: fault=server_error]]"})
    assert failed.status_code == 502
    assert failed.json()["error"]["code"] != "service_unavailable"
    assert "x-request-id" in failed.headers  # chatproxy's answer, not nginx's


def test_a_conversation_goes_on_through_nginx_on_the_other_instance(instances):
    """Started on one instance through nginx, a conversation goes on on the other.

    Which instance served a request is in its log, under the X-Request-Id we send.
    """
    auth = {"Authorization": f"Bearer {make_key(instances.settings)}"}
    first_id, second_id = uuid.uuid4().hex, uuid.uuid4().hex
    with httpx2.Client(base_url=instances.url, headers=auth, timeout=20) as client:
        started = client.get(
            "/callChatGPT", params={"input": WORLD_CUP}, headers={"X-Request-Id": first_id}
        )
        assert started.status_code == 200
        conversation_id = started.headers["X-Conversation-Id"]
        going_on = client.get(
            "/callChatGPT",
            params={"input": "在哪里举办的?", "conversation_id": conversation_id},
            headers={"X-Request-Id": second_id},
        )
        alone = client.get("/callChatGPT", params={"input": "在哪里举办的?"})
        stored = client.get(f"/api/conversations/{conversation_id}")

    assert served_by(first_id, instances.servers) is not served_by(second_id, instances.servers)
    assert going_on.status_code == 200
    assert going_on.headers["X-Conversation-Id"] == conversation_id
    # Answerable only with the first turn, which the other instance stored.
    assert "卡塔尔" in going_on.text
    assert alone.status_code == 200
    assert "卡塔尔" not in alone.text
    assert stored.status_code == 200
    messages = [(m["role"], m["content"]) for m in stored.json()["messages"]]
    assert messages == [
        ("user", WORLD_CUP),
        ("assistant", started.text),
        ("user", "在哪里举办的?"),
        ("assistant", going_on.text),
    ]


def test_a_rate_limit_holds_across_instances_through_nginx(instances):
    """A key allowed 6 requests a minute gets 6 answers and 6 refusals, though both serve it."""
    auth = {"Authorization": f"Bearer {make_key(instances.settings, rpm=6)}"}
    served: dict[str, list[int]] = {server.url: [] for server in instances.servers}
    responses = []
    with httpx2.Client(base_url=instances.url, headers=auth, timeout=10) as client:
        for _ in range(12):
            request_id = uuid.uuid4().hex
            response = client.get("/v1/models", headers={"X-Request-Id": request_id})
            responses.append(response)
            served[served_by(request_id, instances.servers).url].append(response.status_code)

    assert sorted(r.status_code for r in responses) == [200] * 6 + [429] * 6
    refused = [r for r in responses if r.status_code == 429]
    assert all(r.json()["error"]["type"] for r in refused)
    assert all(int(r.headers["retry-after"]) > 0 for r in refused)
    # Each instance refused some, after fewer than 6 answers of its own: the count is shared.
    assert all(429 in statuses for statuses in served.values()), served


@dataclass
class Asked:
    """What a client saw of one streamed question through nginx."""

    question: str
    request_id: str
    status: int | None = None
    conversation_id: str | None = None
    body: str = ""  # of an answer that is not 200
    events: list[Event] = field(default_factory=list)
    broken: bool = False  # the connection broke before the body ended

    @property
    def whole(self) -> bool:
        """The whole answer arrived: status 200 and a `done` event at the end."""
        return self.status == 200 and bool(self.events) and self.events[-1].name == "done"

    @property
    def text(self) -> str:
        """The answer as far as it arrived."""
        return "".join(event.data["content"] for event in self.events if event.name == "delta")


async def ask_streamed(
    client: httpx2.AsyncClient,
    question: str,
    method: str = "GET",
    on_first_piece: Callable[[], Any] | None = None,
) -> Asked:
    """Ask `question` for a streamed answer (GET query or POST JSON), and read what comes."""
    asked = Asked(question, uuid.uuid4().hex)
    how: dict[str, Any] = (
        {"params": {"input": question, "stream": "1"}}
        if method == "GET"
        else {"json": {"input": question, "stream": True}}
    )
    reader = EventReader()
    try:
        async with client.stream(
            method, "/callChatGPT", headers={"X-Request-Id": asked.request_id}, **how
        ) as response:
            asked.status = response.status_code
            asked.conversation_id = response.headers.get("x-conversation-id")
            if response.status_code != 200:
                asked.body = (await response.aread()).decode()
                return asked
            async for line in response.aiter_lines():
                if (event := reader.feed(line)) is None:
                    continue
                asked.events.append(event)
                if on_first_piece is not None and event.name == "delta":
                    on_first_piece()
                    on_first_piece = None
    except httpx2.TransportError:
        asked.broken = True
    return asked


def test_an_instance_killed_under_load_loses_no_accepted_question(instances_to_kill):
    """SIGKILL one of two instances while 20 answers stream through nginx.

    Each question is either answered whole and stored exactly as the client got
    it, or the client sees it fail (an error in OpenAI's shape, or a stream cut
    without `done`) and the store keeps the question without an answer marked
    ok. Questions asked once the killed instance refuses connections, GET and
    POST, are answered by the other: nginx passes a refused connection on to
    the next server. (Asked in the moment it dies, a POST may get nginx's 502
    instead: nginx does not send a POST again once it has sent it.)
    """
    victim, survivor = instances_to_kill.servers
    victim_port = int(victim.url.rsplit(":", 1)[1])
    key = make_key(instances_to_kill.settings)
    run = uuid.uuid4().hex[:8]
    count, late_count = 20, 4

    async def has_streams(server: Gunicorn) -> bool:
        return await asyncio.to_thread(streams_in_flight, server) > 0

    async def kill_while_streaming() -> tuple[list[Asked], list[Asked]]:
        started = asyncio.Semaphore(0)
        async with httpx2.AsyncClient(
            base_url=instances_to_kill.url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
            limits=httpx2.Limits(max_connections=count + late_count),
        ) as client:
            streams = [
                asyncio.create_task(
                    ask_streamed(
                        client,
                        f"slow {run}-{i} [[sim: chunks=10 delay=0.3]]",
                        on_first_piece=started.release,
                    )
                )
                for i in range(count)
            ]
            for _ in range(count):  # every answer has begun to arrive
                await asyncio.wait_for(started.acquire(), timeout=30)
            deadline = time.monotonic() + 10
            while not all(await asyncio.gather(*map(has_streams, (victim, survivor)))):
                assert time.monotonic() < deadline, "the streams are not on both instances"
                await asyncio.sleep(0.05)
            os.killpg(victim.process.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while accepts_connections(victim_port):  # dead once its port refuses connections
                assert time.monotonic() < deadline, "the killed instance still accepts connections"
                await asyncio.sleep(0.01)
            late = [
                asyncio.create_task(
                    ask_streamed(
                        client,
                        f"late {run}-{i} [[sim: chunks=3 delay=0.1]]",
                        method="POST" if i % 2 else "GET",
                    )
                )
                for i in range(late_count)
            ]
            return await asyncio.gather(*streams), await asyncio.gather(*late)

    first, late = asyncio.run(kill_while_streaming())
    victim.stop()  # reaps it

    cut = [asked for asked in first if not asked.whole]
    assert cut, "no stream was on the killed instance: the kill proved nothing"
    assert all(asked.whole for asked in late), [(a.status, a.body, a.broken) for a in late]
    nginx_log = instances_to_kill.nginx_log.read_text()
    refused = [
        line
        for line in nginx_log.splitlines()
        if "Connection refused" in line and f"//{address(victim)}/" in line
    ]
    assert refused, f"nginx never tried the killed instance after the kill:\n{nginx_log}"
    # Whole answers came from the survivor (logged as they ended), cut ones never reached it.
    for asked in [a for a in first if a.whole] + late:
        assert served_by(asked.request_id, [survivor, victim]) is survivor
    survivor_log = survivor.log()
    assert not [asked for asked in cut if asked.request_id in survivor_log]

    auth = {"Authorization": f"Bearer {key}"}
    with httpx2.Client(base_url=instances_to_kill.url, headers=auth, timeout=20) as client:
        fresh_id = uuid.uuid4().hex
        fresh = client.get(
            "/callChatGPT", params={"input": WORLD_CUP}, headers={"X-Request-Id": fresh_id}
        )
        assert fresh.status_code == 200
        assert "阿根廷" in fresh.text
        assert served_by(fresh_id, [survivor, victim]) is survivor

        for asked in first + late:
            if asked.whole:
                done = asked.events[-1].data
                stored = client.get(f"/api/conversations/{done['conversation_id']}").json()
                messages = [(m["role"], m["content"], m["status"]) for m in stored["messages"]]
                assert messages == [
                    ("user", asked.question, "ok"),
                    ("assistant", asked.text, "ok"),
                ]
                assert stored["messages"][-1]["id"] == done["message_id"]
                continue
            # Cut mid-stream (200, no `done`), or refused in OpenAI's shape.
            assert asked.status is not None, "nginx gave no answer at all"
            if asked.status != 200:
                assert json.loads(asked.body)["error"]["message"], asked.body
            if asked.conversation_id is not None:
                stored = client.get(f"/api/conversations/{asked.conversation_id}").json()
                assert stored["messages"][0]["content"] == asked.question
                assert not [m for m in stored["messages"][1:] if m["status"] == "ok"]

        # Nothing half-stored anywhere: every answer marked ok is one a client got whole,
        # also in a conversation nginx passed on to the survivor after the victim had stored it.
        whole = {asked.question: asked.text for asked in [*first, *late] if asked.whole}
        whole[WORLD_CUP] = fresh.text
        listed = client.get("/api/conversations", params={"limit": 200}).json()["data"]
        assert len(listed) < 200
        for summary in listed:
            stored = client.get(f"/api/conversations/{summary['id']}").json()["messages"]
            question = stored[0]["content"]
            for message in stored[1:]:
                if message["role"] == "assistant" and message["status"] == "ok":
                    assert question in whole, f"an answer to {question!r} nobody got whole"
                    assert message["content"] == whole[question]
