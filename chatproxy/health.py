"""`/healthz` and `/readyz`: is the process alive, and can it answer questions."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from chatproxy.state import current_settings, current_upstream

bp = Blueprint("health", __name__)


@bp.route("/healthz")
def healthz() -> Response:
    """Liveness: `{"status": "ok"}` whenever the process answers at all."""
    return jsonify(status="ok")


@bp.route("/readyz")
def readyz() -> tuple[Response, int]:
    """Readiness: 200 `{"status": "ready", ...}`, or 503 naming what is missing."""
    checks = {"upstream": "configured" if current_upstream().configured else "not configured"}
    ready = all(value == "configured" for value in checks.values())
    body = {
        "status": "ready" if ready else "not ready",
        "checks": checks,
        "simulator": current_settings().simulator_in_use,
    }
    return jsonify(body), 200 if ready else 503
