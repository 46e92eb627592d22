"""SQLite connections that wait for another writer's lock without holding the worker.

sqlite3's `timeout` is SQLite's busy handler, which sleeps inside the C
library: under gunicorn's gevent worker every greenlet of a worker shares one
OS thread, so one write waiting for the lock stalled every stream the worker
served. A `CooperativeConnection` gives SQLite no busy timeout (it answers
SQLITE_BUSY at once) and tries the statement (or COMMIT) again after short
sleeps of `time.sleep`, which gevent makes cooperative once it has patched
`time` (in threads it is a plain sleep), until the `timeout` it was given
has passed; then the "database is locked" error is raised as before.

Not waited for: SQLITE_BUSY_SNAPSHOT. In WAL mode a transaction that read
before it writes, while another connection committed meanwhile, can never
write; only a new transaction can, and SQLite's own handler does not wait for
it either.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

# Seconds between tries, as SQLite's own busy handler sleeps (sqliteDefaultBusyCallback
# in main.c); 0.1 s each after the last.
DELAYS = (0.001, 0.002, 0.005, 0.010, 0.015, 0.020, 0.025, 0.025, 0.025, 0.050, 0.050, 0.100)
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
        wait_while_busy(lambda: run(sql, parameters), self.connection.busy_timeout)
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
        if connection.isolation_level is None and not connection.in_transaction:
            run(sql, rows)
        else:
            wait_while_busy(lambda: run(sql, rows), connection.busy_timeout)
        return self


class CooperativeConnection(sqlite3.Connection):
    """A sqlite3 connection whose `timeout` (seconds a writer waits for another's lock) is
    waited out by sleeping between tries (`wait_while_busy`), not inside SQLite.

    Made by `sqlite3.connect(path, timeout=..., factory=CooperativeConnection)`
    (SQLAlchemy: `connect_args={"factory": ...}`; a `?timeout=` in the URL
    arrives here too). Its cursors are `CooperativeCursor`s, and COMMIT waits
    the same way; other arguments are sqlite3's.
    """

    def __init__(self, database: Any, *, timeout: float = 5.0, **kwargs: Any) -> None:
        super().__init__(database, timeout=0, **kwargs)
        self.busy_timeout = timeout

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
        wait_while_busy(super().commit, self.busy_timeout)
