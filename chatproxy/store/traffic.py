"""The request log summed per hour: requests by outcome, time percentiles, errors, upstreams.

Read from the request log table's rows of the last hours (at most MOST_HOURS),
summed here rather than in SQL: percentiles and hour buckets are written
differently in SQLite and PostgreSQL, and a window of hours of one service's
rows fits in memory (the rows are read a batch at a time).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select

from chatproxy.store.models import RequestLogRow, as_utc

TABLE = RequestLogRow.__table__
MOST_HOURS = 168
PERCENTILES = (50, 90, 99)


def traffic(engine: Engine, now: datetime, hours: int) -> dict[str, Any]:
    """The last `hours` whole hours up to `now` (UTC), from the request log.

    `{"object": "traffic", "hours": [ISO hour, oldest first], "outcomes":
    [{"name", "requests": [per hour]}], "ttft_ms": {"p50": [...], "p90": [...],
    "p99": [...]}, "total_ms": {the same}, "errors": [{"code", "status",
    "requests"}], "upstreams": [{"name", "requests", "failures"}]}`: a
    percentile is null for an hour without such requests; `failures` are the
    upstream's 5xx answers; errors and upstreams over the whole window, most
    first.
    """
    last = now.replace(minute=0, second=0, microsecond=0)
    first = last - timedelta(hours=hours - 1)
    place = {first + timedelta(hours=n): n for n in range(hours)}
    outcomes: dict[str, list[int]] = defaultdict(lambda: [0] * hours)
    ttft: list[list[float]] = [[] for _ in range(hours)]
    total: list[list[float]] = [[] for _ in range(hours)]
    errors: Counter[tuple[str, int]] = Counter()
    upstreams: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    query = select(
        TABLE.c.at,
        TABLE.c.status,
        TABLE.c.outcome,
        TABLE.c.upstream,
        TABLE.c.ttft_ms,
        TABLE.c.total_ms,
    ).where(TABLE.c.at >= first)
    with engine.connect() as connection:
        for at, status, outcome, upstream, first_ms, total_ms in connection.execute(
            query.execution_options(yield_per=2000)
        ):
            hour = as_utc(at).replace(minute=0, second=0, microsecond=0)
            n = place.get(hour)
            if n is None:
                continue  # after `now`
            name = outcome or ("ok" if status < 400 else str(status))
            outcomes[name][n] += 1
            total[n].append(total_ms)
            if first_ms is not None:
                ttft[n].append(first_ms)
            if status >= 400:
                errors[(name, status)] += 1
            if upstream:
                upstreams[upstream][0] += 1
                upstreams[upstream][1] += int(status >= 500)
    ordered = sorted(outcomes.items(), key=lambda item: -sum(item[1]))
    return {
        "object": "traffic",
        "hours": [hour.isoformat().replace("+00:00", "Z") for hour in place],
        "outcomes": [{"name": name, "requests": counts} for name, counts in ordered],
        "ttft_ms": _percentiles(ttft),
        "total_ms": _percentiles(total),
        "errors": [
            {"code": code, "status": status, "requests": count}
            for (code, status), count in errors.most_common()
        ],
        "upstreams": [
            {"name": name, "requests": counts[0], "failures": counts[1]}
            for name, counts in sorted(upstreams.items(), key=lambda item: -item[1][0])
        ],
    }


def _percentiles(per_hour: list[list[float]]) -> dict[str, list[float | None]]:
    """p50, p90 and p99 of each hour's values (nearest rank), None for an empty hour."""
    result: dict[str, list[float | None]] = {f"p{p}": [] for p in PERCENTILES}
    for values in per_hour:
        values.sort()
        for p in PERCENTILES:
            rank = math.ceil(p / 100 * len(values)) - 1
            result[f"p{p}"].append(round(values[max(rank, 0)], 1) if values else None)
    return result
