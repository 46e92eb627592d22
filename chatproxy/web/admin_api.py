"""`/api/admin/...`: the owner's console API (admin keys only): access keys, spending, the
request log, traffic and health, personas.

Every route needs an admin key in `Authorization: Bearer cpk-...`: none or an
unknown one is 401, an ordinary key 403 `admin_key_required`
(`chatproxy.access.admin`), whatever CHATPROXY_AUTH says. Errors have
OpenAI's shape. Described in `/openapi.json` (tag `admin`).
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from chatproxy.access.admin import (
    authenticate_admin,
    change_key,
    create_key,
    list_keys,
    read_key_fields,
    revoke,
)
from chatproxy.access.quotas import CLOCK
from chatproxy.access.spending import (
    by_day,
    csv_rows,
    read_days,
    read_group,
    read_request_query,
    read_top,
    top_of,
)
from chatproxy.errors import BadRequest, Forbidden, NotFound
from chatproxy.metrics import now_and_failovers
from chatproxy.personas import ID_PATTERN, Persona, PersonaFault
from chatproxy.state import current_personas, current_settings
from chatproxy.store.database import db
from chatproxy.store.personas import delete_persona, save_persona, stored_personas
from chatproxy.store.request_log import recent, row_object
from chatproxy.store.traffic import MOST_HOURS, traffic
from chatproxy.upstream.client import current_upstream
from chatproxy.web.conversations_api import attachment
from chatproxy.web.passthrough import read_body

bp = Blueprint("admin_api", __name__, url_prefix="/api/admin")


@bp.before_request
def only_admin_keys() -> None:
    """Refuse every request without an admin key (401 or 403), CORS preflights aside."""
    if request.method != "OPTIONS":
        authenticate_admin()


@bp.get("/keys")
def keys() -> Response:
    """Every access key, by name: `{"object": "list", "data": [access_key]}` (see
    `chatproxy.access.admin.key_object`), with what each spent today (UTC)."""
    return jsonify(object="list", data=list_keys(_today()))


@bp.post("/keys")
def create() -> Response:
    """Make a key: JSON `{"name", "admin", "rpm", "tpm", "tokens_per_day", "usd_per_day",
    "models", "expires_at"}` (all but `name` optional) → 201 and the access_key object
    with `key`, the key itself, shown this once. 400 for a bad field or a name taken."""
    fields = read_key_fields(read_body(request.get_data()), current_settings(), creating=True)
    made, key = create_key(fields)
    return jsonify({**made, "key": key}), 201  # type: ignore[return-value]


@bp.patch("/keys/<int:key_id>")
def change(key_id: int) -> Response:
    """Change a key's limits, models or expiry: JSON with any of `rpm`, `tpm`,
    `tokens_per_day`, `usd_per_day`, `models`, `expires_at` (null: none) → the key.
    404 `key_not_found`; every worker applies it within 5 seconds."""
    fields = read_key_fields(read_body(request.get_data()), current_settings(), creating=False)
    return jsonify(change_key(key_id, fields, _today()))


@bp.delete("/keys/<int:key_id>")
def remove(key_id: int) -> Response:
    """Revoke a key (401 from now on, within 5 seconds on other workers) → the key, revoked."""
    return jsonify(revoke(key_id, _today()))


@bp.get("/spending")
def spending() -> Response:
    """Tokens and cost per UTC day by model or key: `days` (1-366, default 30) up to today,
    `by` (`model` or `key`) → `chatproxy.access.spending.by_day`'s object."""
    days, by = read_days(request.args.get("days")), read_group(request.args.get("by"))
    return jsonify(by_day(_today(), days, by))


@bp.get("/spending/top")
def top() -> Response:
    """The keys and models that spent most today (UTC): `limit` (1-100, default 10) of each."""
    return jsonify(top_of(_today(), read_top(request.args.get("limit"))))


@bp.get("/spending.csv")
def spending_csv() -> Response:
    """The ledger's rows of the last `days` days (1-366, default 30) as a CSV attachment:
    date, key, model, requests, prompt_tokens, completion_tokens, total_tokens, cost_usd."""
    days = read_days(request.args.get("days"))
    today = _today()
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(csv_rows(today, days))
    response = Response(text.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = attachment(f"chatproxy-spending-{today}.csv")
    return response


@bp.get("/personas")
def personas() -> Response:
    """Every persona: `{"object": "list", "data": [persona]}`, a persona being `{"id", "name",
    "description", "model", "messages", "source"}`, `source` `file` (read-only: the files
    of CHATPROXY_PERSONAS_DIR) or `console` (made here, stored in the database)."""
    files = current_personas()
    data = [_persona(p, "file") for p in files.values()]
    data += [_persona(p, "console") for key, p in stored_personas().items() if key not in files]
    return jsonify(object="list", data=data)


@bp.post("/personas")
def create_persona() -> Response:
    """Make a persona: JSON `{"id", "name", "description", "model", "messages"}` (`id` and
    `messages` required), checked by the rules of persona files → 201 and the persona.
    400 for what the rules refuse or an id taken (by a file too). Offered on the Q&A page
    and in /api/personas by every worker within 5 seconds."""
    body = read_body(request.get_data())
    persona_id = body.pop("id", None)
    if not isinstance(persona_id, str):
        raise BadRequest("`id` is required: 1 to 64 letters, digits, '-' or '_'.", param="id")
    try:
        persona = save_persona(persona_id, body, replace=False)
    except PersonaFault as fault:
        raise BadRequest(f"This persona would be refused as a file: {fault}.") from None
    except FileExistsError:
        raise BadRequest(f"There is already a persona {persona_id!r}.", param="id") from None
    return jsonify(_persona(persona, "console")), 201  # type: ignore[return-value]


@bp.put("/personas/<persona_id>")
def replace_persona(persona_id: str) -> Response:
    """Replace a persona made in the console with JSON `{"name", "description", "model",
    "messages"}` → the persona. 403 `persona_read_only` for a file's, 404 for none."""
    _not_a_files(persona_id)
    try:
        persona = save_persona(persona_id, read_body(request.get_data()), replace=True)
    except PersonaFault as fault:
        raise BadRequest(f"This persona would be refused as a file: {fault}.") from None
    except KeyError:
        raise NotFound(f"No persona {persona_id!r}.", code="persona_not_found") from None
    return jsonify(_persona(persona, "console"))


@bp.delete("/personas/<persona_id>")
def remove_persona(persona_id: str) -> Response:
    """Delete a persona made in the console → `{"id", "object": "persona.deleted", "deleted":
    true}`. 403 `persona_read_only` for a file's, 404 `persona_not_found`."""
    _not_a_files(persona_id)
    # Never a made-up id to the database (PostgreSQL refuses a NUL): none has another shape.
    if not ID_PATTERN.fullmatch(persona_id) or not delete_persona(persona_id):
        raise NotFound(f"No persona {persona_id!r}.", code="persona_not_found")
    return jsonify(id=persona_id, object="persona.deleted", deleted=True)


def _not_a_files(persona_id: str) -> None:
    if persona_id in current_personas():
        raise Forbidden(
            f"The persona {persona_id!r} is a file's (personas/{persona_id}.json): "
            "change it there.",
            code="persona_read_only",
        )


def _persona(persona: Persona, source: str) -> dict[str, Any]:
    return {
        "object": "persona",
        "id": persona.id,
        "name": persona.name,
        "description": persona.description,
        "model": persona.model,
        "messages": list(persona.messages),
        "source": source,
    }


@bp.get("/traffic")
def traffic_now() -> Response:
    """Traffic and health over the last `hours` (1-168, default 24) whole UTC hours: the
    request log's sums per hour (`chatproxy.store.traffic`), with each upstream server's
    failovers (since gunicorn started) and whether it is set aside now (by the worker that
    answers), and the streams in flight now (`streams_in_flight`, every worker's)."""
    hours = _bounded_hours(request.args.get("hours"))
    summed = traffic(db.engine, datetime.now(UTC), hours)
    streams, failovers = now_and_failovers()
    set_aside = current_upstream().set_aside()
    seen = {entry["name"]: entry for entry in summed["upstreams"]}
    for name in set_aside:
        seen.setdefault(name, {"name": name, "requests": 0, "failures": 0})
    summed["upstreams"] = [
        {
            **entry,
            "failovers": failovers.get(name, 0),
            "set_aside_seconds": round(set_aside.get(name, 0.0), 1),
        }
        for name, entry in seen.items()
    ]
    return jsonify({**summed, "streams_in_flight": streams})


@bp.get("/requests")
def requests() -> Response:
    """The request log, newest first: `key`, `model`, `status`, `since` and `until` (ISO 8601,
    UTC) filter it; `limit` (1-200, default 50) rows older than the row `before` (an id) →
    `{"object": "list", "data": [request], "has_more"}` (see `store.request_log.row_object`)."""
    filters, limit, before = read_request_query(request.args)
    rows = recent(db.session, filters, limit + 1, before)
    data = [row_object(row) for row in rows[:limit]]
    return jsonify(object="list", data=data, has_more=len(rows) > limit)


def _bounded_hours(value: str | None) -> int:
    if not value:
        return 24
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MOST_HOURS:
        raise BadRequest(f"'hours' must be an integer from 1 to {MOST_HOURS}.", param="hours")
    return int(value)


def _today() -> date:
    return current_app.extensions[CLOCK]().date()  # type: ignore[no-any-return]
