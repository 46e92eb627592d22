"""The request log table: rows added off the answer's path, written in batches, kept N days.

`add` only puts a row in this process's queue (microseconds, under a lock);
a background thread (a greenlet under gevent) writes what waits every
FLUSH_SECONDS in one transaction, through the spool (`chatproxy.store.spool`),
so rows of an outage wait on disk with the answers. No answer waits for it.
A worker that stops writes what waits as it exits. Rows older than the
retention (CHATPROXY_REQUEST_LOG_DAYS) are deleted once an hour per process.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, scoped_session

from chatproxy.store import spool
from chatproxy.store.models import RequestLogRow, as_utc

TABLE = RequestLogRow.__table__
FLUSH_SECONDS = 1.0
PRUNE_SECONDS = 3600.0
# Rows that may wait in one process; beyond, the database is slower than the traffic
# and the newest are dropped (with a warning) rather than memory growing without end.
MOST_WAITING = 50_000
COLUMNS = tuple(column.name for column in TABLE.columns if column.name != "id")
log = logging.getLogger(__name__)


class RequestLog:
    """The rows of one database waiting to be written, and the thread that writes them."""

    def __init__(self, engine: Engine, days: int) -> None:
        self.engine = engine
        self.days = days
        self._waiting: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._writer: threading.Thread | None = None
        self._pruned = 0.0
        self._dropped = 0

    def add(self, row: dict[str, Any]) -> None:
        """Queue `row` (RequestLogRow's columns, `at` an ISO 8601 string) to be written soon."""
        with self._lock:
            if len(self._waiting) >= MOST_WAITING:
                self._dropped += 1
                return
            self._waiting.append(row)
            if self._writer is None:
                self._writer = threading.Thread(target=self._run, daemon=True, name="request-log")
                self._writer.start()

    def flush(self) -> int:
        """Write every row waiting now, in one transaction (or into the spool); how many."""
        with self._lock:
            rows, self._waiting = self._waiting, []
            dropped, self._dropped = self._dropped, 0
        if dropped:
            log.warning("the request log fell behind: %d rows were not kept", dropped)
        if rows:
            spool.commit(self.engine, [spool.Write("request_log", {"rows": rows})])
        return len(rows)

    def prune(self, now: datetime) -> int:
        """Delete the rows older than `days` before `now`; how many. The database being
        away is only logged: the next prune catches up."""
        try:
            with self.engine.begin() as connection:
                result = connection.execute(
                    delete(TABLE).where(TABLE.c.at < now - timedelta(days=self.days))
                )
        except SQLAlchemyError as error:
            log.warning("the request log's old rows stay for now: %s", type(error).__name__)
            return 0
        return int(result.rowcount or 0)

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)  # cooperative under gevent
            try:
                self.flush()
                if time.monotonic() - self._pruned > PRUNE_SECONDS:
                    self._pruned = time.monotonic()
                    self.prune(datetime.now(UTC))
            except Exception:  # a background thread has no one else to tell
                log.exception("writing the request log failed")


def write_rows(connection: Connection, payload: dict[str, Any]) -> None:
    """The spool's writer of request log rows: `{"rows": [row, ...]}`, inserted at once."""
    rows = [
        {name: row.get(name) for name in COLUMNS} | {"at": _moment(row["at"])}
        for row in payload["rows"]
    ]
    connection.execute(TABLE.insert(), rows)


def _moment(value: str) -> datetime:
    return as_utc(datetime.fromisoformat(value))


spool.register("request_log", write_rows)

# One per database (engine), made on first use in each process (after gunicorn forks).
_logs: weakref.WeakKeyDictionary[Engine, RequestLog] = weakref.WeakKeyDictionary()
_making = threading.Lock()


def request_log(engine: Engine, days: int) -> RequestLog:
    """The request log of `engine`'s database in this process (written as it exits)."""
    with _making:
        found = _logs.get(engine)
        if found is None:
            found = _logs[engine] = RequestLog(engine, days)
            atexit.register(_flush_at_exit, weakref.ref(found))
    return found


def _flush_at_exit(ref: weakref.ref[RequestLog]) -> None:
    found = ref()
    if found is not None:
        try:
            found.flush()
        except Exception:  # exiting: nothing more to do than say so
            log.exception("the request log's last rows were not written")


@dataclass(frozen=True)
class Filters:
    """What `recent` keeps: a key's name, a model, a status, a time range (UTC)."""

    key: str | None = None
    model: str | None = None
    status: int | None = None
    since: datetime | None = None
    until: datetime | None = None


def recent(
    session: Session | scoped_session[Any], filters: Filters, limit: int, before: int | None = None
) -> Sequence[RequestLogRow]:
    """The rows that match `filters`, newest first (by when the request started), up to
    `limit`; with `before` (a row's id), those that come after that row.

    Rows are written when their requests end, so a row's id does not follow the
    requests' order: a short request ends, and is written, before a long one
    that started first.
    """
    newest = (RequestLogRow.at.desc(), RequestLogRow.id.desc())
    query = select(RequestLogRow).order_by(*newest).limit(limit)
    if filters.key is not None:
        query = query.where(RequestLogRow.key_name == filters.key)
    if filters.model is not None:
        query = query.where(RequestLogRow.model == filters.model)
    if filters.status is not None:
        query = query.where(RequestLogRow.status == filters.status)
    if filters.since is not None:
        query = query.where(RequestLogRow.at >= filters.since)
    if filters.until is not None:
        query = query.where(RequestLogRow.at < filters.until)
    if before is not None:
        then = session.scalar(select(RequestLogRow.at).where(RequestLogRow.id == before))
        if then is None:  # gone (pruned): only the ids tell what came before it
            query = query.where(RequestLogRow.id < before)
        else:
            query = query.where(
                or_(
                    RequestLogRow.at < then,
                    and_(RequestLogRow.at == then, RequestLogRow.id < before),
                )
            )
    return session.scalars(query).all()


def row_object(row: RequestLogRow) -> dict[str, Any]:
    """A row as the console's API shows it: `{"object": "request", "id", "at", "request_id",
    "key", "route", "model", "upstream", "status", "outcome", "prompt_tokens",
    "completion_tokens", "reasoning_tokens", "cost", "ttft_ms", "total_ms"}`."""
    return {
        "object": "request",
        "id": row.id,
        "at": as_utc(row.at).isoformat().replace("+00:00", "Z"),
        "request_id": row.request_id,
        "key": row.key_name,
        "route": row.route,
        "model": row.model,
        "upstream": row.upstream,
        "status": row.status,
        "outcome": row.outcome,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "reasoning_tokens": row.reasoning_tokens,
        "cost": row.cost,
        "ttft_ms": row.ttft_ms,
        "total_ms": row.total_ms,
    }
