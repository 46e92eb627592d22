"""`/healthz`, `/readyz` and `/metrics`: alive, able to answer, and how it has been doing."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy.exc import SQLAlchemyError

from chatproxy.access.quotas import LIMITER
from chatproxy.errors import Forbidden
from chatproxy.metrics import exposition
from chatproxy.state import current_settings
from chatproxy.store.database import db
from chatproxy.upstream.client import current_upstream

bp = Blueprint("health", __name__)


@bp.route("/healthz")
def healthz() -> Response:
    """Liveness: `{"status": "ok"}` whenever the process answers at all."""
    return jsonify(status="ok")


@bp.route("/readyz")
def readyz() -> tuple[Response, int]:
    """Readiness: 200 `{"status": "ready", "checks": {...}}`, or 503 naming what is not.

    `checks`: `upstream` ("configured" or "not configured"), `database`
    ("PostgreSQL reachable", "SQLite reachable", or what failed, e.g.
    "PostgreSQL unreachable: connection refused"), and, with REDIS_URL,
    `redis` ("reachable" or why not). Each probe is bounded by a short timeout.
    """
    settings = current_settings()
    checks = {"upstream": "configured" if current_upstream().configured else "not configured"}
    ok = current_upstream().configured
    database_ok, checks["database"] = _database()
    ok = ok and database_ok
    if settings.redis_url:
        redis_ok, checks["redis"] = _redis()
        ok = ok and redis_ok
    body = {
        "status": "ready" if ok else "not ready",
        "checks": checks,
        "simulator": settings.simulator_in_use,
    }
    return jsonify(body), 200 if ok else 503


@bp.route("/metrics")
def metrics() -> Response:
    """Prometheus metrics, summed across gunicorn's workers (`chatproxy.metrics`).

    Text exposition format 0.0.4. Names key names (in token counts), no keys.
    Served to a loopback client (`request.remote_addr`, as CHATPROXY_TRUSTED_PROXIES
    has it), or to one sending `Authorization: Bearer` and CHATPROXY_METRICS_TOKEN;
    Forbidden (403) to anyone else. The sample nginx site also lets only
    localhost through.
    """
    if not _may_read_metrics(current_settings().metrics_token):
        raise Forbidden(
            "Metrics are served to this host only, or with 'Authorization: Bearer' and "
            "the token the owner set (CHATPROXY_METRICS_TOKEN)."
        )
    body, content_type = exposition()
    return Response(body, content_type=content_type)


def _may_read_metrics(token: str | None) -> bool:
    """True for a loopback client, or for one that sends the metrics token (in constant time)."""
    if _is_loopback(request.remote_addr):
        return True
    if token is None:
        return False
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # Digests of equal length: the comparison tells nothing, not even the token's length.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        hashlib.sha256(given.strip().encode()).digest(), hashlib.sha256(token.encode()).digest()
    )


def _is_loopback(address: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and ::ffff:127.x; False for anything else, and for no
    address at all (gunicorn on a unix socket: a proxy in front must then name the client)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _database() -> tuple[bool, str]:
    name = "PostgreSQL" if db.engine.dialect.name == "postgresql" else "SQLite"
    try:
        with db.engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).splitlines()[0][:200]
        return False, f"{name} unreachable: {reason}"
    return True, f"{name} reachable"


def _redis() -> tuple[bool, str]:
    limiter = current_app.extensions[LIMITER]
    try:
        healthy = limiter.storage.check()
    except Exception as error:  # the storage's client raises its own errors
        return False, f"unreachable: {type(error).__name__}"
    return (True, "reachable") if healthy else (False, "unreachable")
