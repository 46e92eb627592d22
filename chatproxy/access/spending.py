"""What was spent, from the usage ledger: per day by model or by key, and the top of today;
and the console's queries of it and of the request log, read and bounded.

The console's charts, its CSV download and `/api/admin/spending` all read
these sums of `usage_days` rows (`chatproxy.access.ledger`), so what they
show adds up to exactly what `flask usage` prints.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from chatproxy.access.quotas import LEDGER
from chatproxy.errors import BadRequest
from chatproxy.store.database import db
from chatproxy.store.request_log import Filters

GROUPS = {"model": LEDGER.c.model, "key": LEDGER.c.key_name}
MOST_DAYS = 366
MOST_TOP = 100
MOST_ROWS = 200  # request log rows per page
COUNTS = ("requests", "prompt_tokens", "completion_tokens")
CSV_HEADER = (
    "date",
    "key",
    "model",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
)


def read_days(value: str | None, default: int = 30) -> int:
    """`days=` of a query: 1 to MOST_DAYS (default 30). Raises BadRequest (param `days`)."""
    return _bounded(value, "days", default, MOST_DAYS)


def read_top(value: str | None, default: int = 10) -> int:
    """`limit=` of a query: 1 to MOST_TOP (default 10). Raises BadRequest (param `limit`)."""
    return _bounded(value, "limit", default, MOST_TOP)


def read_group(value: str | None) -> str:
    """`by=` of a query: `model` (the default) or `key`. Raises BadRequest (param `by`)."""
    if value in (None, ""):
        return "model"
    if value not in GROUPS:
        raise BadRequest("'by' must be model or key.", param="by")
    return value  # type: ignore[return-value]


def by_day(last: date, days: int, by: str) -> dict[str, Any]:
    """The ledger's sums per day and `by` (`model` or `key`), the `days` days up to `last`.

    `{"object": "spending", "by", "days", "dates": [ISO day, oldest first],
    "series": [{"name", "requests", "prompt_tokens", "completion_tokens",
    "total_tokens", "cost"}], "totals": {the same five sums}}`: each series
    field is a list, one number per date (0 on a day without use), the series
    by cost, then tokens, most first. Cost in USD.
    """
    first = last - timedelta(days=days - 1)
    dates = [first + timedelta(days=n) for n in range(days)]
    place = {day: n for n, day in enumerate(dates)}
    series: dict[str, dict[str, Any]] = {}
    for day, name, *sums in _sums(first, last, GROUPS[by]):
        requests, prompt, completion, cost = (
            int(sums[0]),
            int(sums[1]),
            int(sums[2]),
            float(sums[3]),
        )
        entry = series.get(name)
        if entry is None:
            entry = series[name] = {"name": name, **{f: [0] * days for f in _FIELDS}}
            entry["cost"] = [0.0] * days
        n = place[day]
        entry["requests"][n] += requests
        entry["prompt_tokens"][n] += prompt
        entry["completion_tokens"][n] += completion
        entry["total_tokens"][n] += prompt + completion
        entry["cost"][n] += cost
    for entry in series.values():
        entry["cost"] = [round(c, 10) for c in entry["cost"]]
    ordered = sorted(series.values(), key=lambda e: (-sum(e["cost"]), -sum(e["total_tokens"])))
    totals = {f: sum(sum(e[f]) for e in ordered) for f in _FIELDS}
    totals["cost"] = round(sum(sum(e["cost"]) for e in ordered), 10)
    return {
        "object": "spending",
        "by": by,
        "days": days,
        "dates": [day.isoformat() for day in dates],
        "series": ordered,
        "totals": totals,
    }


def top_of(day: date, limit: int) -> dict[str, Any]:
    """The keys and the models that spent most on `day`: `{"object": "spending.top",
    "date", "keys": [entry], "models": [entry]}`, an entry being `{"name", "requests",
    "prompt_tokens", "completion_tokens", "total_tokens", "cost"}`, by cost, then tokens."""
    tops = {}
    for by, plural in (("key", "keys"), ("model", "models")):
        entries = [
            _entry(name, requests, prompt, completion, cost)
            for _, name, requests, prompt, completion, cost in _sums(day, day, GROUPS[by])
        ]
        entries.sort(key=lambda e: (-e["cost"], -e["total_tokens"], e["name"]))
        tops[plural] = entries[:limit]
    return {"object": "spending.top", "date": day.isoformat(), **tops}


def csv_rows(last: date, days: int) -> Iterator[list[Any]]:
    """The ledger's rows of the `days` days up to `last` for a CSV file, header first:
    date, key, model, requests, prompt_tokens, completion_tokens, total_tokens, cost_usd."""
    yield list(CSV_HEADER)
    first = last - timedelta(days=days - 1)
    query = (
        select(
            LEDGER.c.day,
            LEDGER.c.key_name,
            LEDGER.c.model,
            LEDGER.c.requests,
            LEDGER.c.prompt_tokens,
            LEDGER.c.completion_tokens,
            LEDGER.c.cost,
        )
        .where(LEDGER.c.day >= first, LEDGER.c.day <= last)
        .order_by(LEDGER.c.day, LEDGER.c.key_name, LEDGER.c.model)
    )
    for day, key, model, requests, prompt, completion, cost in db.session.execute(query):
        total = prompt + completion
        yield [day.isoformat(), key, model, requests, prompt, completion, total, f"{cost:.6f}"]


_FIELDS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens")


def _sums(first: date, last: date, column: Any) -> Any:
    """(day, name, requests, prompt, completion, cost) summed per day and `column`."""
    return db.session.execute(
        select(
            LEDGER.c.day,
            column,
            func.sum(LEDGER.c.requests),
            func.sum(LEDGER.c.prompt_tokens),
            func.sum(LEDGER.c.completion_tokens),
            func.sum(LEDGER.c.cost),
        )
        .where(LEDGER.c.day >= first, LEDGER.c.day <= last)
        .group_by(LEDGER.c.day, column)
    )


def _entry(name: str, requests: int, prompt: int, completion: int, cost: float) -> dict[str, Any]:
    return {
        "name": name,
        "requests": int(requests),
        "prompt_tokens": int(prompt),
        "completion_tokens": int(completion),
        "total_tokens": int(prompt) + int(completion),
        "cost": round(float(cost), 10),
    }


def read_request_query(args: Mapping[str, str]) -> tuple[Filters, int, int | None]:
    """The request log's query: `key`, `model`, `status` (100-599), `since` and `until` (ISO
    8601, UTC unless zoned), `limit` (1-MOST_ROWS, default 50), `before` (a row's id).
    Raises BadRequest naming the parameter."""
    status = args.get("status")
    before = args.get("before")
    filters = Filters(
        key=_text(args.get("key"), "key"),
        model=_text(args.get("model"), "model"),
        status=_bounded(status, "status", 0, 599) if status else None,
        since=_time(args.get("since"), "since"),
        until=_time(args.get("until"), "until"),
    )
    if filters.status is not None and filters.status < 100:
        raise BadRequest("'status' must be an HTTP status, 100 to 599.", param="status")
    limit = _bounded(args.get("limit"), "limit", 50, MOST_ROWS)
    return filters, limit, _bounded(before, "before", 0, 2**63 - 1) if before else None


def _text(value: str | None, name: str) -> str | None:
    """A name to filter by: 1 to 200 printable characters (PostgreSQL refuses a NUL)."""
    if not value:
        return None
    if len(value) > 200 or not value.isprintable():
        raise BadRequest(f"'{name}' must be 1 to 200 printable characters.", param=name)
    return value


def _time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        if len(value) > 40:
            raise ValueError
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            f"'{name}' must be an ISO 8601 time, e.g. 2026-12-06T08:00:00Z.", param=name
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _bounded(value: str | None, name: str, default: int, most: int) -> int:
    if value is None or value == "":
        return default
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= most:
        raise BadRequest(f"'{name}' must be an integer from 1 to {most}.", param=name)
    return int(value)
