"""The OpenAPI document's console: `/admin` and the `/api/admin/...` paths and schemas.

Every `/api/admin` operation needs an admin key in the `Authorization` header
(never `?key=`), whatever CHATPROXY_AUTH says: 401 without one, 403
`admin_key_required` for an ordinary key (`chatproxy.access.admin`).
"""

from __future__ import annotations

from typing import Any

from chatproxy.access.admin import BIGGEST, MOST_USD
from chatproxy.access.keys import NAME_CHARS
from chatproxy.access.spending import MOST_DAYS, MOST_ROWS, MOST_TOP
from chatproxy.personas import ID_PATTERN, MAX_DESCRIPTION_CHARS, MAX_MESSAGES, MAX_NAME_CHARS
from chatproxy.personas import ROLES as PERSONA_ROLES
from chatproxy.store.traffic import MOST_HOURS
from chatproxy.web.openapi.components import JSON, Operations, body, errors, ok
from chatproxy.web.openapi.schemas import (
    BOOLEAN,
    COUNT,
    TIME,
    Bounds,
    Schema,
    array,
    integer,
    list_of,
    nullable,
    number,
    ref,
    shape,
    string,
)

ADMIN_SECURITY: list[dict[str, list[str]]] = [{"accessKey": []}]
LIMIT = nullable(integer(minimum=1, maximum=BIGGEST))


def admin_paths(ops: Operations) -> dict[str, Schema]:
    """`/admin` (the page) and `/api/admin/...`: keys and spending."""
    ops = ops.tagged("admin")

    def admin(op_id: str, summary: str, responses: Schema, **extra: Any) -> Schema:
        operation = ops.public(op_id, summary, {**responses, **errors(401, 403)}, **extra)
        operation["security"] = ADMIN_SECURITY
        return operation

    key_id = {
        "name": "key_id",
        "in": "path",
        "required": True,
        "schema": integer(minimum=0),
        "description": "The key's `id` (from the list); another: 404 `key_not_found`.",
    }
    days = {
        "name": "days",
        "in": "query",
        "schema": integer(minimum=1, maximum=MOST_DAYS, default=30),
        "description": "How many UTC days, up to today.",
    }
    by = {"name": "by", "in": "query", "schema": string(enum=["model", "key"], default="model")}
    top = {"name": "limit", "in": "query", "schema": integer(minimum=1, maximum=MOST_TOP)}
    key = ok("The key", {JSON: ref("AccessKey")})
    persona_id = {
        "name": "persona_id",
        "in": "path",
        "required": True,
        "schema": string(),
        "description": "A persona made in the console; a file's: 403 `persona_read_only`.",
    }
    csv = {"text/csv": string(description="date, key, model, requests, prompt_tokens, ...")}
    return {
        "/admin": {
            "get": ops.public(
                "console",
                "The owner's console (its data comes from /api/admin with an admin key)",
                {"200": ok("HTML", {"text/html": string()})},
            )
        },
        "/api/admin/keys": {
            "get": admin(
                "listKeys",
                "Every access key, with today's spend",
                {"200": ok("The keys, by name", {JSON: ref("AccessKeyList")})},
            ),
            "post": admin(
                "createKey",
                "Make an access key; the key is in the answer, this once",
                {"201": ok("The new key", {JSON: ref("NewAccessKey")}), **errors(400)},
                requestBody=body((JSON, ref("KeyCreate"))),
            ),
        },
        "/api/admin/keys/{key_id}": {
            "patch": admin(
                "changeKey",
                "Change a key's limits, models or expiry",
                {"200": key, **errors(400, 404)},
                parameters=[key_id],
                requestBody=body((JSON, ref("KeyChange"))),
            ),
            "delete": admin(
                "revokeKey",
                "Revoke a key (401 from now on)",
                {"200": key, **errors(404)},
                parameters=[key_id],
            ),
        },
        "/api/admin/spending": {
            "get": admin(
                "spending",
                "Tokens and cost per UTC day, by model or by key",
                {"200": ok("One list per model or key", {JSON: ref("Spending")}), **errors(400)},
                parameters=[days, by],
            )
        },
        "/api/admin/spending/top": {
            "get": admin(
                "spendingTop",
                "The keys and models that spent most today (UTC)",
                {"200": ok("By cost, most first", {JSON: ref("SpendingTop")}), **errors(400)},
                parameters=[top],
            )
        },
        "/api/admin/requests": {
            "get": admin(
                "listRequests",
                "The request log, newest first, filtered and paged",
                {"200": ok("A page of rows", {JSON: ref("RequestLogPage")}), **errors(400)},
                parameters=request_filters(),
            )
        },
        "/api/admin/personas": {
            "get": admin(
                "listAllPersonas",
                "Every persona: the files' (read-only) and those made in the console",
                {"200": ok("By id", {JSON: ref("AdminPersonaList")})},
            ),
            "post": admin(
                "createPersona",
                "Make a persona, checked by the rules of persona files",
                {"201": ok("The persona", {JSON: ref("AdminPersona")}), **errors(400)},
                requestBody=body((JSON, ref("PersonaCreate"))),
            ),
        },
        "/api/admin/personas/{persona_id}": {
            "put": admin(
                "replacePersona",
                "Replace a persona made in the console",
                {"200": ok("The persona", {JSON: ref("AdminPersona")}), **errors(400, 404)},
                parameters=[persona_id],
                requestBody=body((JSON, ref("PersonaBody"))),
            ),
            "delete": admin(
                "deletePersona",
                "Delete a persona made in the console",
                {"200": ok("Deleted", {JSON: ref("PersonaDeleted")}), **errors(404)},
                parameters=[persona_id],
            ),
        },
        "/api/admin/traffic": {
            "get": admin(
                "traffic",
                "Requests per hour by outcome, time percentiles, errors, upstreams, streams now",
                {"200": ok("The last hours, oldest first", {JSON: ref("Traffic")}), **errors(400)},
                parameters=[
                    {
                        "name": "hours",
                        "in": "query",
                        "schema": integer(minimum=1, maximum=MOST_HOURS, default=24),
                    }
                ],
            )
        },
        "/api/admin/spending.csv": {
            "get": admin(
                "spendingCsv",
                "The ledger's rows of the last `days` days, as CSV",
                {
                    "200": ok(
                        "An attachment",
                        csv,
                        headers={"Content-Disposition": ref("Content-Disposition", "headers")},
                    ),
                    **errors(400),
                },
                parameters=[days],
            )
        },
    }


def request_filters() -> list[Schema]:
    """The request log's query parameters."""
    text = string(maxLength=200)
    moment = string(format="date-time", description="ISO 8601, UTC unless it names a zone.")
    return [
        {"name": "key", "in": "query", "schema": text, "description": "A key's name."},
        {"name": "model", "in": "query", "schema": text},
        {"name": "status", "in": "query", "schema": integer(minimum=100, maximum=599)},
        {"name": "since", "in": "query", "schema": moment, "description": "From this time."},
        {"name": "until", "in": "query", "schema": moment, "description": "Before this time."},
        {"name": "limit", "in": "query", "schema": integer(minimum=1, maximum=MOST_ROWS)},
        {
            "name": "before",
            "in": "query",
            "schema": integer(minimum=0),
            "description": "Rows older than this row's id: the next page.",
        },
    ]


def admin_schemas(bounds: Bounds) -> dict[str, Schema]:
    """The console API's bodies: keys, their changes, spending."""
    models = nullable(array(string(enum=list(bounds.models)), minItems=1))
    usd = nullable(number(exclusiveMinimum=0, maximum=MOST_USD))
    changes: dict[str, Schema] = {
        "rpm": LIMIT,
        "tpm": LIMIT,
        "tokens_per_day": LIMIT,
        "usd_per_day": usd,
        "models": models,
        "expires_at": nullable(TIME),
    }
    sums: dict[str, Schema] = {
        "requests": COUNT,
        "prompt_tokens": COUNT,
        "completion_tokens": COUNT,
        "total_tokens": COUNT,
        "cost": number(minimum=0),
    }
    key: dict[str, Schema] = {
        "object": {"const": "access_key"},
        "id": integer(minimum=1),
        "name": string(),
        "prefix": string(description="The key's first characters: enough to tell it apart."),
        "admin": BOOLEAN,
        "rpm": nullable(COUNT),
        "tpm": nullable(COUNT),
        "tokens_per_day": nullable(COUNT),
        "usd_per_day": nullable(number(minimum=0)),
        "models": nullable(array(string())),
        "expires_at": nullable(TIME),
        "created_at": TIME,
        "last_used_at": nullable(TIME),
        "revoked_at": nullable(TIME),
        "state": string(enum=["active", "revoked", "expired"]),
        "today": shape(**sums),
    }
    name = string(minLength=1, maxLength=NAME_CHARS, description="Unique; not `open`.")
    hourly = array(nullable(number(minimum=0)))
    message = shape(role=string(enum=list(PERSONA_ROLES)), content=string())
    persona_body: Schema = {
        "type": "object",
        "required": ["messages"],
        "properties": {
            "name": string(maxLength=MAX_NAME_CHARS),
            "description": string(maxLength=MAX_DESCRIPTION_CHARS),
            "model": string(enum=list(bounds.models)),
            "messages": array(message, minItems=1, maxItems=MAX_MESSAGES),
        },
        "additionalProperties": False,
    }
    percentiles = shape(p50=hourly, p90=hourly, p99=hourly)
    return {
        "AccessKey": shape(**key),
        "AccessKeyList": list_of(ref("AccessKey")),
        "NewAccessKey": shape(**key, key=string(pattern="^cpk-", description="Shown once.")),
        "KeyCreate": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": name, "admin": BOOLEAN, **changes},
            "additionalProperties": False,
        },
        "KeyChange": {"type": "object", "properties": changes, "additionalProperties": False},
        "Spending": shape(
            object={"const": "spending"},
            by=string(enum=["model", "key"]),
            days=integer(minimum=1, maximum=MOST_DAYS),
            dates=array(string(format="date")),
            series=array(
                shape(
                    name=string(),
                    **{field: array(schema) for field, schema in sums.items()},
                )
            ),
            totals=shape(**sums),
        ),
        "RequestLogPage": shape(
            object={"const": "list"},
            data=array(
                shape(
                    object={"const": "request"},
                    id=integer(minimum=1),
                    at=TIME,
                    request_id=string(),
                    key=nullable(string()),
                    route=string(),
                    model=nullable(string()),
                    upstream=nullable(string()),
                    status=integer(minimum=100, maximum=599),
                    outcome=nullable(string()),
                    prompt_tokens=nullable(COUNT),
                    completion_tokens=nullable(COUNT),
                    reasoning_tokens=nullable(COUNT),
                    cost=nullable(number(minimum=0)),
                    ttft_ms=nullable(number(minimum=0)),
                    total_ms=number(minimum=0),
                )
            ),
            has_more=BOOLEAN,
        ),
        "PersonaBody": persona_body,
        "PersonaCreate": {
            **persona_body,
            "required": ["id", "messages"],
            "properties": {
                "id": string(pattern=f"^{ID_PATTERN.pattern}$"),
                **persona_body["properties"],
            },
        },
        "AdminPersona": shape(
            object={"const": "persona"},
            id=string(),
            name=string(),
            description=string(),
            model=nullable(string()),
            messages=array(message),
            source=string(enum=["file", "console"]),
        ),
        "AdminPersonaList": list_of(ref("AdminPersona")),
        "PersonaDeleted": shape(
            id=string(), object={"const": "persona.deleted"}, deleted={"const": True}
        ),
        "Traffic": shape(
            object={"const": "traffic"},
            hours=array(TIME),
            outcomes=array(shape(name=string(), requests=array(COUNT))),
            ttft_ms=percentiles,
            total_ms=percentiles,
            errors=array(shape(code=string(), status=integer(), requests=COUNT)),
            upstreams=array(
                shape(
                    name=string(),
                    requests=COUNT,
                    failures=COUNT,
                    failovers=COUNT,
                    set_aside_seconds=number(minimum=0),
                )
            ),
            streams_in_flight=integer(),
        ),
        "SpendingTop": shape(
            object={"const": "spending.top"},
            date=string(format="date"),
            keys=array(shape(name=string(), **sums)),
            models=array(shape(name=string(), **sums)),
        ),
    }
