"""`/`: the Q&A page."""

from __future__ import annotations

from flask import Blueprint, render_template

from chatproxy.state import current_settings

bp = Blueprint("page", __name__)


@bp.route("/")
def index() -> str:
    """The Q&A page: a question box and the answers as they stream in."""
    settings = current_settings()
    return render_template(
        "index.html",
        simulator_in_use=settings.simulator_in_use,
        auth_open=settings.auth == "open",
        models=settings.models,
        default_model=settings.model,
        max_input_chars=settings.max_input_chars,
    )
