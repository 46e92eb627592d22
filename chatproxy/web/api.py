"""`/api/...`: what the page and other clients may choose from (personas, models), and usage."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import func, select

from chatproxy.access.keys import current_caller, current_policy
from chatproxy.access.quotas import CLOCK, Spent
from chatproxy.store.database import db
from chatproxy.store.models import UsageDay
from chatproxy.store.personas import all_personas

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.route("/personas")
def personas() -> Response:
    """The personas `persona=` may name: the files', then those made in the console, by id.

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
        for persona in all_personas().values()
    ]
    return jsonify(object="list", data=data)


@bp.route("/models")
def models() -> Response:
    """The models `model=` may name (CHATPROXY_MODELS, or those of the caller's key), in order.

    `{"object": "list", "data": [{"id": str, "default": bool}]}`; exactly one
    is the default (CHATPROXY_MODEL). Legacy completion models, which answer
    only `/v1/completions`, are left out.
    """
    settings = current_policy()
    data = [{"id": model, "default": model == settings.model} for model in settings.chat_models]
    return jsonify(object="list", data=data)


@bp.get("/usage")
def usage() -> Response:
    """The caller's own usage: today's and the last 30 UTC days', with its key's limits.

    `{"key": {"name", "rpm", "tpm", "tokens_per_day", "usd_per_day", "models"},
    "today": day, "days": [day, ...]}`, a day being `{"date", "requests",
    "prompt_tokens", "completion_tokens", "total_tokens", "cost"}` (USD), newest
    first. While CHATPROXY_AUTH=open, `key.name` is `open` and the usage is everyone's.
    """
    caller = current_caller()
    today = current_app.extensions[CLOCK]().date()
    rows = db.session.execute(
        select(
            UsageDay.day,
            func.sum(UsageDay.requests),
            func.sum(UsageDay.prompt_tokens),
            func.sum(UsageDay.completion_tokens),
            func.sum(UsageDay.cost),
        )
        .where(UsageDay.key_name == caller.name, UsageDay.day > today - timedelta(days=30))
        .group_by(UsageDay.day)
        .order_by(UsageDay.day.desc())
    )
    days = [_day(day, Spent(int(r), int(p), int(c), float(usd))) for day, r, p, c, usd in rows]
    today_entry = next((d for d in days if d["date"] == today.isoformat()), None)
    key = {
        "name": caller.name,
        "rpm": caller.rpm,
        "tpm": caller.tpm,
        "tokens_per_day": caller.tokens_per_day,
        "usd_per_day": caller.usd_per_day,
        "models": list(caller.models) if caller.models is not None else None,
    }
    return jsonify(key=key, today=today_entry or _day(today, Spent()), days=days)


def _day(day: date, spent: Spent) -> dict[str, Any]:
    return {
        "date": day.isoformat(),
        "requests": spent.requests,
        "prompt_tokens": spent.prompt_tokens,
        "completion_tokens": spent.completion_tokens,
        "total_tokens": spent.tokens,
        "cost": round(spent.cost, 10),
    }
