"""`/`: the Q&A page."""

from __future__ import annotations

from flask import Blueprint, Response, redirect, render_template, url_for

from chatproxy.state import current_settings
from chatproxy.store.personas import all_personas

bp = Blueprint("page", __name__)


@bp.route("/")
def index() -> str:
    """The Q&A page: a question box, persona and model pickers, the answers as they stream in."""
    settings = current_settings()
    return render_template(
        "index.html",
        simulator_in_use=settings.simulator_in_use,
        auth_open=settings.auth == "open",
        models=settings.chat_models,
        default_model=settings.model,
        personas=list(all_personas().values()),
        max_input_chars=settings.max_input_chars,
    )


@bp.route("/favicon.ico")
def favicon() -> Response:
    """Browsers ask for /favicon.ico whatever the page says; send them to the SVG icon."""
    return redirect(url_for("static", filename="favicon.svg"), code=301)  # type: ignore[return-value]
