"""One log line per request: its id, caller, model, status, tokens and time; never a key.

The request id is the client's `X-Request-Id` when it is a plausible one (up
to 64 letters, digits, `.`, `_`, `-`), else a new one; it is sent back in
`X-Request-Id` and names the request in the log. A streamed answer is logged
when it ends, with its tokens. Plain text by default, one JSON object per line
with CHATPROXY_LOG_FORMAT=json. Questions and answers are not logged unless
CHATPROXY_LOG_CONTENT=1 (then the question, up to 2,000 characters). Control
characters in what the client sent (the path, the question) are escaped
(`chatproxy.logsafe`), in both formats.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, g, request

from chatproxy.access.keys import current_caller
from chatproxy.config import Settings
from chatproxy.logsafe import escape_controls
from chatproxy.metrics import REQUESTS

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
        g.request_log = {}

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
        # Called when the server closes the response: after the last piece of a stream.
        response.call_on_close(lambda: _write(fields, details, started, settings))
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


def _write(
    fields: dict[str, Any], details: Mapping[str, Any], started: float, settings: Settings
) -> None:
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
