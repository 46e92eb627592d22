"""`/admin`: the owner's console, a page like the Q&A page; its data comes from `/api/admin`."""

from __future__ import annotations

from flask import Blueprint, render_template

from chatproxy.state import current_settings

bp = Blueprint("admin_page", __name__)


@bp.get("/admin")
def console() -> str:
    """The console: access keys and spending. The page holds no data of its own: it asks
    `/api/admin/...` with the admin key the reader gives it (sent as a header)."""
    settings = current_settings()
    return render_template(
        "admin.html", models=settings.models, simulator_in_use=settings.simulator_in_use
    )
