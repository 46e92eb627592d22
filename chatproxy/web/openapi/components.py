"""The shared pieces of the OpenAPI document: media types, error responses, headers,
parameters, security, and the builder of operations (`Operations`)."""

from __future__ import annotations

from typing import Any

from chatproxy.web.openapi.schemas import ID, Bounds, Schema, integer, question_fields, ref, string

JSON = "application/json"
SSE = "text/event-stream"
FORM = "application/x-www-form-urlencoded"

# status -> (name in components.responses, description); each answers OpenAI's error shape.
ERRORS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "Bad input: a missing, malformed or out-of-range parameter."),
    401: (
        "Unauthorized",
        "No access key (`missing_api_key`), or an unknown, revoked or "
        "expired one (`invalid_api_key`).",
    ),
    403: ("Forbidden", "Not allowed, e.g. a model outside CHATPROXY_MODELS or the key's."),
    404: ("NotFound", "No such object (`conversation_not_found`, `model_not_found`)."),
    405: ("MethodNotAllowed", "The route does not take this method (see `Allow`)."),
    409: (
        "Conflict",
        "A request with this `Idempotency-Key` is still being answered "
        "(`idempotency_key_in_use`; `Retry-After` says when to ask for its answer), or its "
        "answer was too large to keep for a retry (`idempotency_replay_unavailable`).",
    ),
    413: ("PayloadTooLarge", "The request body is larger than CHATPROXY_MAX_BODY_BYTES."),
    422: (
        "Unprocessable",
        "This `Idempotency-Key` was used for another request (`idempotency_key_reused`).",
    ),
    429: (
        "RateLimited",
        "Too many requests or tokens for the key or address, or the "
        "upstream is rate limiting; `Retry-After` says when to try again.",
    ),
    502: (
        "UpstreamError",
        "The upstream failed, refused chatproxy's key, or could not be "
        "reached; the message names the setting to check.",
    ),
    503: (
        "Unavailable",
        "No upstream is configured (`upstream_not_configured`), or the database is away "
        "(`store_unavailable`, with `Retry-After`): nothing was asked.",
    ),
    504: ("UpstreamTimeout", "The upstream did not answer within CHATPROXY_TIMEOUT."),
}
# The errors of a route that calls the upstream (questions, /v1); 404 `model_not_found`
# when the upstream lacks a model the owner allows.
UPSTREAM_ERRORS = (400, 403, 404, 413, 502, 503, 504)
# The errors of a route that takes an Idempotency-Key.
IDEMPOTENCY_ERRORS = (409, 422)
SECURITY: list[dict[str, list[str]]] = [{"accessKey": []}, {"accessKeyQuery": []}]
SECURITY_SCHEMES = {
    "accessKey": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "cpk-...",
        "description": "An access key of chatproxy (`flask keys create`), never the upstream's.",
    },
    "accessKeyQuery": {
        "type": "apiKey",
        "in": "query",
        "name": "key",
        "description": "The same key in the URL, for clients that can only send a URL (less "
        "safe: URLs end up in histories and logs).",
    },
}
HEADERS: dict[str, Schema] = {
    "X-Conversation-Id": {
        "description": "The conversation the question went to (a new one unless one was named).",
        "schema": ID,
    },
    "Retry-After": {"description": "Seconds to wait before trying again.", "schema": integer()},
    "X-RateLimit-Limit": {
        "description": "Requests per minute allowed, when a per-key or per-address limit applies.",
        "schema": integer(minimum=0),
    },
    "X-RateLimit-Remaining": {
        "description": "Requests left in the window.",
        "schema": integer(minimum=0),
    },
    "X-RateLimit-Reset": {
        "description": "When the window resets, in seconds since the epoch.",
        "schema": integer(minimum=0),
    },
    "Allow": {"description": "The methods the route takes.", "schema": string()},
    "Idempotent-Replayed": {
        "description": "`true` on the answer kept for an `Idempotency-Key`, given again "
        "without asking the upstream.",
        "schema": string(enum=["true"]),
    },
    "Content-Disposition": {
        "description": "`attachment`, with a file name after the title (RFC 6266).",
        "schema": string(pattern="^attachment; "),
    },
}


def parameters(bounds: Bounds) -> dict[str, Schema]:
    """`components.parameters`: the question's (query) and the path ids."""
    fields = question_fields(bounds)
    parameters: dict[str, Schema] = {
        name: {"name": name, "in": "query", "schema": s} for name, s in fields.items()
    }
    parameters["input"]["required"] = True
    # Repeated `stop=` in the query string: always a list there.
    parameters["stop"] |= {"schema": fields["stop"]["anyOf"][1], "explode": True}
    parameters["ConversationHeader"] = {
        "name": "X-Conversation-Id",
        "in": "header",
        "schema": ID,
        "description": "Go on with this conversation (`conversation_id` wins).",
    }
    parameters["IdempotencyKey"] = {
        "name": "Idempotency-Key",
        "in": "header",
        "schema": string(minLength=1, maxLength=255, pattern="^[ -~]+$"),
        "description": "A key of the caller's for this request (e.g. a UUID), kept 24 hours: "
        "the same request sent again with it gets the first answer (`Idempotent-Replayed: "
        "true`) without asking the upstream again. 1 to 255 printable ASCII characters.",
    }
    parameters["ConversationPath"] = {
        "name": "conversation_id",
        "in": "path",
        "required": True,
        "schema": ID,
        "description": "Any other value: 404 `conversation_not_found`.",
    }
    parameters["ModelPath"] = {
        "name": "model",
        "in": "path",
        "required": True,
        "schema": string(**bounds.model_enum(bounds.models)),
        "description": "Any other model: 404 `model_not_found`.",
    }
    return parameters


def headers_of(status: int | None = None) -> dict[str, Schema]:
    """The headers a response with `status` may carry: those of rate limits, and its own."""
    names = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After")
    headers = {name: ref(name, "headers") for name in names}
    if status == 429:
        headers["Retry-After"] = required_header("Retry-After")
    if status == 405:
        headers["Allow"] = required_header("Allow")
    return headers


def required_header(name: str) -> Schema:
    """HEADERS[`name`], required (inline: a `$ref` takes no `required` beside it)."""
    return {**HEADERS[name], "required": True}


def errors(*statuses: int) -> dict[str, Schema]:
    """`responses` entries for these error statuses."""
    return {str(status): ref(ERRORS[status][0], "responses") for status in statuses}


def ok(description: str, content: dict[str, Schema] | None = None, **extra: Any) -> Schema:
    """A success response; `content` maps media types to schemas."""
    response: Schema = {"description": description, **extra}
    if content:
        response["content"] = {media: {"schema": schema} for media, schema in content.items()}
    return response


def body(*schemas: tuple[str, Schema], required: bool = True) -> Schema:
    """A request body: `(media type, schema)` pairs."""
    return {"required": required, "content": {media: {"schema": s} for media, s in schemas}}


class Operations:
    """Builds the operations of one tag; API ones (`/callChatGPT`, `/api`, `/v1`) get the keys."""

    def __init__(self, keys_required: bool, tag: str = "service") -> None:
        self.keys_required = keys_required
        self.tag = tag
        # CHATPROXY_AUTH=open: a key is accepted but not needed ({}: no security).
        self.security = SECURITY if keys_required else [{}, *SECURITY]

    def tagged(self, tag: str) -> Operations:
        """The same builder for operations of `tag`."""
        return Operations(self.keys_required, tag)

    def public(self, op_id: str, summary: str, responses: Schema, **extra: Any) -> Schema:
        """An operation anyone may call: the page, health, this document."""
        operation = {"operationId": op_id, "tags": [self.tag], "summary": summary, **extra}
        operation["responses"] = {**responses, **errors(405)}
        return operation

    def api(self, op_id: str, summary: str, responses: Schema, **extra: Any) -> Schema:
        """An operation behind access keys; its answers may carry the rate-limit headers."""
        responses = {**responses, **errors(429, *([401] if self.keys_required else []))}
        for status, response in responses.items():
            if not status.startswith("4") and "$ref" not in response:
                response.setdefault("headers", {}).update(headers_of())
        operation = self.public(op_id, summary, responses, **extra)
        operation["security"] = self.security
        return operation

    def get_json(self, op_id: str, summary: str, schema: str) -> Schema:
        """An API `GET` of no parameters answering the JSON `schema`."""
        return {"get": self.api(op_id, summary, {"200": ok(summary, {JSON: ref(schema)})})}
