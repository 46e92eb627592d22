"""`/callChatGPT`: ask one question, get the answer as text, JSON or an SSE stream."""

from __future__ import annotations

from functools import partial
from typing import Any

from flask import Blueprint, Response, jsonify, request

from chatproxy.passthrough import read_body
from chatproxy.questions import parse_question
from chatproxy.sse import stream_response
from chatproxy.state import current_personas, current_prices, current_settings, current_upstream
from chatproxy.tokens import answer_cost

bp = Blueprint("ask", __name__)


@bp.route("/callChatGPT", methods=["GET", "POST"])
def call_chatgpt() -> Response:
    """Answer one question (README, "Asking questions").

    Parameters (query string, form or JSON body): `input` (required), `model`,
    `persona` (an id from `/api/personas`), `system`, `temperature`, `top_p`,
    `max_tokens`, `presence_penalty`, `frequency_penalty`, `stop`, `stream`,
    `format`.
    Answers `text/plain` (the answer only) by default; JSON
    `{"answer", "model", "usage", "finish_reason", "cost"}` (`cost` in USD, null
    for a model without a price) with `Accept: application/json` or
    `format=json`; SSE events (see `chatproxy.sse`) with `stream=1` or
    `Accept: text/event-stream`. Errors: 400 (`context_length_exceeded` when
    the question does not fit the model's window), 403, 413, 429, 502, 503,
    504 in OpenAI's error shape.
    """
    settings = current_settings()
    question = parse_question(
        request_values(), settings, wants=wanted_format(), personas=current_personas()
    )
    upstream = current_upstream()
    params = question.chat_params(settings)
    cost_of = partial(answer_cost, asked_model=question.model, prices=current_prices())
    if question.stream:
        stream = upstream.open_chat_stream(params)
        return stream_response(stream, settings.keepalive_interval, cost_of)
    answer = upstream.complete_chat(params)
    if question.format == "json":
        return jsonify(
            answer=answer.content,
            model=answer.model,
            usage=answer.usage,
            finish_reason=answer.finish_reason,
            cost=cost_of(answer.usage, answer.model),
        )
    return Response(answer.content, mimetype="text/plain")


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
