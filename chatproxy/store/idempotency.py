"""Idempotency keys: a request recorded before it is answered, its answer kept for a retry.

A request sent with an `Idempotency-Key` claims its caller's key before the
upstream is called (`claim`, a row `in_progress`). When it is answered, the
answer is kept in the same transaction as the answer and its charge
(`Claim.keep`, `Claim.keep_answer`: spool writes, so a database away delays
them, never drops them); when it fails before anything was answered, the key is
given back (`Claim.release`) and a retry asks again. A retry of the same
request then gets the kept answer (`Stored`) instead of asking again.

A row counts for TTL (a day) from its first request; older ones are taken as
absent and deleted now and then. A claim whose worker died (`in_progress`, not
answered within the lease, CHATPROXY_RESERVATION_SECONDS) may be taken over.
"""

from __future__ import annotations

import base64
import functools
import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, delete, func, or_, select

from chatproxy.errors import Conflict, Unprocessable
from chatproxy.store import spool
from chatproxy.store.database import upserting_insert
from chatproxy.store.models import IdempotencyKey, Message, as_utc, utcnow

HEADER = "Idempotency-Key"  # the request header that names a key
KEYS = IdempotencyKey.__table__
MESSAGES = Message.__table__
TTL = timedelta(hours=24)  # as Stripe keeps its keys
JSON = "application/json"
RETRY_IN_USE = 2  # seconds a retry is asked to wait while the first request is answered
CLEANUP_EVERY = 600.0  # seconds between two deletions of expired rows, per process
_CLAIMS = 3  # tries at a claim while other requests take over a stale row at the same time
_cleaned_at = -CLEANUP_EVERY
_cleaning = threading.Lock()
_FIND = select(KEYS).where(KEYS.c.owner == bindparam("owner"), KEYS.c.key == bindparam("key"))
_ANSWERED = select(KEYS.c.id).where(
    KEYS.c.owner == bindparam("owner"),
    KEYS.c.key == bindparam("key"),
    KEYS.c.status == "done",
    KEYS.c.created_at > bindparam("expired"),
)
_UNFINISHED = and_(KEYS.c.id == bindparam("claim"), KEYS.c.status == "in_progress")


@dataclass(frozen=True)
class Claim:
    """A key claimed for the current request (`id`, its row), or no key at all (`id` None).

    Its methods give the spool writes that end the claim, to go in the
    transaction that stores the answer and its charge; none without a key.
    """

    id: int | None = None

    def release(self) -> list[spool.Write]:
        """Give the key back: nothing was answered, a retry may ask again."""
        return [] if self.id is None else [spool.Write("idempotency_release", {"id": self.id})]

    def keep(self, body: bytes | None, content_type: str) -> list[spool.Write]:
        """Keep `body` (of `content_type`) for a retry; None when it was too large to keep."""
        if self.id is None:
            return []
        kept = None if body is None else base64.b64encode(body).decode("ascii")
        payload = {"id": self.id, "body": kept, "content_type": content_type, "at": _now()}
        return [spool.Write("idempotency_keep", payload)]

    def keep_answer(
        self, answer: dict[str, Any], conversation_id: str, question_id: int
    ) -> list[spool.Write]:
        """Keep `/callChatGPT`'s `answer` (its JSON fields) for a retry.

        Goes after the answer's own write: `message_id` is then found as the
        first answer after `question_id` in `conversation_id`, and `stored`
        is true; `conversation_id` is added too.
        """
        if self.id is None:
            return []
        payload = {
            "id": self.id,
            "answer": answer,
            "conversation_id": conversation_id,
            "question_id": question_id,
            "at": _now(),
        }
        return [spool.Write("idempotency_keep_answer", payload)]


NO_CLAIM = Claim()


@dataclass(frozen=True)
class Stored:
    """What the first request with a key answered: `body`, of `content_type`."""

    body: bytes
    content_type: str


def claim(
    engine: Engine,
    owner: str,
    key: str,
    route: str,
    fingerprint: str,
    lease: float,
    now: datetime | None = None,
) -> Claim | Stored:
    """Claim `owner`'s `key` for a request to `route` with `fingerprint`, or find its answer.

    Returns the Claim of a key not used within TTL (or whose claim was left
    `in_progress` for `lease` seconds by a worker that died), else the Stored
    answer of the same request. Raises Unprocessable (422)
    `idempotency_key_reused` when the key was used for another request,
    Conflict (409) `idempotency_key_in_use` (Retry-After) while the first
    request is answered, Conflict `idempotency_replay_unavailable` when its
    answer was too large to keep.
    """
    now = now or utcnow()
    expired, stale = now - TTL, now - timedelta(seconds=lease)
    _delete_expired_now_and_then(engine, expired)
    values = {
        "owner": owner,
        "key": key,
        "route": route,
        "fingerprint": fingerprint,
        "status": "in_progress",
        "created_at": now,
        "updated_at": now,
    }
    for _ in range(_CLAIMS):
        with engine.begin() as connection:
            made = connection.execute(_insert_new(connection.dialect.name), values).first()
            if made is not None:
                return Claim(int(made.id))
            row = connection.execute(_FIND, {"owner": owner, "key": key}).first()
            if row is None:
                continue  # deleted since the insert found it: try again
            if as_utc(row.created_at) <= expired or (
                row.status == "in_progress" and as_utc(row.updated_at) <= stale
            ):
                # Forgotten (a day old), or left by a worker that died: a new request may
                # have it. Deleted only if still so (not if claimed anew meanwhile); of two
                # requests taking it at once, the insert lets one win.
                connection.execute(
                    delete(KEYS).where(
                        KEYS.c.id == row.id,
                        or_(
                            KEYS.c.created_at <= expired,
                            and_(KEYS.c.status == "in_progress", KEYS.c.updated_at <= stale),
                        ),
                    )
                )
                continue
        return _found(row, route, fingerprint)
    raise _in_use()


def has_answer(engine: Engine, owner: str, key: str, now: datetime | None = None) -> bool:
    """True when `owner`'s `key` holds an answer kept for a retry (and not a day old)."""
    with engine.connect() as connection:
        found = connection.execute(
            _ANSWERED, {"owner": owner, "key": key, "expired": (now or utcnow()) - TTL}
        ).first()
    return found is not None


def release(engine: Engine, claimed: Claim) -> None:
    """Give `claimed`'s key back at once (the request failed before anything was answered)."""
    if claimed.id is not None:
        spool.commit(engine, claimed.release())


def delete_expired(engine: Engine, expired: datetime) -> int:
    """Delete the rows made before `expired`; returns how many."""
    with engine.begin() as connection:
        result = connection.execute(delete(KEYS).where(KEYS.c.created_at <= expired))
    return int(result.rowcount or 0)


def _found(row: Any, route: str, fingerprint: str) -> Stored:
    """The answer of a row claimed by another request; raises while there is none to give."""
    if row.fingerprint != fingerprint:
        # 422 (as Stripe and Adyen answer it) rather than 400: the request is well formed,
        # and would be fine with another key; it is the key's earlier use that refuses it.
        used_for = "another route" if row.route != route else "other parameters"
        raise Unprocessable(
            f"This Idempotency-Key was used for a request to {used_for}; "
            "send a new key for a new request.",
            param="Idempotency-Key",
            code="idempotency_key_reused",
        )
    if row.status == "in_progress":
        raise _in_use()
    if row.status == "too_large" or row.response is None:
        raise Conflict(
            "The request with this Idempotency-Key was answered, but its answer was too large "
            "to keep for a retry; send a new key to ask again.",
            param="Idempotency-Key",
            code="idempotency_replay_unavailable",
        )
    return Stored(bytes(row.response), row.content_type or JSON)


def _in_use() -> Conflict:
    return Conflict(
        "A request with this Idempotency-Key is still being answered; try again shortly "
        "for its answer.",
        param="Idempotency-Key",
        code="idempotency_key_in_use",
        retry_after=RETRY_IN_USE,
    )


@functools.cache
def _insert_new(dialect: str) -> Any:
    """`INSERT ... ON CONFLICT DO NOTHING RETURNING id`, built once per dialect."""
    insert = upserting_insert(dialect)
    return insert(KEYS).on_conflict_do_nothing(index_elements=["owner", "key"]).returning(KEYS.c.id)


def _delete_expired_now_and_then(engine: Engine, expired: datetime) -> None:
    """Delete expired rows at most every CLEANUP_EVERY seconds per process (they count for
    nothing, but would pile up)."""
    global _cleaned_at
    with _cleaning:
        if time.monotonic() - _cleaned_at < CLEANUP_EVERY:
            return
        _cleaned_at = time.monotonic()
    delete_expired(engine, expired)


def _now() -> str:
    return utcnow().isoformat()


def _finish(connection: Connection, claim_id: int, **values: Any) -> None:
    connection.execute(
        KEYS.update().where(_UNFINISHED),
        {"claim": claim_id, **values},
    )


def _write_keep(connection: Connection, payload: dict[str, Any]) -> None:
    """Keep an answer's bytes for a retry (a payload of `Claim.keep`)."""
    body = payload["body"]
    _finish(
        connection,
        payload["id"],
        status="done" if body is not None else "too_large",
        response=None if body is None else base64.b64decode(body),
        content_type=payload["content_type"],
        updated_at=datetime.fromisoformat(payload["at"]),
    )


def _write_keep_answer(connection: Connection, payload: dict[str, Any]) -> None:
    """Keep `/callChatGPT`'s answer for a retry (a payload of `Claim.keep_answer`)."""
    answer_id = connection.execute(
        select(func.min(MESSAGES.c.id)).where(
            MESSAGES.c.conversation_id == payload["conversation_id"],
            MESSAGES.c.role == "assistant",
            MESSAGES.c.id > payload["question_id"],
        )
    ).scalar()
    answer = {
        **payload["answer"],
        "conversation_id": payload["conversation_id"],
        "message_id": answer_id,
        "stored": True,
    }
    _finish(
        connection,
        payload["id"],
        status="done",
        response=json.dumps(answer, ensure_ascii=False).encode(),
        content_type=JSON,
        updated_at=datetime.fromisoformat(payload["at"]),
    )


def _write_release(connection: Connection, payload: dict[str, Any]) -> None:
    """Give a key back (a payload of `Claim.release`)."""
    connection.execute(delete(KEYS).where(_UNFINISHED), {"claim": payload["id"]})


spool.register("idempotency_keep", _write_keep)
spool.register("idempotency_keep_answer", _write_keep_answer)
spool.register("idempotency_release", _write_release)
