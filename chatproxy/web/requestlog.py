"""One log line per request: its id, caller, model, status, tokens and time; never a key.
Also a row of the request log table for each request that reached the upstream or was
refused by a limit (`chatproxy.store.request_log`), written after the response.

The request id is the client's `X-Request-Id` when it is a plausible one (up
to 64 letters, digits, `.`, `_`, `-`), else a new one; it is sent back in
`X-Request-Id` and names the request in the log. A streamed answer is logged
when it ends, with its tokens. Plain text by default, one JSON object per line
with CHATPROXY_LOG_FORMAT=json. Questions and answers are not logged unless
CHATPROXY_LOG_CONTENT=1 (then the question, up to 2,000 characters). Control
characters in what the client sent (the path, the question) are escaped
(`chatproxy.logsafe`), in both formats.

The table's row (time, request id, key, route, model, upstream, status,
outcome, tokens, cost, time to first token, total time; never the question,
the answer or a key) is built when the response closes, after the last piece
of a stream, and only queued there: a background thread writes the rows in
batches. CHATPROXY_REQUEST_LOG_DAYS=0 keeps none.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, g, request

from chatproxy.access.keys import current_caller
from chatproxy.access.quotas import asks_upstream
from chatproxy.config import Settings
from chatproxy.logsafe import escape_controls
from chatproxy.metrics import REQUESTS
from chatproxy.store.database import db
from chatproxy.store.request_log import request_log
from chatproxy.upstream.asked import forget_asked, last_asked

REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
CONTENT_CHARS = 2000
log = logging.getLogger("chatproxy.requests")


def register_request_log(app: Flask, settings: Settings) -> None:
    """Give every request an id, send it back, and log the request once it has ended."""

    @app.before_request
    def start() -> None:
        given = request.headers.get("X-Request-Id", "")
        g.request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        g.request_started = time.perf_counter()
        g.request_at = time.time()
        g.request_log = {}
        forget_asked()

    @app.after_request
    def finish(response: Response) -> Response:
        request_id = g.get("request_id")
        if request_id is None:  # a request that failed before `start`
            return response
        response.headers["X-Request-Id"] = request_id
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        REQUESTS.labels(rule, str(response.status_code)).inc()
        fields = _fields(response, settings)
        details = g.request_log
        started = g.request_started
        keep = _row_keeper(response, rule, details, settings)
        # Called when the server closes the response: after the last piece of a stream.
        response.call_on_close(lambda: _write(fields, details, started, settings, keep))
        return response


def note(**details: Any) -> dict[str, Any]:
    """Add to what the current request's log line says (`model`, `usage`, `outcome`, ...).

    Returns the request's detail dict, which a stream's reader may fill in
    later from its own thread (its line is written when the stream ends).
    """
    entry: dict[str, Any] = g.get("request_log", {})
    entry.update(details)
    return entry


def _fields(response: Response, settings: Settings) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "request_id": g.request_id,
        "method": request.method,
        "path": request.path,  # never the query string: it may hold a key or a question
        "status": response.status_code,
        "key": current_caller().name if "caller" in g else None,
        "client": request.remote_addr,
    }
    # An upload's form is not read again for it (its files would be parsed to disk).
    if settings.log_content and request.blueprint != "media":
        question = request.values.get("input")
        if question:
            fields["input"] = question[:CONTENT_CHARS]
    return fields


RowKeeper = Callable[[Mapping[str, Any], float], None]


def _row_keeper(
    response: Response, rule: str, details: dict[str, Any], settings: Settings
) -> RowKeeper | None:
    """What queues the request's row of the request log table when it ends, or None for a
    request that neither reached the upstream nor was refused by a limit."""
    if not settings.request_log_days or not asks_upstream():
        return None
    status = response.status_code
    if "model" not in details and status != 429:
        return None  # refused before asking: bad input, no key, a model not allowed
    if status >= 400 and not details.get("outcome") and not response.is_streamed:
        error = (response.get_json(silent=True) or {}).get("error")
        details["outcome"] = error.get("code") if isinstance(error, dict) else None
    fixed = {
        "at": datetime.fromtimestamp(g.request_at, UTC).isoformat(),
        "request_id": g.request_id,
        "key_name": current_caller().name if "caller" in g else None,
        "route": rule[:100],
        "upstream": last_asked(),
        "status": status,
    }
    log_of_database = request_log(db.engine, settings.request_log_days)

    def keep(ended: Mapping[str, Any], started: float) -> None:
        now = time.perf_counter()
        given = ended.get("usage")
        usage: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
        details_of = usage.get("completion_tokens_details")
        first = ended.get("first_piece_at")
        model = ended.get("model")
        row = {
            **fixed,
            "model": str(model)[:200] if model else None,
            "outcome": ended.get("outcome") or ("ok" if status < 400 else None),
            "prompt_tokens": _count(usage.get("prompt_tokens")),
            "completion_tokens": _count(usage.get("completion_tokens")),
            "reasoning_tokens": _count(
                details_of.get("reasoning_tokens") if isinstance(details_of, Mapping) else None
            ),
            "cost": ended.get("cost"),
            "ttft_ms": round((first - started) * 1000, 1) if first else None,
            "total_ms": round((now - started) * 1000, 1),
        }
        log_of_database.add(row)

    return keep


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _write(
    fields: dict[str, Any],
    details: Mapping[str, Any],
    started: float,
    settings: Settings,
    keep: RowKeeper | None = None,
) -> None:
    if keep is not None:
        keep(details, started)
    usage = details.get("usage")
    line = {
        **fields,
        "model": details.get("model"),
        "prompt_tokens": usage.get("prompt_tokens") if isinstance(usage, Mapping) else None,
        "completion_tokens": usage.get("completion_tokens") if isinstance(usage, Mapping) else None,
        "outcome": details.get("outcome"),
        "ms": round((time.perf_counter() - started) * 1000, 1),
    }
    # The path, the question and the key's name are others' text: no line break of theirs
    # may start a line of the log, in either format.
    line = {
        name: escape_controls(value) if isinstance(value, str) else value
        for name, value in line.items()
    }
    if settings.log_format == "json":
        log.info(json.dumps(line, ensure_ascii=False, separators=(",", ":")))
        return
    shown = " ".join(f"{name}={value}" for name, value in line.items() if value is not None)
    log.info(shown)
