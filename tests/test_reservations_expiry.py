"""A reservation left by a worker that died holds its key's daily quota only until it
expires; then it counts no more and the key's next reservation deletes it
(`chatproxy.access.reservations`, read through the `ix_reservations_held` index).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import Engine, select

from chatproxy.access import reservations
from chatproxy.access.keys import Caller
from chatproxy.errors import RateLimited
from chatproxy.store.database import db
from chatproxy.store.models import Reservation

LEFT_FOR = 60  # seconds a reservation is held before it is taken as its worker's, dead
START = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(app: Flask) -> Iterator[Engine]:
    with app.app_context():
        yield db.engine


def reserve(engine: Engine, caller: Caller, tokens: int, cost: float, at: datetime) -> int:
    hold = reservations.reserve(engine, None, caller, tokens, cost, at, LEFT_FOR)  # type: ignore[arg-type]
    assert hold.reservation is not None
    return hold.reservation


def held_ids(engine: Engine, caller: Caller) -> list[int]:
    with engine.connect() as connection:
        rows = connection.scalars(select(Reservation.id).where(Reservation.key_name == caller.name))
        return sorted(rows)


@pytest.mark.parametrize(
    ("quota", "tokens", "cost", "code"),
    [
        ({"tokens_per_day": 1000}, 1000, 0.0, "tokens_per_day_exceeded"),
        ({"usd_per_day": 1.0}, 10, 1.0, "usd_per_day_exceeded"),
    ],
)
def test_a_dead_workers_reservation_holds_the_quota_until_it_expires(
    engine: Engine, quota: dict[str, float], tokens: int, cost: float, code: str
) -> None:
    caller = Caller(f"expiry-{uuid.uuid4().hex[:8]}", **quota)  # type: ignore[arg-type]
    dead = reserve(engine, caller, tokens, cost, START)  # never settled: its worker died

    with pytest.raises(RateLimited) as refused:
        reserve(engine, caller, 1, 0.01, START + timedelta(seconds=LEFT_FOR - 1))
    assert refused.value.code == code
    assert held_ids(engine, caller) == [dead]  # the refused one holds nothing

    admitted = reserve(engine, caller, 1, 0.01, START + timedelta(seconds=LEFT_FOR + 1))
    assert held_ids(engine, caller) == [admitted]  # the expired one is gone
