"""The conversation store: SQLAlchemy through Flask-SQLAlchemy, migrations through Flask-Migrate.

SQLite by default (`instance/chatproxy.db`, WAL journal, foreign keys on), or
PostgreSQL through psycopg 3 when DATABASE_URL says so. Neither waits inside
the gevent hub: psycopg waits cooperatively by itself (from 3.1.14 on); a
SQLite writer waits for another's lock by sleeping between tries
(`chatproxy.store.sqlite`), never in SQLite's busy handler. The schema lives in
`migrations/` (Alembic); `chatproxy.store.schema.upgrade_database` brings a
database to the newest revision.
"""

from __future__ import annotations

import logging
import select
import sqlite3
import sys
from pathlib import Path
from typing import Any

from flask import Flask, Response
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InterfaceError, InvalidatePoolError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import Pool

from chatproxy.config import PROJECT_ROOT
from chatproxy.errors import StoreUnavailable, error_response
from chatproxy.logsafe import Throttle
from chatproxy.store.sqlite import CooperativeConnection

MIGRATIONS_DIR = PROJECT_ROOT / "migrations"
INSTANCE_DIR = PROJECT_ROOT / "instance"
# Seconds a SQLite writer waits for another connection's write to end before
# "database is locked"; writes here last a millisecond or so. The wait sleeps
# cooperatively (store/sqlite.py). A DATABASE_URL ending in `?timeout=SECONDS`
# sets another.
SQLITE_BUSY_TIMEOUT = 10
STORE_RETRY_AFTER = 5  # seconds a client is asked to wait while the database is away
log = logging.getLogger(__name__)


class Base(DeclarativeBase):
    """The models' base class."""


db = SQLAlchemy(model_class=Base)


def init_store(app: Flask, database_url: str, migrations: bool = True, pool_size: int = 10) -> None:
    """Bind the store to `app`: the database at `database_url` (PostgreSQL: `pool_size`
    connections per process), and with `migrations` the `flask db` commands (Flask-Migrate,
    imported only then).

    Nothing connects until the first query.
    """
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(database_url, pool_size)
    if database_url.startswith("sqlite"):
        Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    db.init_app(app)
    if migrations:
        from flask_migrate import Migrate

        Migrate(app, db, directory=str(MIGRATIONS_DIR), render_as_batch=True)


def release_session() -> None:
    """Give the current request's session back (its connection returns to the pool), if it
    has one: `db.session.close()` alone would first make a session to close."""
    if db.session.registry.has():
        db.session.close()


def register_store_errors(app: Flask) -> None:
    """Answer 503 `store_unavailable` (Retry-After) while the database cannot be reached.

    Before a question is stored nothing has been asked, so the client may
    simply try again; the session is given back so the pool recovers. The
    warning in the log comes once a minute (every request meets the outage).
    """
    unavailable_said = Throttle(60.0)  # by the driver's words

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    @app.errorhandler(PoolTimeout)
    def store_unavailable(error: SQLAlchemyError) -> Response:
        db.session.remove()
        reason = str(getattr(error, "orig", None) or error).splitlines()[0][:200]
        if unavailable_said.allows(reason):
            log.warning("the database is unavailable: %s (said once a minute)", reason)
        unavailable = StoreUnavailable(
            "The conversation store is unavailable right now; nothing was asked. "
            "Try again shortly.",
            retry_after=STORE_RETRY_AFTER,
        )
        return error_response(unavailable)


def upserting_insert(dialect: str) -> Any:
    """The `insert()` of `dialect` (`postgresql` or `sqlite`), the one with `on_conflict_do_...`.

    Imported when first asked: the PostgreSQL dialect's modules cost a worker on
    SQLite about 2 MB.
    """
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    from sqlalchemy.dialects import sqlite

    return sqlite.insert


def engine_options(database_url: str, pool_size: int = 10) -> dict[str, Any]:
    """SQLAlchemy engine options for the database at `database_url`; PostgreSQL keeps
    `pool_size` connections open and opens no more."""
    if database_url.startswith("sqlite"):
        # Writers wait for another's lock by sleeping between tries, never inside
        # SQLite, which would hold every greenlet of a gevent worker (store/sqlite.py).
        # `?timeout=SECONDS` in the URL (SQLAlchemy passes it to sqlite3, which
        # hands it to the factory) wins over ours.
        connect_args: dict[str, Any] = {"factory": CooperativeConnection}
        if "timeout=" not in database_url.partition("?")[2]:
            connect_args["timeout"] = SQLITE_BUSY_TIMEOUT
        return {"connect_args": connect_args}
    # Streams hold no connection while they wait on the upstream, so a small
    # pool serves many answers. No overflow: at 200 streams a worker opened and
    # closed a connection (a PostgreSQL process) for about every third answer,
    # while waiting for a pooled one takes a few milliseconds. No pre-ping: a
    # database restart is noticed without a round trip (`_hung_up`).
    return {
        "pool_size": pool_size,
        "max_overflow": 0,
        "pool_recycle": 1800,
        "connect_args": {"connect_timeout": 5},  # seconds; an unreachable host fails fast
    }


@event.listens_for(Pool, "checkout")
def _hung_up(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Replace the pooled PostgreSQL connections once one is found closed by the server (a
    restart, an idle timeout, `pg_terminate_backend`), before a request uses it.

    An idle connection has nothing to read until the server hangs up: then its
    goodbye (an ErrorResponse) and EOF wait on the socket. A poll with no
    timeout (3-5 µs, never a wait) finds them, where SQLAlchemy's pre-ping costs
    a round trip (130-150 µs on loopback). As a failed pre-ping does,
    InvalidatePoolError makes the pool replace this connection and, at their
    next check-out, all opened before it (SQLAlchemy, "Disconnect Handling").
    A connection just opened is not polled, as pre-ping skips it too. SQLite's
    connections have no socket.
    """
    fileno = getattr(dbapi_connection, "fileno", None)
    if fileno is None:
        return
    if not record.info.get("handed_out"):  # emptied by the pool when it reconnects
        record.info["handed_out"] = True
        return
    poller = _os_poll()
    poller.register(fileno(), select.POLLIN)
    if poller.poll(0):
        raise InvalidatePoolError("the database server closed the connection")


def _os_poll() -> Any:
    """The operating system's `select.poll()`, also under gevent's monkey-patching, whose
    poll answers only on the hub's next turn; a poll with no timeout needs no hub. poll,
    not select: a worker holding a thousand streams has descriptors above select's 1024."""
    monkey = sys.modules.get("gevent.monkey")
    poll = monkey.get_original("select", "poll") if monkey is not None else select.poll
    return poll()


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Every SQLite connection: WAL (readers do not wait for writers), foreign keys on."""
    if not isinstance(dbapi_connection, sqlite3.Connection):  # ours is a subclass (store/sqlite.py)
        return
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; no fsync per commit
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
