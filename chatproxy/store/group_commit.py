"""Group commit: the transactions that wait at the same moment, written as one.

At a thousand streams hundreds of answers end within the same few
milliseconds, and each stores its answer and charges the ledger. Written one
by one, every transaction pays a commit (230 µs of CPU on SQLite, a WAL flush
on PostgreSQL), and on PostgreSQL every one of them updates the same ledger
row (the key's day and model), whose lock makes them queue behind each
other's commit. Written together, they pay one commit, and writes of a kind
that registered a merge (`spool.register(..., merge=)`: the ledger's charges)
are summed into one write per row, after the others, so the hot row is
locked for the shortest time, in the same order by every process.

Each caller still returns only once its own transaction is written (or
spooled): nothing is acknowledged that a crash could lose. A group that the
database refuses as a whole (one answer's conversation was deleted
meanwhile: a constraint) is written again one transaction at a time, so only
the wrong one is dropped (`spool.commit`).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from chatproxy.store import spool

# Transactions one leader writes in a row before it hands over (see GroupCommit.commit).
GROUP_ROUNDS = 4


@dataclass
class _Waiting:
    """One caller's transaction and, once written, its writers' results (None: spooled)."""

    writes: Sequence[spool.Write]
    done: threading.Event = field(default_factory=threading.Event)
    results: list[Any] | None = None


class GroupCommit:
    """The transactions of one database that wait at the same time, written in one.

    The first caller to find no write under way writes what waits, then what
    came meanwhile, up to GROUP_ROUNDS transactions; the next caller to come
    then takes over. The others wait for their own to be written.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[_Waiting] = []
        self._writing = False

    def commit(self, engine: Engine, writes: Sequence[spool.Write]) -> list[Any] | None:
        """Write `writes` in one transaction with those waiting now; as `spool.commit`, returns
        each write's result once written, or None once spooled."""
        mine = _Waiting(writes)
        with self._lock:
            self._waiting.append(mine)
            leads, self._writing = not self._writing, True
        if not leads:
            mine.done.wait()
            return mine.results
        # Under gevent a SQLite write never yields: let the greenlets that are ready
        # (streams ending in this same turn of the loop) add theirs first.
        time.sleep(0)
        try:
            for _ in range(GROUP_ROUNDS):
                with self._lock:
                    batch, self._waiting = self._waiting, []
                if not batch:
                    break
                _write(engine, batch)
        finally:
            with self._lock:
                self._writing = False
                left, self._waiting = self._waiting, []
            if left:  # came during the last round: written here, not left waiting
                _write(engine, left)
        return mine.results


def _write(engine: Engine, batch: list[_Waiting]) -> None:
    """Write `batch` as one transaction, or each on its own if the database refuses it."""
    try:
        if len(batch) == 1:
            batch[0].results = spool.commit(engine, batch[0].writes)
            return
        try:
            results = spool.commit(engine, _merged(batch), refused="raise")
        except IntegrityError:
            for waiting in batch:
                waiting.results = spool.commit(engine, waiting.writes)
            return
        place = 0
        for waiting in batch:
            if results is None:
                waiting.results = None
                continue
            own: list[Any] = []
            for write in waiting.writes:
                if spool.merges(write.kind):
                    own.append(None)
                else:
                    own.append(results[place])
                    place += 1
            waiting.results = own
    finally:
        for waiting in batch:
            waiting.done.set()


def _merged(batch: list[_Waiting]) -> list[spool.Write]:
    """The writes of `batch` in their order, then those of each mergeable kind merged."""
    writes: list[spool.Write] = []
    mergeable: dict[str, list[dict[str, Any]]] = {}
    for waiting in batch:
        for write in waiting.writes:
            if spool.merges(write.kind):
                mergeable.setdefault(write.kind, []).append(write.payload)
            else:
                writes.append(write)
    for kind, payloads in mergeable.items():
        writes += [spool.Write(kind, payload) for payload in spool.merge(kind, payloads)]
    return writes


# One per database (engine); weak, so an engine that is dropped (a test's app) goes with it.
_groups: weakref.WeakKeyDictionary[Engine, GroupCommit] = weakref.WeakKeyDictionary()
_grouping = threading.Lock()


def commit(engine: Engine, writes: Sequence[spool.Write]) -> list[Any] | None:
    """`spool.commit(engine, writes)`, in one transaction with the others that wait meanwhile."""
    with _grouping:
        group = _groups.get(engine)
        if group is None:
            group = _groups[engine] = GroupCommit()
    return group.commit(engine, writes)
