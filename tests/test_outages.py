"""Nothing accepted is lost when the database or a worker goes away.

On PostgreSQL the database goes away for real: the server reaches it through a
TCP proxy the test cuts. On SQLite (a local file, never "unreachable") it
stays locked by another writer, with the server's busy timeout made short
(`?timeout=0.3` in DATABASE_URL) so that the wait ends within the test.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2
import openai
import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.pool import NullPool

from chatproxy.access.keys import issue_key
from chatproxy.config import database_url as database_url_setting
from chatproxy.simulator import Simulator
from chatproxy.store import spool
from chatproxy.store.database import db
from chatproxy.store.models import Message, SpooledWrite, UsageDay
from tests.conftest import UPSTREAM_KEY, LiveServer
from tests.servers import Launcher, TcpProxy, redis_is_there, upstream_settings
from tests.sse_events import EventReader


@dataclass
class Outage:
    """A way for the store to go away: `url` is the DATABASE_URL that goes through it."""

    url: str
    cut: Callable[[], None]
    restore: Callable[[], None]


@pytest.fixture
def outage(database_url: str) -> Iterator[Outage]:
    if database_url.startswith("postgresql"):
        parts = urlsplit(database_url)
        proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
        netloc = f"{parts.username}@127.0.0.1:{proxy.port}"
        url = urlunsplit(parts._replace(netloc=netloc))
        yield Outage(url, proxy.cut, proxy.restore)
        proxy.cut()
        return
    path = database_url.removeprefix("sqlite:///")
    holder: dict[str, sqlite3.Connection] = {}

    def lock() -> None:
        connection = sqlite3.connect(path, isolation_level=None, timeout=10)
        connection.execute("BEGIN EXCLUSIVE")
        holder["lock"] = connection

    def unlock() -> None:
        if connection := holder.pop("lock", None):
            connection.execute("ROLLBACK")
            connection.close()

    yield Outage(f"{database_url}?timeout=0.3", lock, unlock)
    unlock()


def new_key(server: LiveServer) -> tuple[str, dict[str, str]]:
    name = f"outage-{uuid.uuid4().hex[:10]}"
    with server.app.app_context():
        key = issue_key(name)
    return name, {"Authorization": f"Bearer {key}"}


def test_the_store_away_before_a_question_is_stored_is_a_503_in_openais_shape(
    make_server_with: Callable[..., LiveServer], outage: Outage, chatproxy_log: list[Any]
) -> None:
    server = make_server_with(DATABASE_URL=outage.url)
    assert httpx2.get(f"{server.url}/callChatGPT", params={"input": "hi"}).status_code == 200
    outage.cut()
    refused = httpx2.get(f"{server.url}/callChatGPT", params={"input": "hi"}, timeout=30)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "store_unavailable"
    assert refused.headers["Retry-After"] == "5"
    if outage.url.startswith("postgresql"):  # SQLite's readers are never locked out
        for route in ("/api/conversations", "/api/usage", f"/api/conversations/{'0' * 32}"):
            answer = httpx2.get(server.url + route, timeout=30)
            assert answer.status_code == 503, (route, answer.text)
            assert answer.json()["error"]["code"] == "store_unavailable"
    assert not [r for r in chatproxy_log if r.exc_info], "a traceback was logged"
    outage.restore()
    assert httpx2.get(f"{server.url}/callChatGPT", params={"input": "hi"}).status_code == 200


def test_connections_the_server_dropped_while_idle_are_replaced_before_a_request_meets_them(
    make_server_with: Callable[..., LiveServer], database_url: str, chatproxy_log: list[Any]
) -> None:
    """PostgreSQL restarted (or ended idle connections) between two requests: every pooled
    connection is dead, and no request may be the one to find out (`_hung_up`)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no server to drop connections")
    server = make_server_with()
    assert httpx2.get(f"{server.url}/callChatGPT", params={"input": "hi"}).status_code == 200
    with server.app.app_context():
        pool = db.engine.pool
        held = [db.engine.connect() for _ in range(max(3, pool.checkedin()))]
        dropped = {c.exec_driver_sql("SELECT pg_backend_pid()").scalar() for c in held}
        for connection in held:
            connection.close()
    server_side = create_engine(database_url, poolclass=NullPool)
    with server_side.begin() as connection:
        for pid in dropped:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    deadline = time.monotonic() + 10
    with server_side.connect() as connection:
        listed = text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)")
        while connection.execute(listed, {"pids": list(dropped)}).scalar():
            assert time.monotonic() < deadline, "the server did not end its connections"
            time.sleep(0.02)
    server_side.dispose()

    for _ in range(len(dropped) + 1):  # each check-out may meet a dead one first
        answer = httpx2.get(f"{server.url}/callChatGPT", params={"input": "hi"}, timeout=30)
        assert answer.status_code == 200, answer.text
    with server.app.app_context(), db.engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT pg_backend_pid()").scalar() not in dropped
    assert not [r for r in chatproxy_log if "unavailable" in r.getMessage()]


def test_the_store_away_is_logged_once_not_once_per_request(
    make_server_with: Callable[..., LiveServer], outage: Outage, chatproxy_log: list[Any]
) -> None:
    """Every request meets the outage while it lasts; the log says so once a minute."""
    server = make_server_with(DATABASE_URL=outage.url)
    outage.cut()
    for _ in range(5):
        refused = httpx2.get(f"{server.url}/callChatGPT", params={"input": "hi"}, timeout=30)
        assert refused.status_code == 503
    outage.restore()
    said = [r for r in chatproxy_log if "the database is unavailable:" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]


def test_the_store_away_after_a_question_is_stored_marks_it_error_once_back(
    make_server_with: Callable[..., LiveServer], outage: Outage, database_url: str
) -> None:
    """The database going away between storing a question and reserving its budget left
    the question unanswered but `ok`, while the client was told nothing was asked."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only: the reservation is held up on its key's advisory lock")
    server = make_server_with(DATABASE_URL=outage.url, CHATPROXY_AUTH="keys")
    name = f"outage-{uuid.uuid4().hex[:10]}"
    with server.app.app_context():
        key = issue_key(name, tokens_per_day=10**9)
    engine = create_engine(database_url_setting(database_url))  # not through the proxy
    waiting = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
    with engine.connect() as holder, ThreadPoolExecutor(1) as pool:
        # The key's reservations wait for this lock (chatproxy.access.reservations).
        holder.execute(select(func.pg_advisory_lock(func.hashtext(name))))
        asked = pool.submit(
            httpx2.get,
            f"{server.url}/callChatGPT",
            params={"input": "hello"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        )
        deadline = time.monotonic() + 15
        while not holder.execute(waiting).scalar():
            assert time.monotonic() < deadline, "the reservation never waited"
            time.sleep(0.05)
        outage.cut()  # the question is stored; its reservation fails
        refused = asked.result()
    engine.dispose()
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "store_unavailable"
    conversation = refused.headers["X-Conversation-Id"]
    outage.restore()
    # The next write brings the spooled mark in.
    answered = httpx2.get(
        f"{server.url}/callChatGPT",
        params={"input": "again"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert answered.status_code == 200
    deadline = time.monotonic() + 15
    while True:
        stored = httpx2.get(
            f"{server.url}/api/conversations/{conversation}",
            headers={"Authorization": f"Bearer {key}"},
        ).json()["messages"]
        if stored[0]["status"] == "error":
            break
        assert time.monotonic() < deadline, f"the question stayed {stored}"
        time.sleep(0.1)
    assert [m["role"] for m in stored] == ["user"]


def test_an_answer_that_ends_while_the_store_is_away_is_kept_and_stored_later(
    make_server_with: Callable[..., LiveServer], outage: Outage
) -> None:
    server = make_server_with(DATABASE_URL=outage.url, CHATPROXY_AUTH="keys")
    name, headers = new_key(server)
    question = {"input": "tell me [[sim: chunks=8 delay=0.1]]", "stream": "1"}
    reader, events, text = EventReader(), [], []
    with httpx2.stream(
        "GET", f"{server.url}/callChatGPT", params=question, headers=headers, timeout=60
    ) as response:
        conversation = response.headers["X-Conversation-Id"]
        for line in response.iter_lines():
            if (event := reader.feed(line)) is None:
                continue
            events.append(event)
            if event.name == "delta":
                text.append(event.data["content"])
                if len(text) == 1:
                    outage.cut()  # the database goes away while the answer streams
    done = events[-1]
    assert done.name == "done"
    assert done.data["stored"] is False
    assert done.data["message_id"] is None
    outage.restore()
    # The next answer that is stored brings the kept one in after it.
    assert (
        httpx2.get(
            f"{server.url}/callChatGPT", params={"input": "again"}, headers=headers
        ).status_code
        == 200
    )
    deadline = time.monotonic() + 15
    while True:
        stored = httpx2.get(f"{server.url}/api/conversations/{conversation}", headers=headers)
        answers = [m for m in stored.json()["messages"] if m["role"] == "assistant"]
        if answers:
            break
        assert time.monotonic() < deadline, "the kept answer was never stored"
        time.sleep(0.1)
    assert answers[0]["content"] == "".join(text)
    assert answers[0]["status"] == "ok"
    with server.app.app_context():
        requests = db.session.scalar(select(UsageDay.requests).where(UsageDay.key_name == name))
        db.session.remove()
    assert requests == 2  # both answers charged, the kept one once


def test_a_spooled_answer_is_written_once_even_if_replayed_again(
    make_server_with: Callable[..., LiveServer], tmp_path: Any
) -> None:
    """A process that dies after writing a spooled answer but before emptying the spool."""
    server = make_server_with()
    conversation = httpx2.get(f"{server.url}/callChatGPT", params={"input": "hello"}).headers[
        "X-Conversation-Id"
    ]
    with server.app.app_context():
        question = db.session.scalars(
            select(Message).where(Message.conversation_id == conversation)
        ).first()
        assert question is not None
        engine = db.engine
        entry = {
            "id": uuid.uuid4().hex,
            "writes": [
                {
                    "kind": "answer",
                    "payload": {
                        "conversation_id": conversation,
                        "question_id": question.id,
                        "asked_model": "gpt-4o-mini",
                        "again": False,
                        "replaces": [],
                        "answer_id": None,
                        "content": "kept while the database was away",
                        "model": None,
                        "finish_reason": "stop",
                        "usage": None,
                        "error": None,
                        "closed": False,
                        "at": "2026-12-06T07:00:00+00:00",
                    },
                }
            ],
        }
        path = spool.spool_path(engine, tmp_path)
        for _ in range(2):  # the same line twice: as if the first replay died before the end
            path.write_text(json.dumps(entry) + "\n")
            spool.replay(engine, tmp_path)
        kept = db.session.scalars(
            select(Message.content).where(
                Message.conversation_id == conversation, Message.role == "assistant"
            )
        ).all()
        assert kept.count("kept while the database was away") == 1
        assert db.session.get(SpooledWrite, entry["id"]) is not None
        db.session.remove()
    assert not path.exists()


def test_redis_away_every_request_is_answered_and_no_traceback_is_logged(
    make_server_with: Callable[..., LiveServer],
    chatproxy_log: list[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Flask-Limiter logged each request it let through as an error with a traceback."""
    redis_is_there()
    proxy = TcpProxy(("127.0.0.1", 6379))
    server = make_server_with(CHATPROXY_AUTH="keys", REDIS_URL=f"redis://127.0.0.1:{proxy.port}/15")
    with server.app.app_context():
        key = issue_key(f"outage-{uuid.uuid4().hex[:10]}", rpm=1000, tpm=10**9)
    headers = {"Authorization": f"Bearer {key}"}
    sdk = openai.OpenAI(api_key=key, base_url=f"{server.url}/v1", max_retries=0)
    question = {"input": "hello"}
    assert httpx2.get(f"{server.url}/callChatGPT", params=question, headers=headers).is_success
    caplog.set_level(logging.INFO)
    proxy.cut()
    try:
        for _ in range(3):
            answered = httpx2.get(
                f"{server.url}/callChatGPT", params=question, headers=headers, timeout=30
            )
            assert answered.status_code == 200, answered.text
            messages: Any = [{"role": "user", "content": "hello"}]
            sdk.chat.completions.create(model="gpt-4o-mini", messages=messages)
        logged = list({id(r): r for r in [*caplog.records, *chatproxy_log]}.values())
        assert not [r.getMessage() for r in logged if r.exc_info or r.levelno >= logging.ERROR]
        # One warning a minute per process (none when another test warned within the minute).
        assert len([r for r in logged if "per-minute limits" in r.getMessage()]) <= 1
        proxy.restore()
        assert httpx2.get(f"{server.url}/callChatGPT", params=question, headers=headers).is_success
    finally:
        proxy.cut()


@pytest.fixture
def launch(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path_factory.mktemp("gunicorn-outages"), database_url)
    yield launcher
    launcher.stop_all()


@pytest.mark.e2e
def test_a_worker_killed_mid_answer_loses_at_most_a_checkpoints_worth(
    launch: Launcher, simulator: Simulator, database_url: str
) -> None:
    settings = upstream_settings(simulator, WORKERS="1", CHATPROXY_CHECKPOINT_SECONDS="0.5")
    server = launch("checkpoints", **settings)
    engine = create_engine(database_url_setting(database_url))
    question = {"input": "a long story [[sim: chunks=80 delay=0.1]]", "stream": "1"}
    reader, text = EventReader(), []
    with httpx2.stream("GET", f"{server.url}/callChatGPT", params=question, timeout=60) as response:
        conversation = response.headers["X-Conversation-Id"]
        lines = response.iter_lines()
        saved = None
        deadline = time.monotonic() + 20
        for line in lines:
            if (event := reader.feed(line)) and event.name == "delta":
                text.append(event.data["content"])
            saved = _streaming_answer(engine, conversation)
            if saved is not None and len(saved) > 20:
                break  # a checkpoint holds some of the answer: now the worker dies
            assert time.monotonic() < deadline, "no checkpoint was saved"
        worker = _worker_pid(server.process.pid)
        os.kill(worker, signal.SIGKILL)
        with pytest.raises(httpx2.HTTPError):
            for _line in lines:
                pass  # the stream breaks off
    # The new worker marks what the dead one left as interrupted, keeping its text.
    deadline = time.monotonic() + 40
    while (row := _answer_row(engine, conversation)) is None or row[1] != "interrupted":
        assert time.monotonic() < deadline, f"still {row}"
        time.sleep(0.2)
    content = row[0]
    assert len(content) >= len(saved)
    # What was kept is the beginning of the answer, as the upstream writes it whole.
    whole = openai.OpenAI(api_key=UPSTREAM_KEY, base_url=simulator.base_url).chat.completions
    full = whole.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": question["input"]}]
    )
    assert (full.choices[0].message.content or "").startswith(content)
    assert "".join(text)[: len(content)] == content[: len("".join(text))]
    engine.dispose()


def _answer_row(engine: Any, conversation: str) -> tuple[str, str] | None:
    with engine.connect() as connection:
        row = connection.execute(
            select(Message.content, Message.status).where(
                Message.conversation_id == conversation, Message.role == "assistant"
            )
        ).first()
    return (row[0], row[1]) if row else None


def _streaming_answer(engine: Any, conversation: str) -> str | None:
    row = _answer_row(engine, conversation)
    return row[0] if row and row[1] == "streaming" else None


def _worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    for pid in children:
        if b"chatproxy.simulator" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return int(pid)
    raise AssertionError("no worker found")
