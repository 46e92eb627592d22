"""Prometheus metrics (prometheus-client), right across gunicorn's workers.

Under gunicorn, `PROMETHEUS_MULTIPROC_DIR` names a folder where every worker
writes its values (gunicorn.conf.py makes and empties it at start, and marks
a worker dead when it exits); `/metrics` adds them up. Without it (one
process: the development server, tests), the process's own registry is read.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter(
    "chatproxy_requests", "Requests answered, by route and HTTP status.", ["route", "status"]
)
UPSTREAM_LATENCY = Histogram(
    "chatproxy_upstream_latency_seconds",
    "Seconds from sending a request upstream until its answer starts (status and headers).",
    ["path"],
    buckets=LATENCY_BUCKETS,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "chatproxy_time_to_first_token_seconds",
    "Seconds from sending a streamed request upstream to its first piece of answer.",
    ["path"],
    buckets=LATENCY_BUCKETS,
)
TOKENS = Counter(
    "chatproxy_tokens",
    "Tokens the upstream reported, by access key, model and kind (prompt or completion).",
    ["key", "model", "kind"],
)
STREAMS_IN_FLIGHT = Gauge(
    "chatproxy_streams_in_flight",
    "Streamed answers being sent right now.",
    multiprocess_mode="livesum",
)
UPSTREAM_ERRORS = Counter(
    "chatproxy_upstream_errors",
    "Upstream failures, by kind (the error code chatproxy answers with).",
    ["code"],
)

UPSTREAM_FAILOVERS = Counter(
    "chatproxy_upstream_failovers",
    "Requests passed on to the next upstream server, by the server that failed.",
    ["upstream"],
)


def exposition() -> tuple[bytes, str]:
    """The current metrics in Prometheus's text format, and its content type."""
    return generate_latest(_registry()), CONTENT_TYPE_LATEST


def now_and_failovers() -> tuple[int, dict[str, int]]:
    """Streams in flight now, and failovers so far by upstream server, summed across workers
    (since gunicorn started), as `/metrics` shows them."""
    streams, failovers = 0, dict[str, int]()
    for family in _registry().collect():
        for sample in family.samples:
            if sample.name == "chatproxy_streams_in_flight":
                streams += int(sample.value)
            elif sample.name == "chatproxy_upstream_failovers_total":
                name = sample.labels["upstream"]
                failovers[name] = failovers.get(name, 0) + int(sample.value)
    return streams, failovers


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY
