"""The paths of the OpenAPI document: the service's, the questions', the conversations' and
`/v1`'s, each operation with its parameters, bodies and responses."""

from __future__ import annotations

from typing import Any

from chatproxy.web.openapi.components import (
    FORM,
    IDEMPOTENCY_ERRORS,
    JSON,
    SSE,
    UPSTREAM_ERRORS,
    Operations,
    body,
    errors,
    ok,
    required_header,
)
from chatproxy.web.openapi.schemas import Bounds, Schema, integer, question_fields, ref, string


def service_paths(ops: Operations) -> dict[str, Schema]:
    """The page, health, metrics and this document."""
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
        "text/plain": string(description="The answer only, never the reasoning (the default)."),
        JSON: ref("Answer"),
        SSE: ref("AnswerEvent"),
    }
    return ok(description, content, headers=conversation)


def question_paths(ops: Operations, bounds: Bounds) -> dict[str, Schema]:
    """`/callChatGPT`, GET and POST, with every way to send a question and to get its answer."""
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

    form = body(
        (JSON, ref("Question")),
        (FORM, ref("QuestionForm")),
        ("multipart/form-data", ref("QuestionMultipart")),
    )
    header = [ref(name, "parameters") for name in headers]
    return {
        "/callChatGPT": {
            "get": ask("askGet", parameters=query),
            "post": ask("askPost", parameters=header, requestBody=form),
        }
    }


def conversation_paths(ops: Operations) -> dict[str, Schema]:
    """`/api/...`: personas, models, usage, and the caller's conversations."""
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
                {
                    "200": json("Conversation", "Its current branch, oldest first"),
                    **errors(404),
                },
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
                    "200": _answers(
                        "As `/callChatGPT`; the new answer is kept beside the old ones "
                        "(siblings) and becomes the current branch."
                    ),
                    **errors(*UPSTREAM_ERRORS),
                },
                description="`/callChatGPT`'s parameters but `input` and `conversation_id`; "
                "400 `nothing_to_regenerate` for a conversation without a question.",
                requestBody=regenerate_body,
            ),
        },
        "/api/conversations/{conversation_id}/continue": {
            "parameters": [ref("ConversationPath", "parameters")],
            "post": ops.api(
                "continueAnswer",
                "Go on with the last answer where it was cut off (Continue)",
                {
                    "200": _answers(
                        "As `/callChatGPT`, with what was added; the stored answer (same "
                        "`message_id`) becomes the whole text, its usage the sum."
                    ),
                    **errors(*UPSTREAM_ERRORS),
                },
                description="`/callChatGPT`'s parameters but `input` and `conversation_id`. "
                "The upstream gets the answer so far as the last assistant message and is "
                "asked to continue. 400 `nothing_to_continue` unless the last message is an "
                "answer cut off (`finish_reason` `length`, or status `interrupted`).",
                requestBody=regenerate_body,
            ),
        },
        "/api/conversations/{conversation_id}/current": {
            "parameters": [ref("ConversationPath", "parameters")],
            "post": ops.api(
                "chooseBranch",
                "Show another version of a turn (switch branch)",
                {
                    "200": json("Conversation", "The conversation, on the branch chosen"),
                    **errors(400, 404, 413),
                },
                description="The branch through `message_id` becomes the current one, down to "
                "the newest of its later turns; the next question goes on from it. 400 "
                "`invalid_message_id`, 404 `message_not_found` for a message not in it.",
                requestBody=body((JSON, ref("ChooseBranch"))),
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


def v1_paths(ops: Operations) -> dict[str, Schema]:
    """`/v1/...`: the OpenAI-compatible pass-through."""
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
