"""SQLite connections that wait for another writer's lock without holding the worker.

sqlite3's `timeout` is SQLite's busy handler, which sleeps inside the C
library: under gunicorn's gevent worker every greenlet of a worker shares one
OS thread, so one write waiting for the lock stalled every stream the worker
served. A `CooperativeConnection` gives SQLite a busy timeout of a few
milliseconds only (then it answers SQLITE_BUSY) and tries the statement (or
COMMIT) again after short sleeps of `time.sleep`, which gevent makes cooperative once it has patched
`time` (in threads it is a plain sleep), until the `timeout` it was given
has passed; then the "database is locked" error is raised as before.

Those few milliseconds (IN_SQLITE_WAIT) are waited in C on purpose: another
process's write lasts a millisecond or so, and a wait in C hands the lock over
at once, where a sleeping greenlet wakes only when its busy event loop gets
to it. Within a process, writers take turns (`WriterTurn`): one connection at
a time may be in a write transaction, the others wait on a lock that wakes
the next at once. So while another process holds the lock for long, only one
greenlet per worker tries again, and the worker is held at most 5 ms per try.

Not waited for: SQLITE_BUSY_SNAPSHOT. In WAL mode a transaction that read
before it writes, while another connection committed meanwhile, can never
write; only a new transaction can, and SQLite's own handler does not wait for
it either.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

# Seconds between tries, as SQLite's own busy handler begins (sqliteDefaultBusyCallback
# in main.c), then 10 ms each: only one connection per process tries (`WriterTurn`),
# and another process's write lasts a millisecond or so.
DELAYS = (0.001, 0.002, 0.005, 0.010)
# Seconds SQLite's own busy handler may wait, holding the worker, before it answers
# "database is locked" and the wait goes on cooperatively (see the module's docstring).
IN_SQLITE_WAIT = 0.005
# Statements that take the write lock (in sqlite3's default mode, a transaction begins
# before the first of them).
WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "BEGIN IMMEDIATE", "BEGIN EXCLUSIVE")
SQLITE_BUSY = 5  # the primary result code; the extended codes keep it in their low byte
SQLITE_BUSY_SNAPSHOT = 5 | (2 << 8)  # 517
Result = TypeVar("Result")


def wait_while_busy(attempt: Callable[[], Result], timeout: float) -> Result:
    """`attempt()`, tried again while it raises SQLITE_BUSY, for up to `timeout` seconds.

    Raises the last sqlite3.OperationalError ("database is locked") once
    `timeout` has passed, and any other error (SQLITE_BUSY_SNAPSHOT included)
    at once. `attempt` must have changed nothing when it fails with
    SQLITE_BUSY, as a single statement or a COMMIT has not.
    """
    deadline = time.monotonic() + timeout
    tries = 0
    while True:
        try:
            return attempt()
        except sqlite3.OperationalError as error:
            code = getattr(error, "sqlite_errorcode", None)
            if code is None or code & 0xFF != SQLITE_BUSY or code == SQLITE_BUSY_SNAPSHOT:
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            time.sleep(min(DELAYS[min(tries, len(DELAYS) - 1)], left))  # cooperative under gevent
            tries += 1


class CooperativeCursor(sqlite3.Cursor):
    """A cursor whose statements wait for the write lock as `wait_while_busy` does."""

    connection: CooperativeConnection

    def execute(self, sql: str, parameters: Any = (), /) -> CooperativeCursor:
        """Run one statement, waiting up to the connection's `busy_timeout` for the lock."""
        run = super().execute
        connection = self.connection
        connection.turn.take(sql)
        try:
            wait_while_busy(lambda: run(sql, parameters), connection.busy_timeout)
        finally:
            connection.turn.give_back()
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any], /) -> CooperativeCursor:
        """Run one statement for each set of parameters, waiting for the lock as `execute` does.

        Inside a transaction (as SQLAlchemy runs them) the first row takes the
        write lock for all, so a busy failure wrote nothing and is tried again.
        Without one (autocommit) each row is its own transaction and a retry
        would repeat the rows before the busy one: it is tried once.
        """
        rows = list(seq_of_parameters)  # an iterator would be spent by a failed try
        run = super().executemany
        connection = self.connection
        connection.turn.take(sql)
        try:
            if connection.isolation_level is None and not connection.in_transaction:
                run(sql, rows)
            else:
                wait_while_busy(lambda: run(sql, rows), connection.busy_timeout)
        finally:
            connection.turn.give_back()
        return self


class WriterTurn:
    """A connection's place among the process's writers to one database: one at a time.

    `take(sql)` before a statement waits, for up to the busy timeout, until no
    other connection of this process is in a write transaction, if `sql` would
    start one; `give_back()` after each statement, COMMIT and ROLLBACK lets the
    next writer go once this connection's transaction has ended. The lock is
    threading's, gevent's in a patched worker, so waiting yields to the other
    greenlets and the next in line wakes as soon as the lock is free.
    """

    def __init__(self, connection: CooperativeConnection, lock: threading.Lock) -> None:
        self._connection = connection
        self._lock = lock
        self._held = False

    def take(self, sql: str) -> None:
        """Wait for this process's turn to write if `sql` starts a write transaction.

        Raises sqlite3.OperationalError "database is locked" after the busy timeout.
        """
        connection = self._connection
        if self._held or connection.in_transaction:
            return
        if not sql.lstrip()[:15].upper().startswith(WRITES):
            return
        if not self._lock.acquire(timeout=connection.busy_timeout):
            raise sqlite3.OperationalError("database is locked")
        self._held = True

    def give_back(self, closed: bool = False) -> None:
        """Let the next writer go, once this connection's transaction (if any) has ended
        (`closed`: it has, with the connection)."""
        if self._held and (closed or not self._connection.in_transaction):
            self._held = False
            self._lock.release()


_turns: dict[str, threading.Lock] = {}
_turns_made = threading.Lock()


def writers_lock(database: Any) -> threading.Lock:
    """The lock the writers of this process to `database` (a path) take turns on."""
    name = os.fsdecode(database)
    if name == ":memory:" or name.startswith("file:"):  # its own, or a URI: not shared here
        return threading.Lock()
    with _turns_made:
        return _turns.setdefault(os.path.abspath(name), threading.Lock())


class CooperativeConnection(sqlite3.Connection):
    """A sqlite3 connection whose `timeout` (seconds a writer waits for another's lock) is
    waited out by sleeping between tries (`wait_while_busy`), not inside SQLite.

    Made by `sqlite3.connect(path, timeout=..., factory=CooperativeConnection)`
    (SQLAlchemy: `connect_args={"factory": ...}`; a `?timeout=` in the URL
    arrives here too). Its cursors are `CooperativeCursor`s, and COMMIT waits
    the same way; other arguments are sqlite3's.
    """

    def __init__(self, database: Any, *, timeout: float = 5.0, **kwargs: Any) -> None:
        super().__init__(database, timeout=IN_SQLITE_WAIT, **kwargs)
        self.busy_timeout = timeout
        self.turn = WriterTurn(self, writers_lock(database))

    def cursor(self, factory: Any = None) -> Any:
        """A new cursor; a `CooperativeCursor` unless `factory` names another class."""
        return super().cursor(factory or CooperativeCursor)

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        """`cursor().execute(...)`: sqlite3's shortcut would skip the cursor's waiting."""
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any], /) -> sqlite3.Cursor:
        """`cursor().executemany(...)`, for the same reason."""
        return self.cursor().executemany(sql, seq_of_parameters)

    def commit(self) -> None:
        """COMMIT, waiting for the lock up to `busy_timeout` seconds (a rollback-journal
        database needs it to commit; in WAL mode the writer holds it already)."""
        try:
            wait_while_busy(super().commit, self.busy_timeout)
        finally:
            self.turn.give_back()

    def rollback(self) -> None:
        """ROLLBACK; the next writer of this process may go."""
        try:
            super().rollback()
        finally:
            self.turn.give_back()

    def close(self) -> None:
        """Close; a transaction left open ends here, and with it this connection's turn."""
        try:
            super().close()
        finally:
            self.turn.give_back(closed=True)
