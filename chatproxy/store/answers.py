"""How an answer is kept: saved while it streams, stored as it ends, never lost.

- While an answer streams, what arrived is saved every few seconds
  (`checkpoint`, status `streaming`), so a worker killed mid-answer loses at
  most those seconds; when a worker starts, answers left `streaming` by one
  that died are marked `interrupted` (`sweep_unfinished`).
- When it ends, `finish_turn` stores it (`ok`, or `interrupted` with what
  arrived) or marks its question `error`, in one transaction with its usage in
  the ledger. If the database is away, the transaction waits in the local
  spool (`chatproxy.store.spool`) and is written once the database is back.

Answers are stored on connections of their own (`engine.begin()`), so a
stream's end can be stored from the helper thread that reads it, after the
request is gone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam
from sqlalchemy.exc import SQLAlchemyError

from chatproxy.errors import APIError
from chatproxy.store import group_commit, spool
from chatproxy.store.conversations import Turn, inserted_id
from chatproxy.store.models import Conversation, Message, utcnow

MESSAGES = Message.__table__
CONVERSATIONS = Conversation.__table__
_INSERT = MESSAGES.insert()
_UPDATE = MESSAGES.update().where(MESSAGES.c.id == bindparam("key"))
_SET_CURRENT = CONVERSATIONS.update().where(CONVERSATIONS.c.id == bindparam("key"))
log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """How an answer ended: its text so far and what the upstream reported.

    `error` is the upstream failure, if any; `closed` is True when the client
    went away (Stop, a closed tab). An answer with text (or reasoning) that
    did not finish is stored as `interrupted`. `reasoning` is the model's
    reasoning so far, `reasoning_seconds` how long it streamed before the
    answer started (None when not measured).
    """

    content: str
    model: str | None = None
    finish_reason: str | None = None
    usage: Mapping[str, Any] | None = None
    error: APIError | None = None
    closed: bool = False
    reasoning: str = ""
    reasoning_seconds: float | None = None


@dataclass(frozen=True)
class Kept:
    """Where an answer went: its row (`answer_id`, None when none was stored), and whether it
    is in the database already (`stored`) or waits in the spool."""

    answer_id: int | None
    stored: bool


def checkpoint(engine: Engine, turn: Turn, content: str, reasoning: str = "") -> None:
    """Save the text of `turn`'s answer and reasoning so far (status `streaming`); failures are
    only logged.

    The first save makes the answer's row (`turn.answer_id`), later ones update it.
    """
    now = utcnow()
    try:
        with engine.begin() as connection:
            if turn.answer_id is None:
                row = connection.execute(
                    _INSERT,
                    {
                        "conversation_id": turn.conversation_id,
                        "parent_id": turn.question_id,
                        "role": "assistant",
                        "content": content,
                        "reasoning": reasoning or None,
                        "model": turn.model,
                        "status": "streaming",
                        "created_at": now,
                        "updated_at": now,
                    },
                )
                turn.answer_id = inserted_id(row)
            else:  # `prefix`: the text a continued answer had (Continue)
                values = {
                    "key": turn.answer_id,
                    "content": turn.prefix + content,
                    "status": "streaming",
                    "updated_at": now,
                }
                if reasoning or not turn.prefix:  # a continued answer keeps its reasoning
                    values["reasoning"] = reasoning or None
                connection.execute(_UPDATE, values)
    except SQLAlchemyError as error:
        # The answer is still stored when it ends, or spooled then.
        log.info("could not save the answer so far: %s", type(error).__name__)


def sweep_unfinished(engine: Engine, older_than: datetime) -> int:
    """Mark answers still `streaming` but not saved since `older_than` as `interrupted`.

    Those were left by a worker that died (a live stream saves more often);
    returns how many.
    """
    with engine.begin() as connection:
        result = connection.execute(
            MESSAGES.update()
            .where(MESSAGES.c.status == "streaming", MESSAGES.c.updated_at < older_than)
            .values(status="interrupted", error_code="worker_lost")
        )
    return int(result.rowcount or 0)


def finish_turn(
    engine: Engine, turn: Turn, outcome: Outcome, also: Sequence[spool.Write] = ()
) -> Kept:
    """Store how `turn` ended, with `also` (the ledger's charge, the answer kept for an
    Idempotency-Key) after it in the same transaction (which answers that end at the
    same moment share: `chatproxy.store.group_commit`).

    An answer with text is stored (`ok`, or `interrupted` when it did not
    finish) under its question; a regenerated one beside the answers it had
    (`turn.beside`), and it becomes the conversation's current branch. Without
    text, the question is marked `error` with the upstream's error (unless it
    has an answer already, which stays as it was). A continued answer
    (`turn.prefix`) is stored whole, the text it had and what was added, with
    the usage of both requests; one to which nothing was added stays as it
    was. A database that is away delays the write (the spool), never drops it.
    """
    error = outcome.error
    usage = dict(outcome.usage) if isinstance(outcome.usage, Mapping) else None
    if turn.prefix:
        usage = _added(turn.prior_usage, usage)
    answer = {
        "conversation_id": turn.conversation_id,
        "question_id": turn.question_id,
        "asked_model": turn.model,
        "again": turn.again,
        "beside": turn.beside,
        "answer_id": turn.answer_id,
        "content": outcome.content,
        "reasoning": outcome.reasoning,
        "reasoning_seconds": outcome.reasoning_seconds,
        "prefix": turn.prefix,
        "model": outcome.model,
        "finish_reason": outcome.finish_reason,
        "usage": usage,
        "error": {"code": error.code, "message": error.message} if error else None,
        "closed": outcome.closed,
        "at": utcnow().isoformat(),
    }
    writes = [spool.Write("answer", answer), *also]
    results = group_commit.commit(engine, writes)
    if results is None:
        return Kept(turn.answer_id, stored=False)
    return Kept(results[0], stored=True)


def fail_turn(
    engine: Engine, turn: Turn, error: APIError, also: Sequence[spool.Write] = ()
) -> Kept:
    """Mark `turn`'s question `error` (the upstream failed before answering); see finish_turn."""
    return finish_turn(engine, turn, Outcome(content="", error=error), also)


def _write_answer(connection: Connection, answer: dict[str, Any]) -> int | None:
    """Store an ended answer (a payload of `finish_turn`); returns its row's id, or None."""
    now = datetime.fromisoformat(answer["at"])
    error = answer["error"]
    finished = error is None and not answer["closed"]
    # Payloads spooled before reasoning was kept, or before Continue, have neither.
    reasoning = (answer.get("reasoning") or "").strip() or None
    prefix = answer.get("prefix", "")
    if prefix and not answer["content"]:
        return answer["answer_id"]  # nothing was added: the answer stays as it was
    # Spooled before branches, a regenerate named the answers it was to replace: they stay now.
    beside = answer.get("beside", answer.get("replaces", []))
    if not answer["content"] and not reasoning and not finished:
        if answer["closed"] and error is None:
            return None  # the client left before any answer: the question waits for Retry
        if not beside:
            connection.execute(
                _UPDATE,
                {
                    "key": answer["question_id"],
                    "status": "error",
                    "error_code": error["code"] if error else None,
                    "error_message": error["message"] if error else None,
                },
            )
        return None
    if answer["again"]:
        connection.execute(
            _UPDATE,
            {
                "key": answer["question_id"],
                "status": "ok",
                "error_code": None,
                "error_message": None,
            },
        )
    usage = answer["usage"] or {}
    details = usage.get("completion_tokens_details")
    details = details if isinstance(details, dict) else {}
    values = {
        "content": prefix + answer["content"],
        "model": answer["model"] or answer["asked_model"],
        "prompt_tokens": _count(usage.get("prompt_tokens")),
        "completion_tokens": _count(usage.get("completion_tokens")),
        "finish_reason": answer["finish_reason"],
        "reasoning": reasoning,
        # OpenAI reports 0 for models that do not reason: kept only when there were some.
        "reasoning_tokens": _count(details.get("reasoning_tokens")) or None,
        "reasoning_seconds": _seconds(answer.get("reasoning_seconds")),
        "status": "ok" if finished else "interrupted",
        "error_code": error["code"] if error else None,
        "error_message": error["message"] if error else None,
        "updated_at": now,
    }
    if prefix and reasoning is None:  # a continued answer keeps the reasoning it had
        for name in ("reasoning", "reasoning_tokens", "reasoning_seconds"):
            del values[name]
    answer_id: int | None = None
    if answer["answer_id"] is not None:
        updated = connection.execute(_UPDATE, {"key": answer["answer_id"], **values})
        if updated.rowcount:
            answer_id = int(answer["answer_id"])
    if answer_id is None:
        row = connection.execute(
            _INSERT,
            {
                "conversation_id": answer["conversation_id"],
                "parent_id": answer["question_id"],
                "role": "assistant",
                "created_at": now,
                **values,
            },
        )
        answer_id = inserted_id(row)
    if answer["again"]:
        # The new answer is the one shown, even where an older sibling had been chosen.
        connection.execute(
            _SET_CURRENT, {"key": answer["conversation_id"], "current_message_id": answer_id}
        )
    return answer_id


def _added(before: Mapping[str, int] | None, usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """The usage of an answer written by two requests (Continue): their tokens summed.

    An unknown side (None: not reported) adds nothing.
    """
    if before is None or usage is None:
        return usage if before is None else dict(before)
    return {
        name: (_count(usage.get(name)) or 0) + (before.get(name) or 0)
        for name in ("prompt_tokens", "completion_tokens")
    }


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _seconds(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e7:
        return round(float(value), 3)
    return None


def stale_after(checkpoint_seconds: float) -> timedelta:
    """How long a `streaming` answer may go unsaved before it counts as left by a dead worker."""
    return timedelta(seconds=3 * checkpoint_seconds + 10)


spool.register("answer", _write_answer)
