"""`/v1/...`: the OpenAI-compatible API, so any OpenAI client can use chatproxy as its base URL.

Requests are checked against the owner's policy (`chatproxy.web.passthrough`) and
passed to the upstream set in settings; answers come back as the upstream sent
them. The client's `Authorization` header carries an access key of chatproxy
(`chatproxy.access.keys`) and is never sent on: the upstream gets chatproxy's own
key. Every answer's usage goes to the ledger (`chatproxy.access.quotas`).
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from chatproxy.access.keys import current_policy
from chatproxy.access.quotas import usage_recorder
from chatproxy.errors import APIError
from chatproxy.state import current_prices, current_settings
from chatproxy.store.database import db
from chatproxy.tokens import cost
from chatproxy.upstream.client import current_upstream
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

    A stream is opened before the response starts, so an upstream failure
    before its first byte is answered with its own status.
    """
    upstream = current_upstream()
    record_usage = usage_recorder()
    db.session.close()  # no connection held while the upstream answers
    logged = note(model=call.model)
    prices = current_prices()
    if call.stream:
        stream = upstream.open_raw_stream(call.path, call.body, call.hide_usage)

        def on_end() -> None:
            record_usage(call.model, stream.usage, cost(call.model, stream.usage, prices))
            logged["usage"] = stream.usage

        return passthrough_response(stream, current_settings().keepalive_interval, on_end)
    try:
        answer = upstream.complete_raw(call.path, call.body)
    except APIError as error:
        record_usage(call.model, None, None)
        logged["outcome"] = error.code
        raise
    record_usage(call.model, answer.usage, cost(call.model, answer.usage, prices))
    logged.update(usage=answer.usage, outcome="ok")
    return Response(answer.body, content_type="application/json")
