"""`/v1/...`: the OpenAI-compatible API, so any OpenAI client can use chatproxy as its base URL.

Requests are checked against the owner's policy (`chatproxy.web.passthrough`) and
passed to the upstream set in settings; answers come back as the upstream sent
them. The client's `Authorization` header carries an access key of chatproxy
(`chatproxy.access.keys`) and is never sent on: the upstream gets chatproxy's own
key. Every answer's usage goes to the ledger (`chatproxy.access.ledger`).
"""

from __future__ import annotations

import math

from flask import Blueprint, Response, jsonify, request

from chatproxy.access.keys import current_policy
from chatproxy.access.ledger import usage_recorder
from chatproxy.errors import APIError
from chatproxy.state import current_prices, current_settings
from chatproxy.store.database import db
from chatproxy.tokens import cost, count_prompt, count_text, counted_usage, size_bound
from chatproxy.upstream.client import current_upstream
from chatproxy.upstream.streams import answer_text
from chatproxy.web.passthrough import (
    PassThrough,
    allowed_model,
    check_chat,
    check_completion,
    model_object,
    read_body,
)
from chatproxy.web.requestlog import note
from chatproxy.web.sse import passthrough_response

bp = Blueprint("v1", __name__, url_prefix="/v1")


@bp.post("/chat/completions")
def chat_completions() -> Response:
    """Create a chat completion, streamed or not (OpenAI API reference, "Chat").

    Body: OpenAI's, passed on untouched but for the cap (see `check_chat`).
    Answers the upstream's `chat.completion` JSON as it came, or with
    `"stream": true` its `chat.completion.chunk` events up to `data: [DONE]`.
    Errors in OpenAI's shape: 400, 403 `model_not_allowed`, 413, and the
    upstream's (`Upstream._map_error`).
    """
    return forward(check_chat(read_body(request.get_data()), current_policy()))


@bp.post("/completions")
def completions() -> Response:
    """Create a legacy completion, streamed or not (OpenAI API reference, "Completions").

    As `/v1/chat/completions`, with `check_completion`'s checks.
    """
    return forward(check_completion(read_body(request.get_data()), current_policy()))


@bp.get("/models")
def models() -> Response:
    """The models the caller may use (CHATPROXY_MODELS, or its key's), in the owner's order.

    `{"object": "list", "data": [{"id", "object": "model", "created", "owned_by"}]}`;
    the upstream is not asked.
    """
    data = [model_object(model) for model in current_policy().models]
    return jsonify(object="list", data=data)


@bp.get("/models/<path:model>")
def model(model: str) -> Response:
    """One allowed model's object; 404 `model_not_found` for any other."""
    return jsonify(allowed_model(model, current_policy()))


def forward(call: PassThrough) -> Response:
    """Send a checked request upstream; answer with what came back, streamed or whole.

    The request's worst case is reserved against the key's quotas first (429
    when they are reached). A stream is opened before the response starts, so
    an upstream failure before its first byte is answered with its own status.
    Every answer is charged: a stream that ends without usage (cut short, or
    a server that sends none) with the tokens counted from what passed.
    """
    upstream = current_upstream()
    record_usage = usage_recorder()
    prompt = call.body.get("messages", call.body.get("prompt"))
    record_usage.reserve(call.model, lambda: size_bound(prompt), call.cap, call.answers)
    db.session.close()  # no connection held while the upstream answers
    logged = note(model=call.model)
    prices = current_prices()
    if call.stream:
        try:
            stream = upstream.open_raw_stream(call.path, call.body, call.hide_usage)
        except APIError as error:
            record_usage(call.model, None, None)
            logged["outcome"] = error.code
            raise

        def on_end() -> None:
            usage, counted = stream.usage, False
            if usage is None:
                text, ratio = stream.received_text()
                completion = math.ceil(count_text(text, call.model) * ratio)
                usage = counted_usage(count_prompt(call.body, call.model), completion)
                counted = True
            record_usage(call.model, usage, cost(call.model, usage, prices), counted)
            logged["usage"] = usage

        return passthrough_response(stream, current_settings().keepalive_interval, on_end)
    try:
        answer = upstream.complete_raw(call.path, call.body)
    except APIError as error:
        record_usage(call.model, None, None)
        logged["outcome"] = error.code
        raise
    usage, counted = answer.usage, False
    if usage is None:  # a server that reports none: count what was asked and answered
        text = answer_text(answer.body)
        usage = counted_usage(count_prompt(call.body, call.model), count_text(text, call.model))
        counted = True
    record_usage(call.model, usage, cost(call.model, usage, prices), counted)
    logged.update(usage=usage, outcome="ok")
    return Response(answer.body, content_type="application/json")
