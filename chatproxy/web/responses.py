"""`/v1/responses`: OpenAI's Responses API passed through, each response its creator's alone.

A response is created as any `/v1` request is (checked by `check_response`,
sent by `chatproxy.web.v1.forward`: the access key, its models, its limits and
the quota reservation apply, the answer is the upstream's bytes, its usage is
charged); its id is then recorded as its caller's (`chatproxy.store.response_owners`).
Retrieving, deleting, cancelling it, listing its input items or continuing it
(`previous_response_id`) with another key is 404 `response_not_found`, as for
conversations. Format: OpenAI API reference, "Responses".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Blueprint, Response, request

from chatproxy.access.keys import current_caller, current_policy
from chatproxy.errors import BadRequest, NotFound, UpstreamError
from chatproxy.store.database import db, release_session
from chatproxy.store.response_owners import forget, owns
from chatproxy.upstream.client import current_upstream
from chatproxy.upstream.paths import RESPONSE_ID
from chatproxy.web.passthrough import check_response, read_body
from chatproxy.web.v1 import forward

bp = Blueprint("responses", __name__, url_prefix="/v1")

# Query parameters passed on, per route (OpenAI API reference); others are not sent.
RETRIEVE_QUERY = ("include", "include[]", "include_obfuscation")
ITEMS_QUERY = ("after", "before", "limit", "order", "include", "include[]")
MAX_QUERY_VALUE = 200  # characters: an id, a number or a field name


@bp.post("/responses")
def create() -> Response:
    """Create a model response, whole or streamed (OpenAI API reference, "Create a model response").

    Body: OpenAI's, passed on but for the cap (see `check_response`). Answers
    the upstream's `response` object as it came, or with `"stream": true` its
    named events (`event: response.created` ... `event: response.completed`)
    as they came. Errors as `/v1/chat/completions`', and 404
    `previous_response_not_found` for a `previous_response_id` that is not the caller's.
    """
    body = read_body(request.get_data())
    call = check_response(body, current_policy())
    previous = body.get("previous_response_id")
    if previous is not None and not _owned(previous):
        raise NotFound(
            f"Previous response with id {previous[:MAX_QUERY_VALUE]!r} not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    return forward(call, body)


@bp.get("/responses/<response_id>")
def retrieve(response_id: str) -> Response:
    """A response of the caller's (OpenAI API reference, "Get a model response").

    Query: `include`, `include_obfuscation`, passed on; `stream=true` (for
    background responses, which are not served here) is 400. Answers the
    upstream's `response` object; 404 `response_not_found` for another's.
    """
    if request.args.get("stream", "false").lower() not in ("false", "0", ""):
        raise BadRequest(
            "Streaming a stored response is for background responses, which are not served here.",
            param="stream",
            code="unsupported_parameter",
        )
    return _stored("GET", response_id, "", _query(RETRIEVE_QUERY))


@bp.delete("/responses/<response_id>")
def delete(response_id: str) -> Response:
    """Delete a response of the caller's (OpenAI API reference, "Delete a model response").

    Answers the upstream's `{"id", "object": "response", "deleted": true}`;
    the id is then forgotten. 404 `response_not_found` for another's.
    """
    answer = _stored("DELETE", response_id, "", None)
    forget(db.engine, response_id, current_caller().name)
    return answer


@bp.post("/responses/<response_id>/cancel")
def cancel(response_id: str) -> Response:
    """Cancel a response of the caller's (OpenAI API reference, "Cancel a response").

    Only a background response can be cancelled upstream; the upstream's
    answer (the `response` object, or its 400) comes back. 404
    `response_not_found` for another's.
    """
    return _stored("POST", response_id, "/cancel", None)


@bp.get("/responses/<response_id>/input_items")
def input_items(response_id: str) -> Response:
    """The input items of a response of the caller's (OpenAI API reference, "List input items").

    Query: `after`, `before`, `limit`, `order`, `include`, passed on. Answers
    the upstream's `{"object": "list", "data": [items], "first_id", "last_id",
    "has_more"}`. 404 `response_not_found` for another's.
    """
    return _stored("GET", response_id, "/input_items", _query(ITEMS_QUERY))


def _stored(method: str, response_id: str, route: str, query: dict[str, Any] | None) -> Response:
    """`method` on a stored response's `route`, if it is the caller's: the upstream's JSON."""
    if not _owned(response_id):
        raise _not_found(response_id)
    release_session()  # no connection held while the upstream answers
    with _gone_upstream(response_id):
        answer = current_upstream().call_raw(method, response_id, route, query)
    return Response(answer.body, content_type="application/json")


def _owned(response_id: str) -> bool:
    """True when `response_id` looks like an id and was created by the current caller."""
    if not RESPONSE_ID.fullmatch(response_id):
        return False
    return owns(db.engine, response_id, current_caller().name)


@contextmanager
def _gone_upstream(response_id: str) -> Iterator[None]:
    """The upstream's 404 for a response of the caller's (not stored there, or deleted
    elsewhere) as 404 `response_not_found`, not as a failure of the upstream."""
    try:
        yield
    except UpstreamError as error:
        if error.code == "upstream_not_found":
            raise _not_found(response_id) from None
        raise


def _not_found(response_id: str) -> NotFound:
    return NotFound(
        f"Response with id {response_id[:MAX_QUERY_VALUE]!r} not found.",
        param="response_id",
        code="response_not_found",
    )


def _query(names: tuple[str, ...]) -> dict[str, list[str]]:
    """The request's query parameters among `names`, each value at most MAX_QUERY_VALUE
    characters (400 otherwise), to be encoded again for the upstream."""
    found: dict[str, list[str]] = {}
    for name in names:
        values = request.args.getlist(name)
        for value in values:
            if len(value) > MAX_QUERY_VALUE or not value.isprintable():
                raise BadRequest(
                    f"The query parameter {name!r} is too long or not printable.",
                    param=name,
                    code="invalid_value",
                )
        if values:
            found[name] = values
    return found
