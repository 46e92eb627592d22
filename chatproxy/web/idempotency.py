"""`Idempotency-Key` on `/callChatGPT` and `/v1`: a retried request gets the first one's answer.

Stripe's convention (https://docs.stripe.com/api/idempotent_requests): a
client that may send a request twice (a retry after a timeout; nginx asking
another instance after one died) names it with a key of its own (with the
openai SDK: `extra_headers={"Idempotency-Key": ...}`). The first request
with a key is recorded before the upstream is called; a retry of the same
request gets the answer the first one stored, with `Idempotent-Replayed:
true`, and is neither asked nor charged again.

- The key: 1 to 255 printable ASCII characters (400 `invalid_idempotency_key`
  otherwise), the caller's own (another access key's same value is another
  key), kept for 24 hours.
- The same request: the same method, route and parameters (a SHA-256 of them;
  for `/callChatGPT` the answer's format is not part of it, so a retry may ask
  for text, JSON or SSE). Another request with the key: 422
  `idempotency_key_reused`.
- While the first is answered: 409 `idempotency_key_in_use` with Retry-After.
- A first request that failed before anything was answered gives its key back.
- A `/v1` stream is kept up to REPLAY_BYTES; beyond, a retry gets 409
  `idempotency_replay_unavailable`.

Without the header nothing here touches the database. A replay's request log
line says `outcome=replayed`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from flask import Response, g, jsonify, request

from chatproxy.access.keys import current_caller
from chatproxy.errors import BadRequest
from chatproxy.questions import Question
from chatproxy.state import current_settings
from chatproxy.store import spool
from chatproxy.store.answers import Outcome
from chatproxy.store.database import db
from chatproxy.store.idempotency import HEADER, NO_CLAIM, Claim, Stored, claim, release
from chatproxy.web.requestlog import note
from chatproxy.web.sse import HEADERS, event

REPLAYED = "Idempotent-Replayed"
REPLAY_BYTES = 1024 * 1024  # of a /v1 stream kept for a retry; beyond, none is kept
SSE = "text/event-stream"
KEY = re.compile(r"[\x20-\x7e]{1,255}")
# `/callChatGPT` parameters that say how to answer, or who asks, not what.
NOT_ASKED = frozenset({"stream", "format", "key"})
# The fields of `/callChatGPT`'s JSON answer, and (but the texts) of its `done` event.
ANSWER_FIELDS = (
    "answer",
    "reasoning",
    "model",
    "usage",
    "finish_reason",
    "cost",
    "conversation_id",
    "message_id",
    "stored",
)


def idempotency_key() -> str | None:
    """The request's `Idempotency-Key`, checked; None without one.

    Raises BadRequest (400, param `Idempotency-Key`, `invalid_idempotency_key`)
    unless it is 1 to 255 printable ASCII characters.
    """
    value = request.headers.get(HEADER)
    if value is None:
        return None
    if not KEY.fullmatch(value):
        raise BadRequest(
            "'Idempotency-Key' must be 1 to 255 printable ASCII characters, "
            "e.g. a UUID made for the request.",
            param=HEADER,
            code="invalid_idempotency_key",
        )
    return value


def claim_request(params: Mapping[str, Any]) -> Claim | Stored:
    """Claim the request's key for the current request with `params`, or find its answer.

    NO_CLAIM without an `Idempotency-Key`. The key is the caller's
    (`current_caller().name`); the request is the method, route and `params`.
    Raises BadRequest (400) for a malformed key, and the errors of
    `chatproxy.store.idempotency.claim`: 409 while the first request is
    answered or when its answer was not kept, 422 for a key used for another
    request.
    """
    key = idempotency_key()
    if key is None:
        return NO_CLAIM
    route = request.path
    return claim(
        db.engine,
        current_caller().name,
        key,
        route,
        fingerprint(request.method, route, params),
        lease=current_settings().reservation_seconds,
    )


def fingerprint(method: str, route: str, params: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of a request: its method, route and parameters, in a canonical JSON."""
    canonical = json.dumps(
        [method, route, params],
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def asked(values: Mapping[str, Any], conversation_id: str | None) -> dict[str, Any]:
    """What a `/callChatGPT` request asks: its parameters but the format, the stream flag and
    the access key, with the conversation it names (by parameter or header)."""
    params = {name: value for name, value in values.items() if name not in NOT_ASKED}
    params["conversation_id"] = conversation_id
    return params


@contextmanager
def released_on_error(claimed: Claim) -> Iterator[None]:
    """Give `claimed`'s key back if the block raises: nothing was answered, a retry may ask.

    A streamed answer's end keeps or gives back its key itself (`Recording`,
    `/callChatGPT`'s `on_end`).
    """
    try:
        yield
    except Exception:
        release(db.engine, claimed)
        raise


def kept_answer(outcome: Outcome, cost: float | None) -> dict[str, Any]:
    """What `/callChatGPT` keeps of an answer for a retry: its JSON fields (`conversation_id`,
    `message_id` and `stored` are added as it is stored), and the error a stream ended with."""
    usage = outcome.usage
    return {
        "answer": outcome.content,
        "reasoning": outcome.reasoning or None,
        "model": outcome.model,
        "usage": dict(usage) if usage is not None else None,
        "finish_reason": outcome.finish_reason,
        "cost": cost,
        "error": outcome.error.body() if outcome.error is not None else None,
    }


def replay_answer(stored: Stored, question: Question) -> Response:
    """`/callChatGPT`'s kept answer, in the format `question` asks for now: text, JSON or SSE.

    SSE: one `event: reasoning` with the whole reasoning (if any) and one
    `event: delta` with the whole text, then `event: done` (or the `event:
    error` the first stream ended with). `X-Conversation-Id` names its
    conversation. Answers kept before reasoning was have none.
    """
    answer = json.loads(stored.body)
    answer.setdefault("reasoning", None)
    g.conversation_id = answer["conversation_id"]
    note(model=answer["model"], outcome="replayed")
    if question.stream:
        events = []
        if answer["reasoning"]:
            events.append(event("reasoning", {"content": answer["reasoning"]}))
        if answer["answer"]:
            events.append(event("delta", {"content": answer["answer"]}))
        if answer.get("error"):
            events.append(event("error", answer["error"]))
        else:
            texts = ("answer", "reasoning")
            done = {name: answer[name] for name in ANSWER_FIELDS if name not in texts}
            events.append(event("done", done))
        response = Response(b"".join(events), mimetype=SSE, headers=HEADERS)
    elif question.format == "json":
        response = jsonify({name: answer[name] for name in ANSWER_FIELDS})
    else:
        response = Response(answer["answer"], mimetype="text/plain")
    response.headers[REPLAYED] = "true"
    return response


def replay_passthrough(stored: Stored) -> Response:
    """A `/v1` answer as the upstream first sent it: its JSON body, or its stream's events."""
    note(outcome="replayed")
    if stored.content_type == SSE:
        response = Response(stored.body, mimetype=SSE, headers=HEADERS)
    else:
        response = Response(stored.body, content_type=stored.content_type)
    response.headers[REPLAYED] = "true"
    return response


class Recording:
    """The bytes of a `/v1` stream as they are passed on, kept for a retry up to `limit`."""

    def __init__(self, limit: int = REPLAY_BYTES) -> None:
        self.limit = limit
        self.pieces: list[bytes] = []
        self.size = 0

    def __call__(self, piece: bytes) -> None:
        """Add a piece passed on (keep-alive comments are not: they are no part of the answer)."""
        self.size += len(piece)
        if self.size <= self.limit:
            self.pieces.append(piece)
        elif self.pieces:
            self.pieces = []  # too large to keep: none of it is

    def writes(self, claimed: Claim) -> list[spool.Write]:
        """How the stream's end ends `claimed`: kept, kept as too large, or given back when
        nothing was passed on."""
        if not self.size:
            return claimed.release()
        body = b"".join(self.pieces) if self.size <= self.limit else None
        return claimed.keep(body, SSE)
