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

Questions are grouped too (`write_now`): at a thousand streams as many
questions arrive within a few milliseconds, and each must be stored before
its upstream is called. Those are never spooled (the answer needs the
question's row): a database that fails the group fails each of them, with its
error, as it would have alone.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from chatproxy.store import spool

# Transactions one leader writes in a row before it hands over (see GroupCommit.commit).
GROUP_ROUNDS = 4


Result = TypeVar("Result")
# One transaction of `write_now`: what it does on the group's connection, and its result.
NowWrite = Callable[[Connection], Any]


@dataclass
class _Waiting:
    """One caller's transaction and, once written, its result: its writers' results (None:
    spooled) for `commit`, its write's for `write_now`, or the error that failed it."""

    writes: Any  # Sequence[spool.Write] for `commit`, a NowWrite for `write_now`
    done: threading.Event = field(default_factory=threading.Event)
    results: Any = None
    error: BaseException | None = None


class GroupCommit:
    """The transactions of one database that wait at the same time, written in one.

    The first caller to find no write under way writes what waits, then what
    came meanwhile, up to GROUP_ROUNDS transactions; the next caller to come
    then takes over. The others wait for their own to be written.
    `write_batch(engine, batch)` writes a batch and sets each one's result
    or error.
    """

    def __init__(self, write_batch: Callable[[Engine, list[_Waiting]], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._waiting: list[_Waiting] = []
        self._writing = False
        self._write_batch = write_batch or _write

    def commit(self, engine: Engine, writes: Any) -> Any:
        """Write `writes` in one transaction with those waiting now and return its result
        (see `commit` and `write_now` below); raises the error that failed it, if any."""
        mine = _Waiting(writes)
        with self._lock:
            self._waiting.append(mine)
            leads, self._writing = not self._writing, True
        if not leads:
            mine.done.wait()
            if mine.error is not None:
                raise mine.error
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
                self._write_batch(engine, batch)
        finally:
            with self._lock:
                self._writing = False
                left, self._waiting = self._waiting, []
            if left:  # came during the last round: written here, not left waiting
                self._write_batch(engine, left)
        if mine.error is not None:
            raise mine.error
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


def _write_now(engine: Engine, batch: list[_Waiting]) -> None:
    """Carry out the NowWrites of `batch` in one transaction; each alone if the group fails
    for one of them (a constraint, a deadlock, an error a write raises itself, such as a
    reservation refused), so that only the wrong one fails.

    Any other database error (it is away, or locked for longer than its busy
    timeout) fails every one of them with it, as it would have each alone.
    """
    try:
        if len(batch) > 1:
            try:
                with engine.begin() as connection:
                    results = [waiting.writes(connection) for waiting in batch]
            except SQLAlchemyError as error:
                if not _only_the_group(error):
                    for waiting in batch:
                        waiting.error = error
                    return
            except Exception:  # the write that raised it raises it again, alone
                pass
            else:
                for waiting, result in zip(batch, results, strict=True):
                    waiting.results = result
                return
        for waiting in batch:
            try:
                with engine.begin() as connection:
                    waiting.results = waiting.writes(connection)
            except Exception as error:  # raised again in its caller's thread
                waiting.error = error
    except BaseException:  # the leader's greenlet was killed: the rest are not known written
        for waiting in batch:
            if waiting.results is None and waiting.error is None:
                waiting.error = RuntimeError("the transaction was interrupted")
        raise
    finally:
        for waiting in batch:
            waiting.done.set()


def _only_the_group(error: SQLAlchemyError) -> bool:
    """True when `error` may be the group's alone: a constraint one write broke, or
    PostgreSQL's deadlock or serialization failure (SQLSTATE class 40), which a group
    taking several keys' advisory locks in its own order can meet and each alone cannot."""
    if isinstance(error, IntegrityError):
        return True
    sqlstate = getattr(getattr(error, "orig", None), "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith("40")


# One per database (engine) and kind; weak, so an engine that is dropped (a test's app)
# goes with it.
_groups: weakref.WeakKeyDictionary[Engine, GroupCommit] = weakref.WeakKeyDictionary()
_now_groups: weakref.WeakKeyDictionary[Engine, GroupCommit] = weakref.WeakKeyDictionary()
_grouping = threading.Lock()


def commit(engine: Engine, writes: Sequence[spool.Write]) -> list[Any] | None:
    """`spool.commit(engine, writes)`, in one transaction with the others that wait meanwhile."""
    with _grouping:
        group = _groups.get(engine)
        if group is None:
            group = _groups[engine] = GroupCommit()
    return group.commit(engine, writes)  # type: ignore[no-any-return]


def write_now(engine: Engine, write: Callable[[Connection], Result]) -> Result:
    """`write(connection)` in a transaction shared with the others waiting meanwhile; returns
    what it returned once committed.

    Never spooled: raises the database's error when the transaction fails
    (SQLAlchemyError), and the error `write` raised itself.
    """
    with _grouping:
        group = _now_groups.get(engine)
        if group is None:
            group = _now_groups[engine] = GroupCommit(_write_now)
    return group.commit(engine, write)  # type: ignore[no-any-return]
