"""Questions and quota reservations asked for at the same moment share one transaction
(`chatproxy.store.group_commit.write_now`, issue 12), each as if alone.

Each caller goes on only once its own write is committed (a question is stored
before its upstream is called), learns its own row's id, and a write the
database or a quota refuses fails only its own caller.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from flask import Flask
from sqlalchemy import Connection, Engine, event, func, select
from sqlalchemy.exc import IntegrityError

from chatproxy.access import reservations
from chatproxy.access.keys import Caller
from chatproxy.errors import RateLimited
from chatproxy.questions import parse_question
from chatproxy.state import current_settings
from chatproxy.store import group_commit
from chatproxy.store.conversations import Turn, start_turn
from chatproxy.store.database import db
from chatproxy.store.models import Conversation, Message, Reservation

TOGETHER = 12


@pytest.fixture
def engine(app: Flask) -> Iterator[Engine]:
    with app.app_context():
        yield db.engine


@pytest.fixture
def hold_questions(engine: Engine) -> Iterator[Callable[[], Callable[[], None]]]:
    """As `held`, for the transactions of questions (`group_commit.write_now`): a call starts
    the held transaction and returns what lets it go."""
    go_on, inside = threading.Event(), threading.Event()
    writers: list[threading.Thread] = []

    def hold(connection: Connection) -> None:
        inside.set()
        assert go_on.wait(10)

    def start() -> Callable[[], None]:
        writer = threading.Thread(target=group_commit.write_now, args=(engine, hold))
        writer.start()
        writers.append(writer)
        assert inside.wait(10)
        return go_on.set

    yield start
    go_on.set()
    for writer in writers:
        writer.join(10)


def waiting(count: int) -> None:
    """Returns once `count` writes wait for the one being written."""
    groups = list(group_commit._now_groups.values())
    deadline = time.monotonic() + 10
    while sum(len(group._waiting) for group in groups) < count:
        assert time.monotonic() < deadline, "the writes never came to wait"
        time.sleep(0.01)


def commits(engine: Engine) -> list[int]:
    counted: list[int] = []
    event.listen(engine, "commit", lambda connection: counted.append(1))
    return counted


def ask(app: Flask, text: str, conversation: Conversation | None = None) -> Turn:
    with app.app_context():
        settings = current_settings()
        question = parse_question({"input": text}, settings, wants="text")
        return start_turn(db.engine, question, settings, conversation, owner=None)


def questions_of(engine: Engine, turns: list[Turn]) -> dict[int, tuple[str, str]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(Message.id, Message.conversation_id, Message.content).where(
                Message.id.in_([turn.question_id for turn in turns])
            )
        ).all()
    return {row.id: (row.conversation_id, row.content) for row in rows}


def test_questions_asked_together_are_each_stored_in_one_transaction(
    app: Flask, engine: Engine, hold_questions: Callable[[], Callable[[], None]]
) -> None:
    committed = commits(engine)
    held_question = hold_questions()
    with ThreadPoolExecutor(TOGETHER) as pool:
        asked = [pool.submit(ask, app, f"question {n}") for n in range(1, TOGETHER + 1)]
        waiting(TOGETHER)
        assert not any(future.done() for future in asked)  # none goes on before it is stored
        before = len(committed)
        held_question()
        turns = [future.result(10) for future in asked]
    # Each in a conversation of its own, with its own question, written before it returned.
    assert len({turn.conversation_id for turn in turns}) == TOGETHER
    stored = questions_of(engine, turns)
    assert [stored[turn.question_id] for turn in turns] == [
        (turn.conversation_id, f"question {n}") for n, turn in enumerate(turns, 1)
    ]
    # The held transaction, then the twelve that waited for it, as one.
    assert len(committed) - before == 2


def test_a_refused_question_fails_only_its_own_caller(
    app: Flask, engine: Engine, hold_questions: Callable[[], Callable[[], None]]
) -> None:
    first = ask(app, "a conversation deleted while a question to it waits")
    with app.app_context():
        gone = db.session.get(Conversation, first.conversation_id)
        assert gone is not None
        gone.messages  # noqa: B018 - loaded, as /callChatGPT loads it before storing
        db.session.expunge(gone)
    with engine.begin() as connection:
        connection.execute(
            Message.__table__.delete().where(Message.conversation_id == first.conversation_id)
        )
        connection.execute(
            Conversation.__table__.delete().where(Conversation.id == first.conversation_id)
        )
    held_question = hold_questions()
    with ThreadPoolExecutor(5) as pool:
        asked = [pool.submit(ask, app, f"question {n}") for n in range(1, 5)]
        refused = pool.submit(ask, app, "to the deleted conversation", gone)
        waiting(5)
        held_question()
        turns = [future.result(10) for future in asked]
        with pytest.raises(IntegrityError):
            refused.result(10)
    stored = questions_of(engine, turns)
    assert [stored[turn.question_id][1] for turn in turns] == [f"question {n}" for n in range(1, 5)]


def reserve_tokens(engine: Engine, caller: Caller, tokens: int) -> int | None:
    """A reservation of `tokens` for `caller`: its id, or None when the quota refused it."""
    try:
        hold = reservations.reserve(
            engine,
            None,
            caller,
            tokens,
            0.0,
            datetime.now(UTC),
            600,  # type: ignore[arg-type]
        )
    except RateLimited:
        return None
    return hold.reservation


def test_reservations_asked_together_are_held_in_one_transaction(
    engine: Engine, hold_questions: Callable[[], Callable[[], None]]
) -> None:
    caller = Caller(f"group-{uuid.uuid4().hex[:8]}", tokens_per_day=10_000)
    committed = commits(engine)
    held = hold_questions()
    with ThreadPoolExecutor(TOGETHER) as pool:
        asked = [pool.submit(reserve_tokens, engine, caller, 100) for _ in range(TOGETHER)]
        waiting(TOGETHER)
        before = len(committed)
        held()
        ids = [future.result(10) for future in asked]
    assert None not in ids and len(set(ids)) == TOGETHER
    assert len(committed) - before == 2  # the held transaction, then the twelve as one


def test_a_quota_counts_the_reservations_of_its_group_and_refuses_only_the_one_over(
    engine: Engine, hold_questions: Callable[[], Callable[[], None]]
) -> None:
    # 1,000 tokens a day: five reservations of 200 fit (each admitted while the others
    # hold less than the limit), the sixth does not, whichever order they are written in.
    caller = Caller(f"group-{uuid.uuid4().hex[:8]}", tokens_per_day=1000)
    held = hold_questions()
    with ThreadPoolExecutor(6) as pool:
        asked = [pool.submit(reserve_tokens, engine, caller, 200) for _ in range(6)]
        waiting(6)
        held()
        ids = [future.result(10) for future in asked]
    assert ids.count(None) == 1
    with engine.connect() as connection:
        held_now = connection.scalar(
            select(func.sum(Reservation.tokens)).where(Reservation.key_name == caller.name)
        )
    assert held_now == 1000
