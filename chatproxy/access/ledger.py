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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from flask import current_app
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import Connection, Engine

from chatproxy.access.keys import Caller, current_caller
from chatproxy.access.quotas import CLOCK, LEDGER, TOKEN_LIMITER, Clock
from chatproxy.access.reservations import Hold, reserve, settle, settle_minute
from chatproxy.metrics import TOKENS
from chatproxy.state import current_prices, current_settings
from chatproxy.store import group_commit, spool
from chatproxy.store.database import db, upserting_insert
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
        if not self._has_quotas():
            return
        prompt_tokens = prompt()
        output = cap * max(1, n)
        price = price_for(model, self.prices)
        cost = (prompt_tokens * price.input + output * price.output) / 1e6 if price else 0.0
        self._hold(prompt_tokens + output, cost)

    def reserve_worst(self, worst: Callable[[], tuple[int, float]]) -> None:
        """Hold a request's worst case `worst()`: (tokens, USD), for a request billed in other
        units than tokens (audio, images: `chatproxy.media_prices`); raises as `reserve`.
        `worst()` runs only for a key with quotas."""
        if self._has_quotas():
            self._hold(*worst())

    def _has_quotas(self) -> bool:
        caller = self.caller
        return not (
            caller.tpm is None and caller.tokens_per_day is None and caller.usd_per_day is None
        )

    def _hold(self, tokens: int, cost: float) -> None:
        self.hold = reserve(
            self.engine,
            self.minute_window,
            self.caller,
            tokens,
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
        Returns once it is written (or spooled); requests that end at the same
        moment share one transaction (`chatproxy.store.group_commit`).
        """
        group_commit.commit(self.engine, [*also, self.charge(model, usage, cost, counted)])
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
        reservation = self.hold.reservation if self.hold else None
        return spool.Write(
            "charge",
            {
                "key_name": self.caller.name,
                "day": self.clock().date().isoformat(),
                "model": model[:200],
                "requests": 1,
                "prompt_tokens": _tokens(usage, "prompt_tokens"),
                "completion_tokens": _tokens(usage, "completion_tokens"),
                "cost": cost or 0.0,
                "counted_requests": int(counted),
                "reservations": [] if reservation is None else [reservation],
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


def write_charge(connection: Connection, charge: dict[str, Any]) -> None:
    """Add a charge (a payload of `Recorder.charge`, or several `merge_charges` summed) to the
    ledger and give back its reservations, in the transaction of `connection`."""
    charge = _current_shape(charge)
    values = {name: charge[name] for name in _SUMMED}
    values.update(
        key_name=charge["key_name"], day=date.fromisoformat(charge["day"]), model=charge["model"]
    )
    connection.execute(_ledger_upsert(connection.dialect.name), values)
    settle(connection, charge["reservations"])
    for kind in ("prompt", "completion"):
        if tokens := values[f"{kind}_tokens"]:
            TOKENS.labels(values["key_name"], values["model"], kind).inc(tokens)


def merge_charges(charges: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The charges of one transaction summed per ledger row (key, day, model), in that order.

    One upsert per row instead of one per request: on PostgreSQL each is a new
    version of the row, and the row's lock is held until the commit. The same
    order in every process keeps two transactions from waiting on each other.
    """
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for charge in map(_current_shape, charges):
        row_key = (charge["key_name"], charge["day"], charge["model"])
        row = rows.get(row_key)
        if row is None:
            rows[row_key] = {**charge, "reservations": list(charge["reservations"])}
            continue
        for name in _SUMMED:
            row[name] += charge[name]
        row["reservations"] += charge["reservations"]
    return [rows[row_key] for row_key in sorted(rows)]


# The ledger's columns a charge adds to.
_SUMMED = ("requests", "prompt_tokens", "completion_tokens", "cost", "counted_requests")


def _current_shape(charge: dict[str, Any]) -> dict[str, Any]:
    """`charge` as `Recorder.charge` makes it now: one spooled before charges were merged
    has `counted` and one `reservation` in place of `requests`, `counted_requests` and
    `reservations`."""
    if "reservations" in charge:
        return charge
    reservation = charge.get("reservation")
    old = {name: value for name, value in charge.items() if name not in ("counted", "reservation")}
    return {
        **old,
        "requests": 1,
        "counted_requests": int(bool(charge.get("counted"))),
        "reservations": [] if reservation is None else [reservation],
    }


@functools.cache
def _ledger_upsert(dialect: str) -> Any:
    """`INSERT ... ON CONFLICT DO UPDATE` adding to a ledger row, built once per dialect."""
    insert = upserting_insert(dialect)
    statement = insert(LEDGER)
    return statement.on_conflict_do_update(
        index_elements=["key_name", "day", "model"],
        set_={name: LEDGER.c[name] + statement.excluded[name] for name in _SUMMED},
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


spool.register(
    "charge",
    write_charge,
    merge=merge_charges,
    one_statement=lambda charge: not _current_shape(charge)["reservations"],
)
