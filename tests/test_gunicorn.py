"""Real gunicorn, as docs/production.md starts it: gevent workers, streaming, start-up, stop.

Servers are started by `tests.servers` exactly as docs/production.md says. The
upstream is the `simulator` fixture over real HTTP, except in simulator
mode, where gunicorn starts its own.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx2
import pytest

from chatproxy.simulator import Simulator
from tests.conftest import raw_http
from tests.servers import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    WORLD_CUP,
    Gunicorn,
    Launcher,
    accepts_connections,
    free_port,
    upstream_settings,
)
from tests.sse_events import Event, EventReader, read_events

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Launcher]:
    """Every gunicorn this module starts; all are stopped when the module ends."""
    launch = Launcher(tmp_path_factory.mktemp("gunicorn"), database_url)
    yield launch
    launch.stop_all()


@pytest.fixture
def launch(launcher: Launcher) -> Iterator[Launcher]:
    """Start gunicorn for one test; what it started is stopped after the test."""
    already = len(launcher.started)
    yield launcher
    for server, _ in reversed(launcher.started[already:]):
        server.stop()


@pytest.fixture(scope="module")
def gunicorn(launcher: Launcher, simulator: Simulator) -> Gunicorn:
    """One gunicorn with ONE gevent worker, shared by the tests that only ask questions."""
    return launcher("shared", **upstream_settings(simulator, WORKERS="1"))


@pytest.fixture
def client(gunicorn: Gunicorn) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=gunicorn.url, timeout=30) as client:
        yield client


async def stream_answer(
    client: httpx2.AsyncClient, question: str, on_first_piece: Callable[[], Any] | None = None
) -> tuple[list[Event], float | None, float]:
    """Ask for a streamed answer: its events, when the first delta came, when the stream ended.

    `on_first_piece` runs as the first delta arrives.
    """
    events: list[Event] = []
    first = None
    reader = EventReader()
    async with client.stream(
        "GET", "/callChatGPT", params={"input": question, "stream": "1"}
    ) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if (event := reader.feed(line)) is None:
                continue
            events.append(event)
            if event.name == "delta" and first is None:
                first = event.at
                if on_first_piece is not None:
                    on_first_piece()
    return events, first, time.monotonic()


def concurrent_client(base_url: str, count: int) -> httpx2.AsyncClient:
    """One asyncio client for `count` simultaneous streams, each on its own connection.

    One thread for all of them: 100 client threads (or clients, 25 ms of CPU
    each to build) would compete for the test process's GIL and skew the timing.
    """
    return httpx2.AsyncClient(
        base_url=base_url,
        timeout=60,
        limits=httpx2.Limits(max_connections=count, max_keepalive_connections=count),
    )


class _ElementText(HTMLParser):
    """The visible text inside the first element whose class list has `css_class`."""

    def __init__(self, css_class: str) -> None:
        super().__init__()
        self.css_class = css_class
        self.depth = 0  # >0 while inside the element
        self.done = False
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.depth:
            self.depth += 1
        elif not self.done and self.css_class in (dict(attrs).get("class") or "").split():
            self.depth = 1

    def handle_endtag(self, tag: str) -> None:
        if self.depth:
            self.depth -= 1
            self.done = not self.depth

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.parts.append(data)


def element_text(html: str, css_class: str) -> str | None:
    """Whitespace-collapsed text of the first element of `css_class`, None if there is none."""
    parser = _ElementText(css_class)
    parser.feed(html)
    if not parser.done:
        return None
    return " ".join("".join(parser.parts).split())


def page_title(html: str) -> str:
    """The text of the page's <title>."""
    match = re.search(r"<title>(.*?)</title>", html, re.DOTALL)
    assert match, "the page has no <title>"
    return match.group(1).strip()


def test_gevent_worker_serves_the_page_and_answers(
    gunicorn: Gunicorn, client: httpx2.Client
) -> None:
    """Started from gunicorn.conf.py, gunicorn runs gevent workers that serve page and answers."""
    assert "Using worker: gevent" in gunicorn.log()

    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "chatproxy" in page_title(page.text)
    assert element_text(page.text, "banner-demo") is None  # a real upstream: no demo banner

    answer = client.get("/callChatGPT", params={"input": WORLD_CUP})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    assert "阿根廷" in answer.text


def test_the_master_carries_no_database_code_into_its_workers(
    gunicorn: Gunicorn, client: httpx2.Client
) -> None:
    """Workers are forked from the master: what it loaded, every worker would carry too.

    The master migrates the database in a child process, so SQLAlchemy (a C
    extension, seen in the process's memory map) is loaded by the workers only.
    """
    assert client.get("/v1/models").status_code == 200  # the workers have used the store
    master = gunicorn.process.pid
    workers = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert workers
    assert "sqlalchemy" not in Path(f"/proc/{master}/maps").read_text()
    assert all("sqlalchemy" in Path(f"/proc/{pid}/maps").read_text() for pid in workers)


def test_streamed_answer_arrives_in_pieces(gunicorn: Gunicorn, client: httpx2.Client) -> None:
    """`stream=1` passes pieces on as they come; together they are the plain answer."""
    question = f"{WORLD_CUP} [[sim: chunks=10 delay=0.1]]"
    with client.stream(
        "GET", "/callChatGPT", params={"input": question, "stream": "1"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_events(response)

    deltas = [event for event in events if event.name == "delta"]
    assert [event.name for event in events] == ["delta"] * len(deltas) + ["done"]
    assert len(deltas) >= 5, "the answer came in too few pieces to call it streamed"
    # 10 pieces 0.1 s apart: about 0.9 s between the first and the last, not all at once.
    assert deltas[-1].at - deltas[0].at > 0.4, [round(e.at - deltas[0].at, 2) for e in deltas]

    streamed = "".join(event.data["content"] for event in deltas)
    plain = client.get("/callChatGPT", params={"input": question})
    assert plain.status_code == 200
    assert streamed == plain.text
    assert "阿根廷" in streamed


def test_one_worker_holds_a_hundred_slow_streams(launch: Launcher) -> None:
    """With WORKERS=1, 100 slow answers stream together (a sync worker would serve one).

    Its upstream is the simulator gunicorn starts in its own process: the
    in-process `simulator` would share this process's GIL with the 100 streams
    read here, and its own slowness could pass for the worker's.
    """
    count = 100
    server = launch(
        "one-worker",
        WORKERS="1",
        CHATPROXY_UPSTREAM="simulator",
        CHATPROXY_AUTH="open",
        SIMULATOR_PORT=str(free_port()),
        CHATPROXY_MAX_RETRIES="0",
    )

    async def ask_all() -> list[tuple[list[Event], float | None, float]]:
        async with concurrent_client(server.url, count) as client:
            await client.get("/callChatGPT", params={"input": "warm up"})  # first-use imports
            questions = [f"question {i} [[sim: chunks=5 delay=0.4]]" for i in range(count)]
            return await asyncio.gather(*(stream_answer(client, q) for q in questions))

    results = asyncio.run(ask_all())

    ended = [events[-1].name if events else None for events, _, _ in results]
    assert ended == ["done"] * count
    firsts = [first for _, first, _ in results if first is not None]
    assert len(firsts) == count, "some streams got no piece at all"
    last_first_piece = max(firsts)
    first_end = min(end for _, _, end in results)
    assert last_first_piece < first_end, (
        f"the last stream got its first piece {last_first_piece - first_end:.2f} s after "
        "another stream had finished: the streams were not all in flight together"
    )


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        pytest.param({"CHATPROXY_TIMEOUT": "abc"}, "CHATPROXY_TIMEOUT", id="bad-timeout"),
        pytest.param({"OPENAI_API_KEY": None}, "OPENAI_API_KEY", id="no-key"),
        # Checked beyond the settings themselves: before, each worker failed with a traceback.
        pytest.param(
            {"CHATPROXY_PERSONAS_DIR": "nowhere"}, "CHATPROXY_PERSONAS_DIR", id="no-personas"
        ),
        pytest.param(
            {"CHATPROXY_MAX_TOKENS": "200000"}, "CHATPROXY_MAX_TOKENS", id="max-tokens-over-window"
        ),
        pytest.param(
            {"OPENAI_BASE_URL": "http://127.0.0.1:99999/v1"}, "OPENAI_BASE_URL", id="bad-port"
        ),
    ],
)
def test_start_up_refuses_bad_settings_in_one_line(
    launch: Launcher, simulator: Simulator, settings: dict[str, str | None], named: str
) -> None:
    """A wrong or missing setting stops gunicorn with one line naming it, not a traceback."""
    server = launch(f"refuses-{named}", ready=False, **upstream_settings(simulator, **settings))
    status = server.wait_for_exit(START_TIMEOUT)
    log = server.log()
    assert status != 0, log
    assert "Traceback" not in log
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines, "gunicorn exited without saying why"
    assert named in lines[-1], log
    assert not accepts_connections(int(server.url.rsplit(":", 1)[1]))


def test_start_up_names_a_database_it_cannot_migrate(
    launch: Launcher, simulator: Simulator
) -> None:
    """A database that cannot be reached stops gunicorn with one line saying so, before any
    worker starts (the migration runs in a child of the master)."""
    unreachable = f"postgresql://chatproxy:s3cret@127.0.0.1:{free_port()}/chatproxy"
    server = launch(
        "unmigrated", ready=False, **upstream_settings(simulator, DATABASE_URL=unreachable)
    )
    status = server.wait_for_exit(START_TIMEOUT)
    log = server.log()
    assert status != 0, log
    assert "Traceback" not in log
    assert "Booting worker" not in log
    lines = [line for line in log.splitlines() if line.strip()]
    assert "the database (DATABASE_URL) cannot be migrated" in lines[-1], log
    assert "s3cret" not in log


def test_simulator_mode_starts_and_stops_its_own_simulator(launch: Launcher) -> None:
    """`CHATPROXY_UPSTREAM=simulator` (as `make run` without a key): the demo works end to end."""
    simulator_port = free_port()
    server = launch(
        "simulator-mode",
        CHATPROXY_UPSTREAM="simulator",
        CHATPROXY_AUTH="open",
        SIMULATOR_PORT=str(simulator_port),
        CHATPROXY_MAX_RETRIES="0",
    )
    assert accepts_connections(simulator_port)
    with httpx2.Client(base_url=server.url, timeout=30) as client:
        page = client.get("/")
        assert page.status_code == 200
        banner = element_text(page.text, "banner-demo")
        assert banner is not None, "the page shows no demo banner in simulator mode"
        assert "answers come from the built-in simulator" in banner

        answer = client.get("/callChatGPT", params={"input": WORLD_CUP})
        assert answer.status_code == 200
        assert "阿根廷" in answer.text

    server.terminate()
    assert server.wait_for_exit(STOP_TIMEOUT) == 0, server.log()
    assert not accepts_connections(simulator_port), "the simulator outlived gunicorn"
    assert "Traceback" not in server.log()


def test_ctrl_c_ends_make_run_quietly(launch: Launcher) -> None:
    """Ctrl-C in the terminal of `make run`: status 0, no traceback, the simulator gone too.

    A terminal sends SIGINT to its whole foreground process group: the master
    and every worker. An answer streams meanwhile, as when one stops a demo.
    """
    simulator_port = free_port()
    server = launch(
        "ctrl-c",
        WORKERS="2",
        CHATPROXY_UPSTREAM="simulator",
        CHATPROXY_AUTH="open",
        SIMULATOR_PORT=str(simulator_port),
    )
    with (
        httpx2.Client(base_url=server.url, timeout=30) as client,
        client.stream(
            "GET", "/callChatGPT", params={"input": "[[sim: chunks=20 delay=0.5]]", "stream": "1"}
        ) as response,
    ):
        assert next(response.iter_lines()).startswith("event: ")  # the answer has begun
        os.killpg(server.process.pid, signal.SIGINT)
        status = server.wait_for_exit(STOP_TIMEOUT)

    assert status == 0, server.output()
    assert "Traceback" not in server.output()
    assert "Handling signal: int" in server.log()
    assert not accepts_connections(simulator_port), "the simulator outlived gunicorn"


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGHUP"])
def test_stop_or_reload_lets_answers_in_flight_finish(
    launch: Launcher, simulator: Simulator, signal_name: str
) -> None:
    """SIGTERM (stop) or SIGHUP (reload) while 50 answers stream: each ends with `done`, stored.

    After a stop gunicorn exits; after a reload, new workers answer.
    """
    count = 50
    server = launch(f"graceful-{signal_name}", **upstream_settings(simulator, WORKERS="2"))
    # Answers of 20 pieces 0.3 s apart (6 s): long beside the time 50 take to begin.
    question = "question {} [[sim: chunks=20 delay=0.3]]"

    async def signal_while_streaming() -> tuple[
        list[tuple[list[Event], float | None, float]], float
    ]:
        started = asyncio.Semaphore(0)
        async with concurrent_client(server.url, count) as client:
            streams = [
                asyncio.create_task(stream_answer(client, question.format(i), started.release))
                for i in range(count)
            ]
            for _ in range(count):  # every answer has begun to arrive
                await asyncio.wait_for(started.acquire(), timeout=START_TIMEOUT)
            server.process.send_signal(getattr(signal, signal_name))
            signalled_at = time.monotonic()
            return await asyncio.gather(*streams), signalled_at

    results, signalled_at = asyncio.run(signal_while_streaming())

    # The signal cut across every answer: none had ended when it came.
    ended_before = sum(end < signalled_at for _, _, end in results)
    assert not ended_before, f"{ended_before} answers had ended before the signal"
    assert [events[-1].name for events, _, _ in results] == ["done"] * count
    # Nothing accepted is lost: every answer was stored (its message id is in `done`).
    assert all(events[-1].data["message_id"] for events, _, _ in results)
    if signal_name == "SIGTERM":
        assert server.wait_for_exit(STOP_TIMEOUT) == 0, server.log()
        assert "Handling signal: term" in server.log()
    else:
        # The old workers stopped taking connections at the signal; this question
        # waits in the listen queue until a new worker has booted (seconds, on a
        # loaded machine), so its bound is that of a start.
        after = httpx2.get(
            f"{server.url}/callChatGPT", params={"input": "after"}, timeout=START_TIMEOUT
        )
        assert after.status_code == 200
        assert "Handling signal: hup" in server.log()


def test_logs_never_contain_the_upstream_key(
    launcher: Launcher, gunicorn: Gunicorn, client: httpx2.Client
) -> None:
    """Over every gunicorn of this module, including failed answers, the key is never logged."""
    failed = client.get("/callChatGPT", params={"input": "[[sim: fault=server_error]]"})
    assert failed.status_code == 502
    with client.stream(
        "GET",
        "/callChatGPT",
        params={"input": "[[sim: fault=reset_mid_stream]]", "stream": "1"},
    ) as response:
        assert read_events(response)[-1].name == "error"

    checked = 0
    for server, key in launcher.started:
        assert server.log().strip(), f"{server.log_path} is empty"
        if key is not None:
            assert key not in server.output(), f"the upstream key is in {server.log_path}"
            checked += 1
    assert checked


def test_a_chunked_body_over_the_limit_is_413_under_gunicorn(client: httpx2.Client) -> None:
    """gunicorn hands the app a dechunked body of no stated length: it is held to the limit too."""
    limit = 1024 * 1024  # CHATPROXY_MAX_BODY_BYTES's default

    def form(total: int) -> Iterator[bytes]:
        body = b"input=hi&padding=" + b"x" * (total - 17)
        for start in range(0, total, 64 * 1024):
            yield body[start : start + 64 * 1024]

    too_large = client.post("/callChatGPT", content=form(limit + 100_000), headers=FORM)
    within = client.post("/callChatGPT", content=form(limit // 2), headers=FORM)

    assert too_large.request.headers["transfer-encoding"] == "chunked"
    assert too_large.status_code == 413, too_large.text[:200]
    assert too_large.json()["error"]["code"] == "request_too_large"
    assert within.status_code == 200, within.text[:200]  # and the connection served on


def test_a_malformed_chunked_body_is_400_under_gunicorn(gunicorn: Gunicorn) -> None:
    answer = raw_http(
        gunicorn.url,
        b"POST /callChatGPT HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n\r\nzz\r\ninput=hi\r\n0\r\n\r\n",
    )

    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    assert b'"invalid_request_error"' in answer
    assert "Traceback" not in gunicorn.log()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000"])
def test_a_redirect_never_names_the_hosts_header(gunicorn: Gunicorn, host: str) -> None:
    """`/v1//models` is merged into `/v1/models` by a redirect that names no host."""
    request = f"GET /v1//models?x=1 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"

    answer = raw_http(gunicorn.url, request.encode())

    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    assert head.startswith("HTTP/1.1 308"), head
    assert "\r\nLocation: /v1/models?x=1\r\n" in head
    assert "evil" not in answer.decode("latin-1")
