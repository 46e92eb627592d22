"""`/openapi.json`: an OpenAPI 3.1 document describing every route chatproxy serves.

Built in Python once per app from its settings (the models clients may name,
the `max_tokens` cap, the longest question, whether access keys are needed)
and its personas, so it states the bounds this deployment enforces. Schemas
live in `chatproxy.web.openapi_schemas`; this module assembles parameters,
responses, security and paths (https://spec.openapis.org/oas/v3.1.1).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from chatproxy.config import Settings
from chatproxy.state import current_personas, current_settings
from chatproxy.web.openapi_schemas import (
    ID,
    Bounds,
    Schema,
    component_schemas,
    integer,
    question_fields,
    ref,
    string,
)

bp = Blueprint("openapi", __name__)

VERSION = "0.1.0"  # the API's version (info.version); keep in step with pyproject.toml
DOCUMENT = "chatproxy.openapi"  # app.extensions key of the built document
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
    503: ("UpstreamNotConfigured", "No upstream is configured (debug mode without a key)."),
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


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """This service's OpenAPI 3.1 document (JSON), built once per app."""
    document = current_app.extensions.get(DOCUMENT)
    if document is None:
        document = build_document(current_settings(), tuple(current_personas()))
        current_app.extensions[DOCUMENT] = document
    return jsonify(document)


def build_document(settings: Settings, persona_ids: tuple[str, ...]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of an app with `settings` and the personas `persona_ids`."""
    bounds = Bounds(
        models=settings.models,
        chat_models=settings.chat_models,
        default_model=settings.model,
        max_tokens=settings.max_tokens,
        max_input_chars=settings.max_input_chars,
        persona_ids=persona_ids,
        keys_required=settings.auth != "open",
    )
    ops = Operations(bounds.keys_required)
    return {
        "openapi": "3.1.1",
        "info": {
            "title": "chatproxy",
            "version": VERSION,
            "summary": "A self-hosted ChatGPT Q&A page and OpenAI API gateway.",
            "description": "Every error has OpenAI's shape (`Error`). The bounds stated are "
            "this deployment's settings.",
        },
        "tags": [
            {
                "name": "questions",
                "description": "Ask a question; the answer as text, JSON or SSE.",
            },
            {"name": "page", "description": "What the Q&A page chooses from, and usage."},
            {"name": "conversations", "description": "The caller's stored conversations."},
            {"name": "openai", "description": "OpenAI-compatible: chatproxy as a base URL."},
            {"name": "service", "description": "The page, health, and this document."},
        ],
        "paths": {
            **_service_paths(ops),
            **_question_paths(ops, bounds),
            **_conversation_paths(ops),
            **_v1_paths(ops),
        },
        "components": {
            "schemas": component_schemas(bounds),
            "parameters": _parameters(bounds),
            "headers": HEADERS,
            "responses": {
                name: {
                    "description": description,
                    "headers": _headers_of(status),
                    "content": {JSON: {"schema": ref("Error")}},
                }
                for status, (name, description) in ERRORS.items()
            },
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


# --- Shared pieces -----------------------------------------------------------------


def _parameters(bounds: Bounds) -> dict[str, Schema]:
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
        "schema": string(enum=list(bounds.models)),
        "description": "Any other model: 404 `model_not_found`.",
    }
    return parameters


def _headers_of(status: int | None = None) -> dict[str, Schema]:
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
                response.setdefault("headers", {}).update(_headers_of())
        operation = self.public(op_id, summary, responses, **extra)
        operation["security"] = self.security
        return operation

    def get_json(self, op_id: str, summary: str, schema: str) -> Schema:
        """An API `GET` of no parameters answering the JSON `schema`."""
        return {"get": self.api(op_id, summary, {"200": ok(summary, {JSON: ref(schema)})})}


# --- Paths -------------------------------------------------------------------------


def _service_paths(ops: Operations) -> dict[str, Schema]:
    page = ops.tagged("page")
    location = {"Location": {"required": True, "schema": string()}}
    return {
        "/": {
            "get": ops.public("page", "The Q&A page", {"200": ok("HTML", {"text/html": string()})})
        },
        "/favicon.ico": {
            "get": ops.public("favicon", "The icon", {"301": ok("To the SVG", headers=location)})
        },
        "/healthz": {
            "get": ops.public("healthz", "Liveness", {"200": ok("Alive", {JSON: ref("Health")})})
        },
        "/readyz": {
            "get": ops.public(
                "readyz",
                "Readiness: can it answer questions",
                {
                    "200": ok("Ready", {JSON: ref("Readiness")}),
                    "503": ok("Not ready; `checks` names what is not", {JSON: ref("Readiness")}),
                },
            )
        },
        "/openapi.json": {
            "get": ops.public("openapi", "This document", {"200": ok("OpenAPI 3.1", {JSON: {}})})
        },
        "/metrics": {
            "get": ops.public(
                "metrics",
                "Prometheus metrics, summed across workers (loopback, or the metrics token)",
                {
                    "200": ok("Text exposition format 0.0.4", {"text/plain": string()}),
                    **errors(403),
                },
            )
        },
        "/api/personas": page.get_json(
            "listPersonas", "The personas `persona=` may name, by id", "PersonaList"
        ),
        "/api/models": page.get_json(
            "listModelChoices", "The models `model=` may name, one the default", "ModelChoiceList"
        ),
        "/api/usage": page.get_json(
            "usage", "The caller's usage today and over 30 days; its limits", "UsageReport"
        ),
    }


def _answers(description: str) -> Schema:
    """The 200 of a question: text, JSON or SSE, with `X-Conversation-Id`."""
    conversation = {
        "X-Conversation-Id": required_header("X-Conversation-Id"),
        "Idempotent-Replayed": ref("Idempotent-Replayed", "headers"),
    }
    content = {
        "text/plain": string(description="The answer only (the default)."),
        JSON: ref("Answer"),
        SSE: ref("AnswerEvent"),
    }
    return ok(description, content, headers=conversation)


def _question_paths(ops: Operations, bounds: Bounds) -> dict[str, Schema]:
    ops = ops.tagged("questions")
    headers = ["ConversationHeader", "IdempotencyKey"]
    query = [ref(name, "parameters") for name in [*question_fields(bounds), *headers]]

    def ask(op_id: str, **extra: Any) -> Schema:
        answer = _answers(
            "The answer: text by default; JSON with `format=json` or "
            "`Accept: application/json`; SSE with `stream=1`."
        )
        responses = {"200": answer, **errors(*UPSTREAM_ERRORS, *IDEMPOTENCY_ERRORS)}
        description = (
            "Parameters come from the query string, a form or a JSON body (the body wins). "
            "The question is stored, in a new conversation unless one is named."
        )
        return ops.api(op_id, "Ask one question", responses, description=description, **extra)

    form = body((JSON, ref("Question")), (FORM, ref("QuestionForm")))
    header = [ref(name, "parameters") for name in headers]
    return {
        "/callChatGPT": {
            "get": ask("askGet", parameters=query),
            "post": ask("askPost", parameters=header, requestBody=form),
        }
    }


def _conversation_paths(ops: Operations) -> dict[str, Schema]:
    ops = ops.tagged("conversations")

    def json(name: str, description: str) -> Schema:
        return ok(description, {JSON: ref(name)})

    search = {
        "name": "q",
        "in": "query",
        "schema": string(),
        "description": "Text the title contains (case-insensitive; 200 characters count).",
    }
    limit = {"name": "limit", "in": "query", "schema": integer(minimum=1, maximum=200)}
    export_format = {"name": "format", "in": "query", "schema": string(enum=["md", "json"])}
    attachment = {"Content-Disposition": required_header("Content-Disposition")}
    regenerate_body = body(
        (JSON, ref("RegenerateOptions")), (FORM, ref("RegenerateOptionsForm")), required=False
    )
    return {
        "/api/conversations": {
            "get": ops.api(
                "listConversations",
                "The caller's conversations, latest first",
                {"200": json("ConversationList", "Summaries"), **errors(400)},
                parameters=[search, limit],
            )
        },
        "/api/conversations/import": {
            "post": ops.api(
                "importConversation",
                'Store a conversation from a JSON export, or any `{"messages": [...]}`',
                {"201": json("Conversation", "The conversation, whole"), **errors(400, 413)},
                requestBody=body((JSON, ref("ConversationImport"))),
            )
        },
        "/api/conversations/{conversation_id}": {
            "parameters": [ref("ConversationPath", "parameters")],
            "get": ops.api(
                "getConversation",
                "A conversation and its messages",
                {"200": json("Conversation", "Messages oldest first"), **errors(404)},
            ),
            "patch": ops.api(
                "renameConversation",
                "Rename a conversation",
                {"200": json("ConversationSummary", "Its summary"), **errors(400, 404, 413)},
                requestBody=body((JSON, ref("Rename"))),
            ),
            "delete": ops.api(
                "deleteConversation",
                "Delete a conversation and its messages",
                {"204": ok("Deleted"), **errors(404)},
            ),
        },
        "/api/conversations/{conversation_id}/regenerate": {
            "parameters": [ref("ConversationPath", "parameters")],
            "post": ops.api(
                "regenerate",
                "Answer the last question again (Retry, Regenerate)",
                {
                    "200": _answers("As `/callChatGPT`; the new answer replaces the last one."),
                    **errors(*UPSTREAM_ERRORS),
                },
                description="`/callChatGPT`'s parameters but `input` and `conversation_id`; "
                "400 `nothing_to_regenerate` for a conversation without a question.",
                requestBody=regenerate_body,
            ),
        },
        "/api/conversations/{conversation_id}/export": {
            "parameters": [ref("ConversationPath", "parameters")],
            "get": ops.api(
                "exportConversation",
                "Download as Markdown or JSON",
                {
                    "200": ok(
                        "An attachment",
                        {"text/markdown": string(), JSON: ref("ConversationExport")},
                        headers=attachment,
                    ),
                    **errors(400, 404),
                },
                parameters=[export_format],
            ),
        },
    }


def _v1_paths(ops: Operations) -> dict[str, Schema]:
    ops = ops.tagged("openai")

    def create(op_id: str, summary: str, request: str) -> Schema:
        answer = ok(
            'The upstream\'s answer as it came; with `"stream": true` its chunks up to '
            "`data: [DONE]`, or an error event if the stream breaks.",
            {JSON: ref("Completion"), SSE: ref("PassthroughEvent")},
            headers={"Idempotent-Replayed": ref("Idempotent-Replayed", "headers")},
        )
        responses = {"200": answer, **errors(*UPSTREAM_ERRORS, *IDEMPOTENCY_ERRORS)}
        return {
            "post": ops.api(
                op_id,
                summary,
                responses,
                parameters=[ref("IdempotencyKey", "parameters")],
                requestBody=body((JSON, ref(request))),
            )
        }

    model = ops.api(
        "retrieveModel",
        "One allowed model",
        {"200": ok("The model", {JSON: ref("Model")}), **errors(404)},
        parameters=[ref("ModelPath", "parameters")],
    )
    return {
        "/v1/chat/completions": create(
            "createChatCompletion", "Create a chat completion", "ChatCompletionRequest"
        ),
        "/v1/completions": create(
            "createCompletion", "Create a completion (legacy)", "CompletionRequest"
        ),
        "/v1/models": ops.get_json(
            "listModels",
            "The models the caller may use (not asked upstream)",
            "ModelList",
        ),
        "/v1/models/{model}": {"get": model},
    }
