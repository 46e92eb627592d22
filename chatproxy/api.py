"""`/api/...`: what the page and other clients may choose from (personas, models)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from chatproxy.state import current_personas, current_settings

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.route("/personas")
def personas() -> Response:
    """The personas `persona=` may name, sorted by id.

    `{"object": "list", "data": [{"id", "name", "description", "model",
    "messages": [{"role", "content"}]}]}`; `model` is null when the persona
    keeps the default model. The messages are the persona's system prompt and
    examples, sent before each question; they are not secret.
    """
    data = [
        {
            "id": persona.id,
            "name": persona.name,
            "description": persona.description,
            "model": persona.model,
            "messages": list(persona.messages),
        }
        for persona in current_personas().values()
    ]
    return jsonify(object="list", data=data)


@bp.route("/models")
def models() -> Response:
    """The models `model=` may name (CHATPROXY_MODELS), in the owner's order.

    `{"object": "list", "data": [{"id": str, "default": bool}]}`; exactly one
    is the default (CHATPROXY_MODEL).
    """
    settings = current_settings()
    data = [{"id": model, "default": model == settings.model} for model in settings.models]
    return jsonify(object="list", data=data)
