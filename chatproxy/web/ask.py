"""`/callChatGPT`: ask one question, get the answer as text, JSON or an SSE stream."""

from __future__ import annotations

from functools import partial
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from sqlalchemy.exc import SQLAlchemyError

from chatproxy.access.keys import current_owner, current_policy
from chatproxy.access.ledger import usage_recorder
from chatproxy.errors import APIError, BadRequest, StoreUnavailable
from chatproxy.questions import Question, parse_question
from chatproxy.state import current_prices, current_settings
from chatproxy.store.answers import Outcome, checkpoint, fail_turn, finish_turn
from chatproxy.store.branches import parse_message_id
from chatproxy.store.conversations import (
    Turn,
    defaults_from,
    find_conversation,
    parse_conversation_id,
    start_turn,
)
from chatproxy.store.database import db, release_session
from chatproxy.store.idempotency import NO_CLAIM, Claim, Stored
from chatproxy.store.personas import all_personas
from chatproxy.tokens import (
    answer_cost,
    count_messages,
    count_text,
    counted_usage,
    token_bound,
)
from chatproxy.upstream.client import current_upstream
from chatproxy.web.idempotency import (
    asked,
    claim_request,
    kept_answer,
    released_on_error,
    replay_answer,
)
from chatproxy.web.passthrough import read_body
from chatproxy.web.requestlog import note
from chatproxy.web.sse import Checkpoint, Said, stream_response

bp = Blueprint("ask", __name__)


@bp.route("/callChatGPT", methods=["GET", "POST"])
def call_chatgpt() -> Response:
    """Answer one question (docs/api.md, "Asking questions").

    Parameters (query string, form or JSON body): `input` (required), `model`,
    `persona` (an id from `/api/personas`), `system`, `temperature`, `top_p`,
    `max_tokens`, `presence_penalty`, `frequency_penalty`, `stop`,
    `reasoning_effort` (for models that take it), `stream`, `format`,
    `conversation_id` (also as the `X-Conversation-Id` header: go on with that
    conversation's current branch, its persona and model unless others are
    named), `edit_of` (with `conversation_id`: the id of an earlier question
    this one is a new version of; it is stored beside it, the old one and
    what followed it kept, and becomes the current branch).
    Attachments: multipart parts `image` and `file` (repeatable, with
    `detail` for the images), or in JSON `images` (data URLs, `https` URLs,
    or `{"url", "detail"}`) and `files` (`{"name", "content_base64"}`);
    see `chatproxy.attachments`. The body may be up to CHATPROXY_MAX_UPLOAD_BYTES.
    The question is stored before the upstream is called, with a new
    conversation when none is named; `X-Conversation-Id` in the response names
    it.
    Answers `text/plain` (the answer only) by default; JSON
    `{"answer", "reasoning", "model", "usage", "finish_reason", "cost",
    "conversation_id", "message_id"}` (`reasoning` the model's, or null; `cost`
    in USD, null for a model without a price; `dropped_images`, only when
    earlier questions' images were left out to fit the window) with
    `Accept: application/json` or `format=json`; SSE events (see
    `chatproxy.web.sse`) with `stream=1` or `Accept: text/event-stream`.
    With an `Idempotency-Key` header, a retry of an answered request gets
    the stored answer in the format it asks for, with `Idempotent-Replayed:
    true`, and asks nothing (`chatproxy.web.idempotency`).
    Errors: 400 (`context_length_exceeded` when the question does not fit the
    model's window, `invalid_idempotency_key`, `unsupported_parameter` for
    `reasoning_effort` to a model that does not take it), 403, 404
    (`conversation_not_found`, `message_not_found` for an `edit_of` not in
    the conversation; 400 `not_a_question` when it names an answer), 409
    (`idempotency_key_in_use`, with Retry-After, while the first request
    with the key is answered), 413, 422 (`idempotency_key_reused`), 429,
    502, 503, 504 in OpenAI's error shape.
    """
    settings = current_policy()
    personas = all_personas()
    values = request_values()
    conversation_id = parse_conversation_id(
        values.get("conversation_id") or request.headers.get("X-Conversation-Id")
    )
    edit_of = values.get("edit_of")
    edit_of = parse_message_id(edit_of, "edit_of") if edit_of not in (None, "") else None
    if edit_of is not None and conversation_id is None:
        raise BadRequest(
            "'edit_of' needs the 'conversation_id' of the question it edits.",
            param="edit_of",
            code="invalid_message_id",
        )
    owner = current_owner()
    conversation = None
    if conversation_id:
        conversation = find_conversation(db.session, conversation_id, owner)
        # Loaded now, so that the session's connection goes back before start_turn takes
        # one: a request holding two of a pool of DATABASE_POOL_SIZE could wait forever.
        conversation.messages  # noqa: B018
        release_session()
    question = parse_question(
        {**defaults_from(conversation, settings, personas), **values},
        settings,
        wants=wanted_format(),
        personas=personas,
        uploads={name: request.files.getlist(name) for name in ("image", "file")},
    )
    fingerprinted = asked(values, conversation_id)
    # Attachments by their bytes' digests, however they came (a multipart part is in no
    # `values`; a data URL need not be hashed twice).
    fingerprinted.pop("images", None)
    fingerprinted.pop("files", None)
    if question.attachments:
        fingerprinted["attachments"] = [a.fingerprint() for a in question.attachments]
    claimed = claim_request(fingerprinted)
    if isinstance(claimed, Stored):
        return replay_answer(claimed, question)
    with released_on_error(claimed):
        turn = start_turn(db.engine, question, settings, conversation, owner, edit_of)
        return answer_turn(turn, question, claimed)


def answer_turn(turn: Turn, question: Question, claimed: Claim = NO_CLAIM) -> Response:
    """Call the upstream for a stored question and answer in the format `question` asked for.

    The request's worst case is reserved against the key's quotas first (429,
    the question marked `error`, when they are reached). A streamed answer is
    saved every CHATPROXY_CHECKPOINT_SECONDS while it arrives, and stored as it
    ends (see `chatproxy.store.answers`), with `stored: false` in the `done`
    event or JSON when it waits in the spool for the database; an upstream
    failure before the answer starts marks the question `error` and raises
    its APIError; the database going away before the upstream is called marks
    it `error` too (once the database is back) and answers 503
    `store_unavailable`. Every response, errors included, carries the
    conversation's id in `X-Conversation-Id`. The answer is kept for
    `claimed`'s key in the transaction that stores it; a stream that ends with
    nothing answered gives the key back.
    """
    g.conversation_id = turn.conversation_id
    # No connection is held while the upstream answers (that may take minutes);
    # the answer is stored on a connection of its own.
    release_session()
    upstream = current_upstream()
    engine = db.engine
    record_usage = usage_recorder()
    # Recorded under the name asked for; priced by the upstream's (an alias's, when reported).
    priced = current_settings().upstream_model(question.model)
    cost_of = partial(answer_cost, asked_model=priced, prices=current_prices())
    logged = note(model=question.model)
    messages = turn.params["messages"]
    cap = turn.params.get("max_completion_tokens") or turn.params.get("max_tokens")
    try:
        # An upper bound, without tiktoken: counting exactly would load its encodings
        # (tens of MB a worker) for every key with a quota, to hold a worst case anyway.
        record_usage.reserve(
            priced, lambda: token_bound(messages, quick=True, model=priced), int(cap or 0)
        )
    except APIError as error:  # a quota reached, counting the answers in flight
        logged["outcome"] = error.code
        fail_turn(engine, turn, error)
        raise
    except SQLAlchemyError:
        # The database went away after the question was stored: it is marked `error`
        # (from the spool once the database is back), and the client gets the 503 of
        # `register_store_errors`.
        logged["outcome"] = "store_unavailable"
        fail_turn(engine, turn, StoreUnavailable("The conversation store was unavailable."))
        raise
    try:
        if question.stream:
            stream = upstream.open_chat_stream(turn.params)
        else:
            answer = upstream.complete_chat(turn.params)
    except APIError as error:
        logged["outcome"] = error.code
        fail_turn(engine, turn, error, [record_usage.charge(question.model, None, None)])
        raise

    def charge(usage: dict[str, Any] | None, content: str) -> tuple[dict[str, Any], bool]:
        """The usage to charge: the upstream's, else counted (cut short, or none reported);
        `content` is all the model wrote, its reasoning included."""
        if usage is not None:
            return usage, False
        model = question.model
        return counted_usage(count_messages(messages, model), count_text(content, model)), True

    if question.stream:

        def on_end(said: Said, error: APIError | None, closed: bool) -> dict[str, Any]:
            outcome = Outcome(
                said.content,
                stream.model,
                stream.finish_reason,
                stream.usage,
                error,
                closed,
                said.reasoning,
                said.reasoning_seconds,
            )
            usage, counted = charge(stream.usage, said.reasoning + said.content)
            spent = cost_of(usage, stream.model)
            ledger = record_usage.charge(question.model, usage, spent, counted)
            if said.content or said.reasoning or (error is None and not closed):
                answer = kept_answer(outcome, cost_of(stream.usage, stream.model))
                idempotency = claimed.keep_answer(answer, turn.conversation_id, turn.question_id)
            else:  # nothing was answered: a retry may ask again
                idempotency = claimed.release()
            kept = finish_turn(engine, turn, outcome, [ledger, *idempotency])
            record_usage.count_tokens(usage)
            logged.update(
                usage=usage,
                outcome=_outcome(error, closed),
                cost=spent,
                first_piece_at=stream.first_piece_at,
            )
            return {
                "conversation_id": turn.conversation_id,
                "message_id": kept.answer_id,
                "stored": kept.stored,
                **_dropped(turn),
            }

        settings = current_settings()
        return stream_response(
            stream,
            settings.keepalive_interval,
            cost_of,
            on_end,
            checkpoint=Checkpoint(partial(checkpoint, engine, turn), settings.checkpoint_seconds),
        )
    reasoning = answer.reasoning or ""
    outcome = Outcome(
        answer.content, answer.model, answer.finish_reason, answer.usage, reasoning=reasoning
    )
    usage, counted = charge(answer.usage, reasoning + answer.content)
    spent = cost_of(usage, answer.model)
    ledger = record_usage.charge(question.model, usage, spent, counted)
    kept_for_retry = kept_answer(outcome, cost_of(answer.usage, answer.model))
    idempotency = claimed.keep_answer(kept_for_retry, turn.conversation_id, turn.question_id)
    kept = finish_turn(engine, turn, outcome, [ledger, *idempotency])
    record_usage.count_tokens(usage)
    logged.update(usage=usage, outcome="ok", cost=spent)
    if question.format == "json":
        return jsonify(
            answer=answer.content,
            reasoning=answer.reasoning,
            model=answer.model,
            usage=answer.usage,
            finish_reason=answer.finish_reason,
            cost=cost_of(answer.usage, answer.model),
            conversation_id=turn.conversation_id,
            message_id=kept.answer_id,
            stored=kept.stored,
            **_dropped(turn),
        )
    return Response(answer.content, mimetype="text/plain")


def _dropped(turn: Turn) -> dict[str, int]:
    """`{"dropped_images": n}` when the history's images were left out to fit the window."""
    return {"dropped_images": turn.dropped_images} if turn.dropped_images else {}


def _outcome(error: APIError | None, closed: bool) -> str:
    """How a streamed answer ended, for the request log."""
    if error is not None:
        return error.code or "error"
    return "client_gone" if closed else "ok"


@bp.after_app_request
def add_conversation_id(response: Response) -> Response:
    """Tell the client which conversation its question went to (`X-Conversation-Id`)."""
    conversation_id = g.get("conversation_id")
    if conversation_id:
        response.headers["X-Conversation-Id"] = conversation_id
    return response


def request_values() -> dict[str, Any]:
    """The request's parameters: the query string, overlaid by a form or a JSON object body."""
    values: dict[str, Any] = {}
    for name, items in request.args.lists():
        values[name] = items if name == "stop" and len(items) > 1 else items[0]
    if request.method != "POST":
        return values
    if request.is_json:
        values.update(read_body(request.get_data()))
    else:
        for name, items in request.form.lists():
            values[name] = items if name == "stop" and len(items) > 1 else items[0]
    return values


def wanted_format() -> str:
    """The answer format the `Accept` header prefers: `sse`, `json` or `text`."""
    accept = request.accept_mimetypes
    if accept["text/event-stream"] > max(accept["text/plain"], accept["application/json"]):
        return "sse"
    if accept["application/json"] > accept["text/plain"]:
        return "json"
    return "text"
