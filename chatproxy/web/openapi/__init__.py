"""`/openapi.json`: an OpenAPI 3.1 document describing every route chatproxy serves.

Built in Python once per app from its settings (the models clients may name,
the `max_tokens` cap, the longest question, whether access keys are needed)
and its personas, so it states the bounds this deployment enforces. Schemas
live in `schemas`, the shared responses, headers and parameters in
`components`, the paths in `paths`; this module puts them together
(https://spec.openapis.org/oas/v3.1.1).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from chatproxy.config import Settings
from chatproxy.state import current_personas, current_settings
from chatproxy.web.openapi.admin import admin_paths, admin_schemas
from chatproxy.web.openapi.attachments_api import (
    attachment_fields,
    attachment_paths,
    attachment_schemas,
    multipart_question,
)
from chatproxy.web.openapi.components import (
    ERRORS,
    HEADERS,
    JSON,
    SECURITY_SCHEMES,
    Operations,
    headers_of,
    parameters,
)
from chatproxy.web.openapi.conversation_schemas import conversation_schemas
from chatproxy.web.openapi.media_api import media_paths, media_schemas
from chatproxy.web.openapi.more_api import more_paths, more_schemas
from chatproxy.web.openapi.paths import conversation_paths, question_paths, service_paths, v1_paths
from chatproxy.web.openapi.schemas import Bounds, array, component_schemas, integer, ref
from chatproxy.web.openapi.v1_schemas import v1_schemas

bp = Blueprint("openapi", __name__)

VERSION = "0.1.0"  # the API's version (info.version); keep in step with pyproject.toml
DOCUMENT = "chatproxy.openapi"  # app.extensions key of the built document


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
        model_patterns=settings.model_patterns,
    )
    ops = Operations(bounds.keys_required)
    schemas = {
        **component_schemas(bounds),
        **conversation_schemas(),
        **v1_schemas(bounds),
        **more_schemas(bounds),
        **media_schemas(bounds),
        **admin_schemas(bounds),
        **attachment_schemas(),
    }
    schemas["Question"]["properties"].update(attachment_fields())
    schemas["QuestionMultipart"] = multipart_question(schemas["QuestionForm"])
    schemas["ConversationMessage"]["properties"]["attachments"] = array(ref("Attachment"))
    schemas["ConversationMessage"]["required"].append("attachments")
    schemas["Answer"]["properties"]["dropped_images"] = integer(
        minimum=1, description="Earlier questions' images left out to fit the window"
    )
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
            {"name": "admin", "description": "The owner's console and its API: admin keys only."},
        ],
        "paths": {
            **service_paths(ops),
            **question_paths(ops, bounds),
            **conversation_paths(ops),
            **v1_paths(ops),
            **more_paths(ops),
            **media_paths(ops),
            **admin_paths(ops),
            **attachment_paths(ops),
        },
        "components": {
            "schemas": schemas,
            "parameters": parameters(bounds),
            "headers": HEADERS,
            "responses": {
                name: {
                    "description": description,
                    "headers": headers_of(status),
                    "content": {JSON: {"schema": ref("Error")}},
                }
                for status, (name, description) in ERRORS.items()
            },
            "securitySchemes": SECURITY_SCHEMES,
        },
    }
