"""Budget reservations: a request's worst case, held against its key's quotas until it ends.

Before a request goes upstream, its worst case (prompt tokens plus its output
cap, times `n`, and their price) is reserved against each quota of its key:
tokens and USD per UTC day (rows of `reservations`, beside the ledger) and
tokens per minute (added to the window `--tpm` counts in). A request is
admitted only while what the key used plus what is reserved is below each
limit, so however many arrive at once, a key's day ends at most one request's
spend over its quota. When the answer ends, the reservation is settled with the
real usage, in the ledger's transaction (`chatproxy.access.ledger`). One left
behind by a worker that died expires after CHATPROXY_RESERVATION_SECONDS.

Atomic across workers and hosts: on PostgreSQL a transaction-scoped advisory
lock per key serialises the reservations of one key; on SQLite the reservation
is inserted first, which takes the database's one write lock. Its transaction
reads nothing before that write, so while another writer holds the lock the
insert waits for it (`chatproxy.store.sqlite`) rather than failing as a
transaction with an out-of-date snapshot would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from limits import RateLimitItemPerMinute
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import Connection, Engine, bindparam, delete, func, select, true

from chatproxy.access.keys import Caller
from chatproxy.access.quotas import SPENT_ON, minute_window_down
from chatproxy.errors import RateLimited
from chatproxy.store import group_commit
from chatproxy.store.models import Reservation

RESERVATIONS = Reservation.__table__
# While answers in flight hold the quota, a refused client may try again soon.
RETRY_WHILE_RESERVED = 2  # seconds
# What the key used today and what other requests hold, read in ONE statement: on
# PostgreSQL each statement sees what was committed before it began, so an answer
# settled between two statements (its usage written, its reservation deleted) would
# be in neither sum. Each table is read once for both of its sums: at 1,000 answers
# in flight a key holds 1,000 reservations, summed for every request (two scans of
# them took 380 µs on SQLite, held inside the worker; one scan of the covering index
# `ix_reservations_held`, 120 µs).
_HELD = (
    (RESERVATIONS.c.key_name == bindparam("key_name"))
    & (RESERVATIONS.c.expires_at > bindparam("now"))
    & (RESERVATIONS.c.id != bindparam("own"))
)
_USED = SPENT_ON.subquery("used")  # the key's day in the ledger, as `usage_on` reads it
_HELD_NOW = (
    select(
        func.coalesce(func.sum(RESERVATIONS.c.tokens), 0).label("tokens"),
        func.coalesce(func.sum(RESERVATIONS.c.cost), 0.0).label("cost"),
    )
    .where(_HELD)
    .subquery("held")
)
# Two one-row subqueries side by side: joined on TRUE, which says so to SQLAlchemy (it
# warns of a cartesian product otherwise).
_USED_AND_HELD = select(
    _USED.c.prompt_tokens + _USED.c.completion_tokens,
    _USED.c.cost,
    _HELD_NOW.c.tokens,
    _HELD_NOW.c.cost,
).select_from(_USED.join(_HELD_NOW, true()))
_EXPIRED = delete(RESERVATIONS).where(
    RESERVATIONS.c.key_name == bindparam("key_name"), RESERVATIONS.c.expires_at <= bindparam("now")
)
_SETTLE = delete(RESERVATIONS).where(RESERVATIONS.c.id == bindparam("reservation"))


@dataclass
class Hold:
    """What one request holds: its reservation row (daily quotas) and its minute window share.

    `tokens` and `cost` (USD) are the worst case; `minute_tokens` what was
    added to the tokens-per-minute window and `minute_resets_at` (epoch
    seconds) when that window ends.
    """

    tokens: int
    cost: float
    reservation: int | None = None
    minute_tokens: int = 0
    minute_resets_at: float = 0.0


def reserve(
    engine: Engine,
    minute_window: FixedWindowRateLimiter,
    caller: Caller,
    tokens: int,
    cost: float,
    now: datetime,
    seconds: float,
) -> Hold:
    """Reserve `tokens` and `cost` (USD) for one request of `caller`; nothing for a key without
    quotas.

    Raises RateLimited (429) `tokens_per_day_exceeded`, `usd_per_day_exceeded`
    or `tokens_per_minute_exceeded` when the key's use plus what others hold
    already reaches a limit; nothing is then held. Retry-After is the time to
    midnight (UTC) or to the minute's end when the use alone reaches it, else
    RETRY_WHILE_RESERVED seconds.
    """
    hold = Hold(tokens, cost)
    if caller.tokens_per_day is not None or caller.usd_per_day is not None:
        hold.reservation = _reserve_today(engine, caller, tokens, cost, now, seconds)
    if caller.tpm is not None:
        try:
            _reserve_minute(minute_window, caller, hold)
        except RateLimited:
            if hold.reservation is not None:
                with engine.begin() as connection:
                    settle(connection, [hold.reservation])
            raise
    return hold


def settle(connection: Connection, reservations: Sequence[int]) -> None:
    """Give back daily reservations (`Hold.reservation`s), in the transaction that writes the
    real usage."""
    if reservations:
        connection.execute(_SETTLE, [{"reservation": r} for r in reservations])


def settle_minute(
    minute_window: FixedWindowRateLimiter, caller: Caller, hold: Hold | None, used: int
) -> None:
    """Replace `hold`'s share of the tokens-per-minute window with the `used` tokens.

    A window that ended meanwhile gets the used tokens (they were spent in
    it); Redis down: nothing (see `minute_window_down`).
    """
    if caller.tpm is None:
        return
    item = RateLimitItemPerMinute(caller.tpm)
    key = item.key_for("tpm", caller.name)
    held = hold.minute_tokens if hold is not None else 0
    if held and datetime.now(UTC).timestamp() >= hold.minute_resets_at:  # type: ignore[union-attr]
        held = 0
    change = used - held
    if change:
        try:
            minute_window.storage.incr(key, item.get_expiry(), amount=change)
        except Exception as error:  # the storage's client raises its own errors
            minute_window_down(error)
    if hold is not None:
        hold.minute_tokens = 0


def _reserve_today(
    engine: Engine, caller: Caller, tokens: int, cost: float, now: datetime, seconds: float
) -> int:
    def reserve_in(connection: Connection) -> int:
        return _reserve_in(connection, caller, tokens, cost, now, seconds)

    # In one transaction with the reservations asked for at the same moment (at a thousand
    # streams, hundreds): each sees those written before it in it, as it would have seen
    # them committed, and one refused is tried again alone (`group_commit.write_now`).
    return group_commit.write_now(engine, reserve_in)


def _reserve_in(
    connection: Connection, caller: Caller, tokens: int, cost: float, now: datetime, seconds: float
) -> int:
    """`_reserve_today`'s statements on `connection`; the reservation's id, or RateLimited."""
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(func.hashtext(caller.name))))
    inserted = connection.execute(
        RESERVATIONS.insert().values(
            key_name=caller.name,
            tokens=tokens,
            cost=cost,
            created_at=now,
            expires_at=now + timedelta(seconds=seconds),
        )
    )
    own = inserted.inserted_primary_key[0]  # type: ignore[index]
    totals = connection.execute(
        _USED_AND_HELD,
        {"key_name": caller.name, "day": now.date(), "now": now, "own": own},
    ).one()
    used_tokens, used_cost = int(totals[0]), float(totals[1])
    held_tokens, held_cost = int(totals[2]), float(totals[3])
    until_tomorrow = _seconds_to_midnight(now)
    limit = caller.tokens_per_day
    if limit is not None and used_tokens + held_tokens >= limit:
        raise RateLimited(
            f"This access key used its {limit:,} tokens for today (UTC)"
            + ("." if used_tokens >= limit else ", counting the answers in progress."),
            code="tokens_per_day_exceeded",
            retry_after=until_tomorrow if used_tokens >= limit else RETRY_WHILE_RESERVED,
        )
    usd = caller.usd_per_day
    if usd is not None and used_cost + held_cost >= usd:
        raise RateLimited(
            f"This access key spent its ${usd:g} for today (UTC)"
            + ("." if used_cost >= usd else ", counting the answers in progress."),
            code="usd_per_day_exceeded",
            retry_after=until_tomorrow if used_cost >= usd else RETRY_WHILE_RESERVED,
        )
    connection.execute(_EXPIRED, {"key_name": caller.name, "now": now})
    return int(own)


def _reserve_minute(minute_window: FixedWindowRateLimiter, caller: Caller, hold: Hold) -> None:
    assert caller.tpm is not None
    item = RateLimitItemPerMinute(caller.tpm)
    key = item.key_for("tpm", caller.name)
    storage = minute_window.storage
    try:
        after = storage.incr(key, item.get_expiry(), amount=hold.tokens)
        resets_at = storage.get_expiry(key)
    except Exception as error:  # the storage's client raises its own errors
        minute_window_down(error)
        return
    if after - hold.tokens >= caller.tpm:
        try:
            storage.incr(key, item.get_expiry(), amount=-hold.tokens)
        except Exception as error:
            minute_window_down(error)
        # The window holds what answers in flight reserved too: it ends within a minute.
        raise RateLimited(
            f"This access key used its {caller.tpm:,} tokens for this minute.",
            code="tokens_per_minute_exceeded",
            retry_after=max(1, math.ceil(resets_at - datetime.now(UTC).timestamp())),
        )
    hold.minute_tokens = hold.tokens
    hold.minute_resets_at = resets_at


def _seconds_to_midnight(now: datetime) -> int:
    tomorrow = datetime.combine(now.date() + timedelta(days=1), time(), tzinfo=UTC)
    return max(1, math.ceil((tomorrow - now).total_seconds()))
