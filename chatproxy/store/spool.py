"""The spool: writes that must not be lost, kept on local disk while the database is away.

An answer and its usage are written in one transaction (`commit`). When the
database cannot take it, the write is tried again briefly (RETRY_DELAYS), then
appended to an append-only file in the instance folder (`spool-<db>.jsonl`,
one JSON line per transaction, fsynced), and `commit` says so. On SQLite a
database locked by another writer fails a try only after its busy timeout
(SQLITE_BUSY_TIMEOUT, or DATABASE_URL's `?timeout=`), waited out by sleeping
between tries (`chatproxy.store.sqlite`): the worker's other requests go on. The spooled
writes go into the database once it is back: at the next successful write (in
the background) and when gunicorn starts (`replay`).

Each transaction is a list of `Write`s: a kind, which names a writer function
registered by the layer that owns the table (`register`), and a JSON payload.
A replayed transaction also records its id in `spooled_writes`, so one that
was written before a crash is never written twice.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import URL, Connection, Engine, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from chatproxy.store.database import INSTANCE_DIR
from chatproxy.store.models import SpooledWrite

# Seconds between the tries of a write before it is spooled: about 2 s in all.
RETRY_DELAYS = (0.2, 0.5, 1.2)
SPOOLED = SpooledWrite.__table__
log = logging.getLogger(__name__)
Writer = Callable[[Connection, dict[str, Any]], Any]
# Payloads of one kind -> fewer payloads doing the same (see `register`).
Merge = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
_writers: dict[str, Writer] = {}
_merges: dict[str, Merge] = {}
_one_statement: dict[str, Callable[[dict[str, Any]], bool]] = {}
_replaying = threading.Lock()


@dataclass(frozen=True)
class Write:
    """One write that may wait on disk: `kind` names its writer, `payload` is its JSON data."""

    kind: str
    payload: dict[str, Any]


def register(
    kind: str,
    writer: Writer,
    merge: Merge | None = None,
    one_statement: Callable[[dict[str, Any]], bool] | None = None,
) -> None:
    """Make `writer(connection, payload)` the one that carries out writes of `kind`.

    `merge(payloads)`, if given, makes payloads of `kind` that go in one
    transaction into fewer that write the same (`chatproxy.store.group_commit`);
    their writer's results are then not returned. `one_statement(payload)`, if
    given, says when `writer` carries out `payload` in one SQL statement (see
    `_transaction`).
    """
    _writers[kind] = writer
    if merge is not None:
        _merges[kind] = merge
    if one_statement is not None:
        _one_statement[kind] = one_statement


def merges(kind: str) -> bool:
    """True when writes of `kind` may be merged (see `register`)."""
    return kind in _merges


def merge(kind: str, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`payloads` of `kind` merged by the function `register` was given."""
    return _merges[kind](payloads)


def commit(
    engine: Engine,
    writes: Sequence[Write],
    folder: Path = INSTANCE_DIR,
    refused: Literal["drop", "raise"] = "drop",
) -> list[Any] | None:
    """Carry out `writes` in one transaction; returns each writer's result.

    When the database fails, tries again after each of RETRY_DELAYS, then
    appends them to the spool and returns None: they are written once the
    database is back. A transaction that is wrong in itself (its conversation
    was deleted meanwhile: a constraint) is logged and dropped, not spooled;
    its results are then None. With `refused="raise"` its IntegrityError is
    raised instead.
    """
    for delay in (*RETRY_DELAYS, None):
        try:
            with _transaction(engine, writes) as connection:
                results = [_writers[w.kind](connection, w.payload) for w in writes]
        except IntegrityError as error:
            if refused == "raise":
                raise
            log.warning("a write was refused by the database and dropped: %s", _reason(error))
            return [None] * len(writes)
        except SQLAlchemyError as error:
            if delay is None:
                _append(spool_path(engine, folder), writes, error)
                return None
            time.sleep(delay)  # cooperative under gevent
            continue
        if _has_entries(spool_path(engine, folder)):
            _replay_in_background(engine, folder)
        return results
    raise AssertionError("unreachable")


def _transaction(engine: Engine, writes: Sequence[Write]) -> AbstractContextManager[Connection]:
    """A connection that carries out `writes` as one transaction, committed when it closes
    without an error: `engine.begin()`, or on PostgreSQL, for a lone write of one
    statement, a connection in autocommit mode.

    A statement is a transaction by itself: sent without BEGIN and COMMIT it
    takes one round trip instead of three (with the pool's pre-ping gone too,
    a lone charge went from about 1.0 to 0.6 ms: bench/README.md). SQLite's
    BEGIN and COMMIT are no round trips.
    """
    if engine.dialect.name == "postgresql" and len(writes) == 1:
        one_statement = _one_statement.get(writes[0].kind)
        if one_statement is not None and one_statement(writes[0].payload):
            return engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    return engine.begin()


def spool_path(engine: Engine, folder: Path = INSTANCE_DIR) -> Path:
    """The spool file of the database of `engine` (one per database, so none is replayed into
    another)."""
    return folder / _spool_name(engine.url)


@functools.lru_cache(maxsize=16)
def _spool_name(url: URL) -> str:
    # Cached: rendering and hashing the URL cost more than the stat `commit` does with it.
    rendered = url.render_as_string(hide_password=False)
    return f"spool-{hashlib.sha256(rendered.encode()).hexdigest()[:16]}.jsonl"


def replay(engine: Engine, folder: Path = INSTANCE_DIR) -> int:
    """Write what the spool of `engine`'s database holds into it; returns how many transactions.

    Safe to run from several processes at once: each claims the file it
    replays by renaming it, and a transaction already written is skipped.
    Stops at the first database failure, leaving the rest for later.
    """
    path = spool_path(engine, folder)
    with _locked(path):
        if _has_entries(path):
            os.replace(path, _claimed(path))
    written = 0
    for claimed in sorted(path.parent.glob(path.name + ".*.replaying")):
        mine = _claimed(path)
        try:
            if claimed != mine:
                os.replace(claimed, mine)  # another process's leftover, from a crash
        except FileNotFoundError:
            continue  # claimed by another process meanwhile
        lines = mine.read_bytes().splitlines()
        for number, line in enumerate(lines):
            try:
                written += _write_again(engine, json.loads(line))
            except SQLAlchemyError as error:
                log.warning("the spool waits: the database failed again (%s)", _reason(error))
                _put_back(path, lines[number:])
                mine.unlink()
                return written
            except (ValueError, KeyError, TypeError):
                log.error("a spooled write could not be read and is skipped: %r", line[:200])
        mine.unlink()
    if written:
        log.info("%d answers kept in the spool while the database was away are now stored", written)
    return written


def _write_again(engine: Engine, entry: dict[str, Any]) -> int:
    """Carry out one spooled transaction unless it already was; 1 if it was written now."""
    try:
        with engine.begin() as connection:
            if connection.execute(select(SPOOLED.c.id).where(SPOOLED.c.id == entry["id"])).first():
                return 0
            connection.execute(SPOOLED.insert().values(id=entry["id"]))
            for write in entry["writes"]:
                _writers[write["kind"]](connection, write["payload"])
    except IntegrityError:
        return 0  # written by another process at the same moment
    return 1


def _append(path: Path, writes: Sequence[Write], error: Exception) -> None:
    entry = {
        "id": uuid.uuid4().hex,
        "writes": [{"kind": w.kind, "payload": w.payload} for w in writes],
    }
    line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path), path.open("a", encoding="utf-8") as file:
        file.write(line)
        file.flush()
        os.fsync(file.fileno())
    log.warning(
        "the database is unavailable (%s): the answer is kept in %s until it is back",
        _reason(error),
        path.name,
    )


def _put_back(path: Path, lines: list[bytes]) -> None:
    """Return what was not replayed to the spool, before what was added meanwhile."""
    with _locked(path):
        newer = path.read_bytes() if path.exists() else b""
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(b"".join(line + b"\n" for line in lines) + newer)
        os.replace(temporary, path)


def _replay_in_background(engine: Engine, folder: Path) -> None:
    if not _replaying.acquire(blocking=False):
        return  # this process replays already

    def run() -> None:
        try:
            replay(engine, folder)
        except Exception:  # a background thread has no one else to tell
            log.exception("replaying the spool failed")
        finally:
            _replaying.release()

    threading.Thread(target=run, daemon=True, name="spool-replay").start()


def _has_entries(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def _claimed(path: Path) -> Path:
    return path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.replaying")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on the spool of `path`, across processes (held a moment only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _reason(error: Exception) -> str:
    return str(getattr(error, "orig", None) or error).splitlines()[0][:200]
