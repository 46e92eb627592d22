"""The usage ledger: every answer's tokens and cost, by key, UTC day and model.

A `Recorder` is made in the request (`usage_recorder()`); it reserves the
request's worst case before the upstream is called (`reserve`, see
`chatproxy.access.reservations`) and, when the answer ends (possibly in the
thread that read a stream, after the request is gone), writes its usage to
the ledger, settling the reservation in the same transaction. Every answer is
charged: without usage from the upstream (cut short, or a server that sends
none) the caller passes tokens it counted (`tokens.counted_usage`), and the
row's `counted_requests` says so.
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from flask import current_app
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import Connection, Engine
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from chatproxy.access.keys import Caller, current_caller
from chatproxy.access.quotas import CLOCK, LEDGER, TOKEN_LIMITER, Clock
from chatproxy.access.reservations import Hold, reserve, settle, settle_minute
from chatproxy.metrics import TOKENS
from chatproxy.state import current_prices, current_settings
from chatproxy.store import spool
from chatproxy.store.database import db
from chatproxy.tokens import Price, price_for


@dataclass
class Recorder:
    """Reserves a request's worst case, then adds its usage to the ledger and the minute window."""

    engine: Engine
    caller: Caller
    minute_window: FixedWindowRateLimiter
    clock: Clock
    prices: Mapping[str, Price]
    reservation_seconds: float
    hold: Hold | None = None

    def reserve(self, model: str, prompt: Callable[[], int], cap: int, n: int = 1) -> None:
        """Hold the prompt's tokens plus `cap` × `n` output tokens of `model`, and their price.

        `prompt()` counts the prompt's tokens (or bounds them from above); it
        runs only for a key with quotas, as does all the rest. Raises
        RateLimited (429) when the key's use and what others hold reach a limit
        (`reservations.reserve`).
        """
        caller = self.caller
        if caller.tpm is None and caller.tokens_per_day is None and caller.usd_per_day is None:
            return
        prompt_tokens = prompt()
        output = cap * max(1, n)
        price = price_for(model, self.prices)
        cost = (prompt_tokens * price.input + output * price.output) / 1e6 if price else 0.0
        self.hold = reserve(
            self.engine,
            self.minute_window,
            caller,
            prompt_tokens + output,
            cost,
            self.clock(),
            self.reservation_seconds,
        )

    def __call__(
        self,
        model: str,
        usage: Mapping[str, Any] | None,
        cost: float | None,
        counted: bool = False,
        also: Sequence[spool.Write] = (),
    ) -> None:
        """Record a request of `model`: its `usage` (or None), USD `cost`, whether `counted`.

        Written at once with `also` (the answer kept for an Idempotency-Key),
        in one transaction, or kept in the spool while the database is away.
        Returns once it is written (or spooled); charges of requests that end at
        the same moment share one transaction (`_GroupCommit`).
        """
        charge = self.charge(model, usage, cost, counted)
        if also:
            spool.commit(self.engine, [charge, *also])
        else:
            _group_commit(self.engine).commit(self.engine, charge)
        self.count_tokens(usage)

    def charge(
        self,
        model: str,
        usage: Mapping[str, Any] | None,
        cost: float | None,
        counted: bool = False,
    ) -> spool.Write:
        """The ledger's write for a request of `model` (see `__call__`), for the transaction
        that stores its answer; it gives back the request's reservation there."""
        return spool.Write(
            "charge",
            {
                "key_name": self.caller.name,
                "day": self.clock().date().isoformat(),
                "model": model[:200],
                "prompt_tokens": _tokens(usage, "prompt_tokens"),
                "completion_tokens": _tokens(usage, "completion_tokens"),
                "cost": cost or 0.0,
                "counted": counted,
                "reservation": self.hold.reservation if self.hold else None,
            },
        )

    def count_tokens(self, usage: Mapping[str, Any] | None) -> None:
        """Put the used tokens in the key's tokens-per-minute window, in place of what was held.

        Never inside a database transaction: with Redis this waits on the
        network, and every other writer would wait meanwhile for SQLite's
        write lock.
        """
        used = _tokens(usage, "prompt_tokens") + _tokens(usage, "completion_tokens")
        settle_minute(self.minute_window, self.caller, self.hold, used)


class _GroupCommit:
    """The ledger's charges that wait at the same time, written in one transaction.

    A transaction of one charge costs about 230 µs of CPU on SQLite, ten in one
    about 90 µs each, and at a thousand streams hundreds end within the same few
    milliseconds. Each caller still returns only once its charge is written (or
    spooled): nothing is acknowledged that a crash could lose. The first caller
    to find no write under way writes what waits, then what came meanwhile, up
    to GROUP_ROUNDS transactions; the next caller to come then takes over.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[tuple[spool.Write, threading.Event]] = []
        self._writing = False

    def commit(self, engine: Engine, charge: spool.Write) -> None:
        """Write `charge` with those waiting now; returns when it is written or spooled."""
        written = threading.Event()
        with self._lock:
            self._waiting.append((charge, written))
            leads, self._writing = not self._writing, True
        if not leads:
            written.wait()
            return
        # Under gevent a SQLite write never yields: let the greenlets that are ready
        # (streams ending in this same turn of the loop) add their charges first.
        time.sleep(0)
        try:
            for _ in range(GROUP_ROUNDS):
                with self._lock:
                    batch, self._waiting = self._waiting, []
                if not batch:
                    break
                try:
                    spool.commit(engine, [write for write, _ in batch])
                finally:
                    for _, done in batch:
                        done.set()
        finally:
            with self._lock:
                self._writing = False
                left, self._waiting = self._waiting, []
            if left:  # came during the last round: written here, not left waiting
                try:
                    spool.commit(engine, [write for write, _ in left])
                finally:
                    for _, done in left:
                        done.set()


GROUP_ROUNDS = 4
# One per database (engine); weak, so an engine that is dropped (a test's app) goes with it.
_groups: weakref.WeakKeyDictionary[Engine, _GroupCommit] = weakref.WeakKeyDictionary()
_grouping = threading.Lock()


def _group_commit(engine: Engine) -> _GroupCommit:
    with _grouping:
        group = _groups.get(engine)
        if group is None:
            group = _groups[engine] = _GroupCommit()
        return group


def write_charge(connection: Connection, charge: dict[str, Any]) -> None:
    """Add one request (a payload of `Recorder.charge`) to the ledger, and give back its
    reservation, in the transaction of `connection`."""
    values = {
        "key_name": charge["key_name"],
        "day": date.fromisoformat(charge["day"]),
        "model": charge["model"],
        "requests": 1,
        "prompt_tokens": charge["prompt_tokens"],
        "completion_tokens": charge["completion_tokens"],
        "cost": charge["cost"],
        "counted_requests": int(charge["counted"]),
    }
    connection.execute(_ledger_upsert(connection.dialect.name), values)
    settle(connection, charge["reservation"])
    for kind in ("prompt", "completion"):
        if tokens := values[f"{kind}_tokens"]:
            TOKENS.labels(values["key_name"], values["model"], kind).inc(tokens)


@functools.cache
def _ledger_upsert(dialect: str) -> Any:
    """`INSERT ... ON CONFLICT DO UPDATE` adding to a ledger row, built once per dialect."""
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(LEDGER)
    return statement.on_conflict_do_update(
        index_elements=["key_name", "day", "model"],
        set_={
            name: LEDGER.c[name] + statement.excluded[name]
            for name in (
                "requests",
                "prompt_tokens",
                "completion_tokens",
                "cost",
                "counted_requests",
            )
        },
    )


def usage_recorder() -> Recorder:
    """A Recorder for the current request's caller."""
    return Recorder(
        engine=db.engine,
        caller=current_caller(),
        minute_window=current_app.extensions[TOKEN_LIMITER],
        clock=current_app.extensions[CLOCK],
        prices=current_prices(),
        reservation_seconds=current_settings().reservation_seconds,
    )


def _tokens(usage: Mapping[str, Any] | None, name: str) -> int:
    value = usage.get(name) if isinstance(usage, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


spool.register("charge", write_charge)
