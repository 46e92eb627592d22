"""Admin keys and what the console does with keys: who may use it, keys listed, made, changed.

An admin key (`flask keys create --admin`, or made in the console) may open
the console (`/admin`) and call its API (`/api/admin/...`); any other key gets
403 there, and no key 401. The console's key travels in the `Authorization`
header only, never in a URL or a cookie (a cookie would let another site's
form act with it: no CSRF surface). CHATPROXY_AUTH=open opens questions, not
the console: it still needs an admin key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from flask import g
from sqlalchemy import func, select, update

from chatproxy.access.keys import (
    Caller,
    forget_found_keys,
    header_key,
    issue_key,
    known_caller,
    revoke_key,
)
from chatproxy.access.quotas import LEDGER, Spent, usage_on
from chatproxy.config import Settings
from chatproxy.errors import BadRequest, Forbidden, NotFound, Unauthorized
from chatproxy.store.database import db
from chatproxy.store.models import AccessKey, as_utc, utcnow

BIGGEST = 2**63 - 1  # the largest limit the store keeps (64-bit integer columns)
MOST_USD = 1e12  # a daily dollar quota beyond this is a typing mistake
LIMITS = ("rpm", "tpm", "tokens_per_day", "usd_per_day")
CHANGEABLE = (*LIMITS, "models", "expires_at")


def authenticate_admin() -> Caller:
    """The current request's caller, who must hold an admin key; also kept in `g.caller`.

    Raises Unauthorized (401) `missing_api_key` without a key in the
    `Authorization` header (a `?key=` is refused too: the console never puts a
    key in a URL), `invalid_api_key` for one unknown, revoked or expired;
    Forbidden (403) `admin_key_required` for a key that is not an admin key.
    """
    key = header_key()
    if not key:
        raise Unauthorized(
            "The console's API needs an admin key in 'Authorization: Bearer cpk-...' "
            "(never in the URL). The owner makes one with 'flask keys create --admin'.",
            code="missing_api_key",
        )
    caller = known_caller(key)
    if not caller.admin:
        raise Forbidden(
            "This access key is not an admin key: the console is for the owner's admin keys.",
            code="admin_key_required",
        )
    g.caller = caller
    return caller


@dataclass(frozen=True)
class KeyFields:
    """A key's settings as a client sent them: only the fields it named (None clears one)."""

    values: dict[str, Any]


def read_key_fields(body: Mapping[str, Any], settings: Settings, *, creating: bool) -> KeyFields:
    """The limits, models and expiry in `body` (JSON), checked; with `creating`, also
    `name` and `admin`.

    `rpm`, `tpm`, `tokens_per_day`: whole numbers from 1 to 2^63-1;
    `usd_per_day`: a number above 0; `models`: a list of CHATPROXY_MODELS;
    `expires_at`: an ISO 8601 time (UTC unless it names a zone). Each may be
    null: no limit, every model, never. Raises BadRequest naming the field.
    """
    allowed = set(CHANGEABLE) | ({"name", "admin"} if creating else set())
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"Unknown field {unknown[0]!r}.", param=unknown[0])
    values: dict[str, Any] = {}
    for name in ("rpm", "tpm", "tokens_per_day"):
        if name in body:
            values[name] = _whole(body[name], name)
    if "usd_per_day" in body:
        values["usd_per_day"] = _dollars(body["usd_per_day"])
    if "models" in body:
        values["models"] = _models(body["models"], settings)
    if "expires_at" in body:
        values["expires_at"] = _moment(body["expires_at"])
    if creating:
        given = body.get("name")
        if not isinstance(given, str):
            raise BadRequest("`name` is required: who or what the key is for.", param="name")
        values["name"] = given
        admin = body.get("admin", False)
        if not isinstance(admin, bool):
            raise BadRequest("`admin` must be true or false.", param="admin")
        values["admin"] = admin
    return KeyFields(values)


def create_key(fields: KeyFields) -> tuple[dict[str, Any], str]:
    """Make a key from `fields` (`read_key_fields(..., creating=True)`): its object and the key.

    The key itself is returned this once and never stored. Raises BadRequest
    (param `name`) for a name that is empty, too long or taken.
    """
    values = dict(fields.values)
    name = values.pop("name")
    models = values.pop("models", None)
    key = issue_key(name, models=models, **values)
    row = db.session.scalars(select(AccessKey).where(AccessKey.name == name.strip())).one()
    return key_object(row, Spent()), key


def change_key(key_id: int, fields: KeyFields, today: date) -> dict[str, Any]:
    """Set the limits, models or expiry named in `fields` on the key `key_id`; its object
    with what it spent on `today`.

    Every worker applies them within KEY_CACHE_SECONDS (this one at once).
    Raises NotFound (404) `key_not_found`.
    """
    values = dict(fields.values)
    if "models" in values:
        values["models"] = ",".join(values["models"]) if values["models"] else None
    row = _row(key_id)
    if values:
        db.session.execute(update(AccessKey).where(AccessKey.id == key_id).values(**values))
        db.session.commit()
        forget_found_keys()
        db.session.refresh(row)
    return key_object(row, usage_on(row.name, today))


def revoke(key_id: int, today: date) -> dict[str, Any]:
    """Revoke the key `key_id` (a revoked one stays so); its object with what it spent on
    `today`. Raises NotFound (404) `key_not_found`."""
    row = _row(key_id)
    revoke_key(row.name)
    db.session.refresh(row)
    return key_object(row, usage_on(row.name, today))


def list_keys(today: date) -> list[dict[str, Any]]:
    """Every key (revoked and expired ones too), by name, with what it spent on `today` (UTC)."""
    spent = {
        name: Spent(int(r), int(p), int(c), float(usd))
        for name, r, p, c, usd in db.session.execute(
            select(
                LEDGER.c.key_name,
                func.sum(LEDGER.c.requests),
                func.sum(LEDGER.c.prompt_tokens),
                func.sum(LEDGER.c.completion_tokens),
                func.sum(LEDGER.c.cost),
            )
            .where(LEDGER.c.day == today)
            .group_by(LEDGER.c.key_name)
        )
    }
    rows = db.session.scalars(select(AccessKey).order_by(AccessKey.name))
    return [key_object(row, spent.get(row.name, Spent())) for row in rows]


def key_object(row: AccessKey, today: Spent) -> dict[str, Any]:
    """A key as the console's API shows it: never the key, only its first characters.

    `{"object": "access_key", "id", "name", "prefix", "admin", "rpm", "tpm",
    "tokens_per_day", "usd_per_day", "models" (list or null), "expires_at",
    "created_at", "last_used_at", "revoked_at" (ISO 8601 UTC or null), "state"
    ("active", "revoked" or "expired"), "today": {"requests", "prompt_tokens",
    "completion_tokens", "total_tokens", "cost"}}`.
    """
    state = "active"
    if row.revoked_at is not None:
        state = "revoked"
    elif row.expires_at is not None and as_utc(row.expires_at) <= utcnow():
        state = "expired"
    return {
        "object": "access_key",
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "admin": bool(row.admin),
        "rpm": row.rpm,
        "tpm": row.tpm,
        "tokens_per_day": row.tokens_per_day,
        "usd_per_day": row.usd_per_day,
        "models": row.models.split(",") if row.models else None,
        "expires_at": _iso(row.expires_at),
        "created_at": _iso(row.created_at),
        "last_used_at": _iso(row.last_used_at),
        "revoked_at": _iso(row.revoked_at),
        "state": state,
        "today": {
            "requests": today.requests,
            "prompt_tokens": today.prompt_tokens,
            "completion_tokens": today.completion_tokens,
            "total_tokens": today.tokens,
            "cost": round(today.cost, 10),
        },
    }


def _row(key_id: int) -> AccessKey:
    row = db.session.get(AccessKey, key_id) if 0 < key_id <= BIGGEST else None
    if row is None:
        raise NotFound(f"No access key has the id {key_id}.", code="key_not_found")
    return row


def _iso(moment: datetime | None) -> str | None:
    return as_utc(moment).isoformat().replace("+00:00", "Z") if moment else None


def _whole(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= BIGGEST:
        raise BadRequest(
            f"`{name}` must be a whole number from 1 to {BIGGEST}, or null.", param=name
        )
    return value


def _dollars(value: Any) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 < value <= MOST_USD
    ):
        raise BadRequest(
            f"`usd_per_day` must be a number above 0 and at most {MOST_USD:g}, or null.",
            param="usd_per_day",
        )
    return float(value)


def _models(value: Any, settings: Settings) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(m, str) for m in value):
        raise BadRequest("`models` must be a list of model names, or null for all.", param="models")
    unknown = [m for m in value if m not in settings.models]
    if unknown:
        raise BadRequest(
            f"Not in CHATPROXY_MODELS: {', '.join(unknown[:5])[:300]}.", param="models"
        )
    return list(dict.fromkeys(value))


def _moment(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        if not isinstance(value, str) or len(value) > 40:
            raise ValueError
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            "`expires_at` must be an ISO 8601 time such as 2027-06-30T00:00:00Z, or null.",
            param="expires_at",
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
