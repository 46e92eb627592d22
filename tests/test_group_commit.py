"""Answers that end at the same moment are stored together, and each as if alone (issue 12).

At a thousand streams hundreds of answers end within milliseconds; they share
one transaction (`chatproxy.store.group_commit`), their charges summed into
one update of the key's ledger row. Each is still stored and charged, each
caller learns its own answer's id, a transaction the database refuses takes
none of the others with it, and a charge spooled in the old shape (one request,
one reservation) is still counted when it is replayed. Questions and
reservations are grouped too (`test_group_commit_now.py`).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx2
import pytest
from flask import Flask
from sqlalchemy import Connection, Engine, event, func, select

from chatproxy.access.ledger import merge_charges
from chatproxy.store import group_commit, spool
from chatproxy.store.answers import Kept, Outcome, finish_turn
from chatproxy.store.conversations import Turn
from chatproxy.store.database import db
from chatproxy.store.models import Conversation, Message, Reservation, UsageDay

ANSWERS = 12


@pytest.fixture
def engine(app: Flask) -> Iterator[Engine]:
    with app.app_context():
        yield db.engine


@pytest.fixture
def held(engine: Engine) -> Iterator[Callable[[], None]]:
    """Starts a transaction that is held open until the test lets it go (the call returned).

    While it is written, the others that commit wait together for the next
    round, as answers ending while another is written do.
    """
    go_on, inside = threading.Event(), threading.Event()

    def hold(connection: Connection, payload: dict[str, Any]) -> None:
        inside.set()
        assert go_on.wait(10)

    spool.register("test_hold", hold)
    writer = threading.Thread(
        target=group_commit.commit, args=(engine, [spool.Write("test_hold", {})])
    )
    writer.start()
    assert inside.wait(10)
    yield go_on.set
    go_on.set()
    writer.join(10)


def new_turn(engine: Engine, question: str) -> Turn:
    conversation = uuid.uuid4().hex
    now = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(
            Conversation.__table__.insert(),
            {
                "id": conversation,
                "title": question,
                "model": "gpt-4o-mini",
                "created_at": now,
                "updated_at": now,
            },
        )
        asked = connection.execute(
            Message.__table__.insert(),
            {
                "conversation_id": conversation,
                "role": "user",
                "content": question,
                "model": "gpt-4o-mini",
                "created_at": now,
            },
        )
    return Turn(conversation, asked.inserted_primary_key[0], "gpt-4o-mini", {})


def charge(key: str, prompt: int, completion: int, reservation: int | None = None) -> spool.Write:
    return spool.Write(
        "charge",
        {
            "key_name": key,
            "day": "2026-12-06",
            "model": "gpt-4o-mini",
            "requests": 1,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "cost": 0.001,
            "counted_requests": 0,
            "reservations": [] if reservation is None else [reservation],
        },
    )


def reserve(engine: Engine, key: str) -> int:
    with engine.begin() as connection:
        row = connection.execute(
            Reservation.__table__.insert(),
            {
                "key_name": key,
                "tokens": 1000,
                "cost": 0.5,
                "expires_at": datetime.now(UTC),
            },
        )
    return int(row.inserted_primary_key[0])


def ledger_row(engine: Engine, key: str) -> tuple[int, int, int, int]:
    with engine.connect() as connection:
        row = connection.execute(
            select(
                func.coalesce(func.sum(UsageDay.requests), 0),
                func.coalesce(func.sum(UsageDay.prompt_tokens), 0),
                func.coalesce(func.sum(UsageDay.completion_tokens), 0),
                func.count(),
            ).where(UsageDay.key_name == key)
        ).one()
    return (int(row[0]), int(row[1]), int(row[2]), int(row[3]))


def answers_of(engine: Engine, conversations: list[str]) -> dict[str, tuple[int, str]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(Message.id, Message.conversation_id, Message.content).where(
                Message.conversation_id.in_(conversations), Message.role == "assistant"
            )
        ).all()
    return {row.conversation_id: (row.id, row.content) for row in rows}


def waiting(count: int) -> None:
    """Returns once `count` transactions wait for the one being written."""
    groups = list(group_commit._groups.values())
    deadline = time.monotonic() + 10
    while sum(len(group._waiting) for group in groups) < count:
        assert time.monotonic() < deadline, "the transactions never came to wait"
        time.sleep(0.01)


def commits(engine: Engine) -> list[int]:
    counted: list[int] = []
    event.listen(engine, "commit", lambda connection: counted.append(1))
    return counted


def finish(engine: Engine, turn: Turn, key: str, n: int) -> Kept:
    outcome = Outcome(
        f"answer {n}", "gpt-4o-mini", "stop", {"prompt_tokens": n, "completion_tokens": 10 * n}
    )
    return finish_turn(engine, turn, outcome, [charge(key, n, 10 * n, reserve(engine, key))])


def test_answers_ending_together_are_each_stored_and_charged_in_one_transaction(
    engine: Engine, held: Callable[[], None]
) -> None:
    key = f"group-{uuid.uuid4().hex[:8]}"
    turns = [new_turn(engine, f"question {n}") for n in range(1, ANSWERS + 1)]
    committed = commits(engine)
    with ThreadPoolExecutor(ANSWERS) as pool:
        kept = [pool.submit(finish, engine, turn, key, n) for n, turn in enumerate(turns, 1)]
        waiting(ANSWERS)
        before = len(committed)
        held()
        results = [future.result(10) for future in kept]
    stored = answers_of(engine, [turn.conversation_id for turn in turns])
    for n, (turn, result) in enumerate(zip(turns, results, strict=True), 1):
        assert result.stored
        assert stored[turn.conversation_id] == (result.answer_id, f"answer {n}")
    total = sum(range(1, ANSWERS + 1))
    # One ledger row, every request in it; the reservations given back.
    assert ledger_row(engine, key) == (ANSWERS, total, 10 * total, 1)
    with engine.connect() as connection:
        held_now = connection.scalar(
            select(func.count()).select_from(Reservation).where(Reservation.key_name == key)
        )
    assert held_now == 0
    # The held transaction, then the twelve that waited for it, as one.
    assert len(committed) - before == 2


def test_a_refused_answer_drops_only_itself(engine: Engine, held: Callable[[], None]) -> None:
    key = f"group-{uuid.uuid4().hex[:8]}"
    turns = [new_turn(engine, f"question {n}") for n in range(1, 5)]
    gone = Turn("0" * 32, 10**9, "gpt-4o-mini", {}, answer_id=None)  # no such conversation
    with ThreadPoolExecutor(5) as pool:
        kept = [pool.submit(finish, engine, turn, key, n) for n, turn in enumerate(turns, 1)]
        refused = pool.submit(finish, engine, gone, key, 100)
        waiting(5)
        held()
        results = [future.result(10) for future in kept]
        refused.result(10)
    stored = answers_of(engine, [turn.conversation_id for turn in turns])
    assert [stored[turn.conversation_id][1] for turn in turns] == [
        f"answer {n}" for n in range(1, 5)
    ]
    assert all(result.stored for result in results)
    # The four are charged; the refused transaction's charge went with its answer.
    assert ledger_row(engine, key)[:3] == (4, 10, 100)


def test_a_charge_spooled_before_charges_were_merged_is_counted(engine: Engine) -> None:
    key = f"group-{uuid.uuid4().hex[:8]}"
    reservation = reserve(engine, key)
    old = {
        "key_name": key,
        "day": "2026-12-06",
        "model": "gpt-4o-mini",
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "cost": 0.0,
        "counted": True,
        "reservation": reservation,
    }
    new = charge(key, 5, 6).payload
    assert spool.commit(engine, [spool.Write("charge", p) for p in merge_charges([old, new])])
    assert ledger_row(engine, key) == (2, 8, 10, 1)
    with engine.connect() as connection:
        counted = connection.scalar(
            select(UsageDay.counted_requests).where(UsageDay.key_name == key)
        )
        left = connection.scalar(
            select(func.count()).select_from(Reservation).where(Reservation.key_name == key)
        )
    assert (counted, left) == (1, 0)


def test_charges_are_merged_per_ledger_row_in_one_order() -> None:
    rows = merge_charges(
        [
            charge("b", 1, 1).payload,
            charge("a", 2, 2, 7).payload,
            charge("b", 3, 3, 8).payload,
            {**charge("a", 1, 1).payload, "model": "gpt-4o"},
        ]
    )
    assert [
        (r["key_name"], r["model"], r["requests"], r["prompt_tokens"], r["reservations"])
        for r in rows
    ] == [
        ("a", "gpt-4o", 1, 1, []),
        ("a", "gpt-4o-mini", 1, 2, [7]),
        ("b", "gpt-4o-mini", 2, 4, [8]),
    ]


def test_a_burst_of_questions_opens_no_more_postgresql_connections_than_the_pool(
    make_server_with: Callable[..., Any], database_url: str
) -> None:
    """Thirty questions at once on a pool of three: all answered, three connections opened.

    A pool that opens a connection beyond its size and closes it after use
    makes PostgreSQL start a process for every few answers under load.
    """
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only: SQLite connections are files, not server processes")
    server = make_server_with(CHATPROXY_AUTH="open", DATABASE_POOL_SIZE="3")
    opened: list[int] = []
    with server.app.app_context():
        event.listen(db.engine, "connect", lambda *_: opened.append(1))

    def ask(n: int) -> str:
        response = httpx2.get(
            f"{server.url}/callChatGPT", params={"input": f"question {n}"}, timeout=30
        )
        assert response.status_code == 200, response.text
        return response.text

    with ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(ask, range(30)))
    assert all(answers)
    assert len(opened) <= 3


def test_a_burst_of_questions_in_conversations_needs_one_connection_each(
    make_server_with: Callable[..., Any], database_url: str
) -> None:
    """Twenty conversations continued at once on a pool of two: all answered at once.

    A request that held the connection which read its conversation while it
    waited for another to store its question could wait for the pool's timeout
    (30 s, then 503) once the pool's connections were all so held.
    """
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only: SQLite connections are files, not server processes")
    server = make_server_with(CHATPROXY_AUTH="open", DATABASE_POOL_SIZE="2")
    ids = []
    for n in range(20):
        first = httpx2.get(f"{server.url}/callChatGPT", params={"input": f"start {n}"}, timeout=30)
        ids.append(first.headers["X-Conversation-Id"])

    def go_on(conversation_id: str) -> int:
        response = httpx2.get(
            f"{server.url}/callChatGPT",
            params={"input": "and then?", "conversation_id": conversation_id},
            timeout=60,
        )
        return response.status_code

    started = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(go_on, ids))
    assert statuses == [200] * 20
    assert time.monotonic() - started < 15
