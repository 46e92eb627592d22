"""`/v1/...`: the OpenAI-compatible API, so any OpenAI client can use chatproxy as its base URL.

Requests are checked against the owner's policy (`chatproxy.web.passthrough`) and
passed to the upstream set in settings; answers come back as the upstream sent
them. The client's `Authorization` header carries an access key of chatproxy
(`chatproxy.access.keys`) and is never sent on: the upstream gets chatproxy's own
key. Every answer's usage goes to the ledger (`chatproxy.access.ledger`). A
request sent with an `Idempotency-Key` is answered once: a retry gets the
first answer's bytes again (`chatproxy.web.idempotency`). The Responses API's
routes (`chatproxy.web.responses`) send their requests through `forward` too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, jsonify, request

from chatproxy.access.keys import current_caller, current_policy
from chatproxy.access.ledger import usage_recorder
from chatproxy.errors import APIError
from chatproxy.state import current_prices, current_settings
from chatproxy.store import spool
from chatproxy.store.database import release_session
from chatproxy.store.idempotency import Claim, Stored
from chatproxy.store.response_owners import owner_write
from chatproxy.tokens import (
    cost,
    count_prompt,
    count_text,
    counted_usage,
    size_bound,
    usage_in_chat_terms,
)
from chatproxy.upstream.client import current_upstream
from chatproxy.upstream.events import answer_text
from chatproxy.upstream.paths import RESPONSES_PATH
from chatproxy.upstream.response_stream import ResponsesStream, response_text
from chatproxy.web.idempotency import (
    Recording,
    claim_request,
    released_on_error,
    replay_passthrough,
)
from chatproxy.web.passthrough import (
    PassThrough,
    allowed_model,
    check_chat,
    check_completion,
    check_embedding,
    check_moderation,
    model_object,
    read_body,
)
from chatproxy.web.requestlog import note
from chatproxy.web.sse import passthrough_response, responses_error_event

bp = Blueprint("v1", __name__, url_prefix="/v1")


@bp.post("/chat/completions")
def chat_completions() -> Response:
    """Create a chat completion, streamed or not (OpenAI API reference, "Chat").

    Body: OpenAI's, passed on untouched but for the cap (see `check_chat`).
    Answers the upstream's `chat.completion` JSON as it came, or with
    `"stream": true` its `chat.completion.chunk` events up to `data: [DONE]`.
    Errors in OpenAI's shape: 400, 403 `model_not_allowed`, 409 and 422 for
    an `Idempotency-Key` (see `forward`), 413, and the upstream's
    (`Upstream._map_error`).
    """
    body = read_body(request.get_data())
    return forward(check_chat(body, current_policy()), body)


@bp.post("/completions")
def completions() -> Response:
    """Create a legacy completion, streamed or not (OpenAI API reference, "Completions").

    As `/v1/chat/completions`, with `check_completion`'s checks.
    """
    body = read_body(request.get_data())
    return forward(check_completion(body, current_policy()), body)


@bp.post("/embeddings")
def embeddings() -> Response:
    """Create embeddings (OpenAI API reference, "Embeddings").

    Body: OpenAI's, passed on untouched (see `check_embedding`). Answers the
    upstream's `{"object": "list", "data": [{"object": "embedding", "index",
    "embedding": [float] or base64}], "model", "usage": {"prompt_tokens",
    "total_tokens"}}` as it came. Errors as `/v1/chat/completions`'.
    """
    body = read_body(request.get_data())
    return forward(check_embedding(body, current_policy()), body)


@bp.post("/moderations")
def moderations() -> Response:
    """Classify text (and images) as harmful or not (OpenAI API reference, "Moderations").

    Body: OpenAI's, with `model` added when missing (see `check_moderation`).
    Answers the upstream's `{"id", "model", "results": [{"flagged",
    "categories", "category_scores", ...}]}` as it came; free, so charged as
    a request of no tokens. Errors as `/v1/chat/completions`'.
    """
    body = read_body(request.get_data())
    return forward(check_moderation(body, current_policy()), body)


@bp.get("/models")
def models() -> Response:
    """The models the caller may use (CHATPROXY_MODELS, or its key's), in the owner's order;
    without CHATPROXY_MODELS, those CHATPROXY_UPSTREAMS' entries name (exact names and aliases).

    `{"object": "list", "data": [{"id", "object": "model", "created", "owned_by"}]}`;
    the upstream is not asked.
    """
    data = [model_object(model) for model in current_policy().models]
    return jsonify(object="list", data=data)


@bp.get("/models/<path:model>")
def model(model: str) -> Response:
    """One allowed model's object; 404 `model_not_found` for any other."""
    return jsonify(allowed_model(model, current_policy()))


def forward(call: PassThrough, asked: dict[str, Any]) -> Response:
    """Answer a checked request: from the upstream, or as before for a retried Idempotency-Key.

    `asked` is the body as the client sent it: with an `Idempotency-Key`, the
    request it names (`chatproxy.web.idempotency`). A retry of an answered
    request gets the upstream's body or stream bytes as first sent, with
    `Idempotent-Replayed: true`; 409 while the first is answered, 422 for a
    key used for another request.
    """
    claimed = claim_request(asked)
    if isinstance(claimed, Stored):
        return replay_passthrough(claimed)
    with released_on_error(claimed):
        return send(call, claimed)


def send(call: PassThrough, claimed: Claim) -> Response:
    """Send a checked request upstream; answer with what came back, streamed or whole.

    The request's worst case is reserved against the key's quotas first (429
    when they are reached). A stream is opened before the response starts, so
    an upstream failure before its first byte is answered with its own status.
    Every answer is charged: a stream that ends without usage (cut short, or
    a server that sends none) with the tokens counted from what passed, in
    chat's terms (`usage_in_chat_terms`: a response's input and output tokens,
    an embedding's prompt tokens; a moderation's none). The answer is kept for
    `claimed`'s key, and a Responses API response's id recorded as its
    caller's (`chatproxy.store.response_owners`), in the charge's transaction.
    """
    upstream = current_upstream()
    record_usage = usage_recorder()
    # Recorded under the name the client asked for; priced by the upstream's (an alias's).
    priced = current_settings().upstream_model(call.model)
    if call.billed:
        record_usage.reserve(priced, lambda: size_bound(call.prompt), call.cap, call.answers)
    else:  # nothing to hold, but a key whose day is spent is still refused
        record_usage.reserve(priced, lambda: 0, 0)
    release_session()  # no connection held while the upstream answers
    logged = note(model=call.model)
    prices = current_prices()
    if call.stream:
        try:
            stream = upstream.open_raw_stream(call.path, call.body, call.hide_usage)
        except APIError as error:
            record_usage(call.model, None, None)
            logged["outcome"] = error.code
            raise

        recording = Recording() if claimed.id is not None else None
        owner = current_caller().name if isinstance(stream, ResponsesStream) else ""

        def on_end() -> None:
            usage, counted = usage_in_chat_terms(stream.usage), False
            if usage is None:
                text, ratio = stream.received_text()
                completion = math.ceil(count_text(text, call.model) * ratio)
                usage = counted_usage(count_prompt(call.body, call.model), completion)
                counted = True
            kept = recording.writes(claimed) if recording is not None else []
            if isinstance(stream, ResponsesStream) and stream.response_id is not None:
                kept.append(owner_write(stream.response_id, owner))
            spent = cost(priced, usage, prices)
            record_usage(call.model, usage, spent, counted, kept)
            logged.update(usage=usage, cost=spent, first_piece_at=stream.first_piece_at)

        keepalive = current_settings().keepalive_interval
        error_event = _responses_error(stream) if isinstance(stream, ResponsesStream) else None
        return passthrough_response(stream, keepalive, on_end, recording, error_event)
    try:
        answer = upstream.complete_raw(call.path, call.body)
    except APIError as error:
        record_usage(call.model, None, None)
        logged["outcome"] = error.code
        raise
    usage, counted = usage_in_chat_terms(answer.usage), False
    if not call.billed:
        usage = counted_usage(0, 0)
    elif usage is None:  # a server that reports none: count what was asked and answered
        responses = call.path == RESPONSES_PATH
        text = response_text(answer.body) if responses else answer_text(answer.body)
        usage = counted_usage(count_prompt(call.body, call.model), count_text(text, call.model))
        counted = True
    kept: list[spool.Write] = claimed.keep(answer.body, "application/json")
    if call.path == RESPONSES_PATH and answer.id is not None:
        kept = [*kept, owner_write(answer.id, current_caller().name)]
    spent = cost(priced, usage, prices)
    record_usage(call.model, usage, spent, counted, kept)
    logged.update(usage=usage, outcome="ok", cost=spent)
    return Response(answer.body, content_type="application/json")


def _responses_error(stream: ResponsesStream) -> Callable[[APIError], bytes]:
    """The error event that ends a Responses stream which broke off: numbered after its last."""
    return lambda error: responses_error_event(error, stream.events)
