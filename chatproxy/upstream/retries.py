"""Retries as the `openai` SDK makes them, stopped at a deadline so a client's own do not stack.

The SDK's policy (its `_base_client`), which the lean client
(`chatproxy.upstream.lean`) follows and the SDK fallback
(`chatproxy.upstream.sdk`) keeps: a request is retried up to
CHATPROXY_MAX_RETRIES times after a connection error, a timeout, or an answer
408, 409, 429 or 5xx, unless the answer says `x-should-retry: false` (and
always when it says `true`). The wait is the answer's `retry-after-ms` or
`Retry-After` (seconds or an HTTP date) when that is over 0 and at most 60 s,
else 0.5 s × 2^n (n retries so far) capped at 8 s, less up to a quarter at
random.

A client of chatproxy that is itself an SDK retries too, so without a bound an
upstream answering 429 after 4.8 s kept such a client waiting 49 s before it
saw the error. So no retry starts once the request's deadline
(CHATPROXY_RETRY_DEADLINE seconds since it reached chatproxy, set by
`deadline`) has passed, or would pass while waiting for it; the error of the
last attempt is then raised. Failing over to another upstream is not a retry
and still happens.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from email.utils import mktime_tz, parsedate_tz

INITIAL_RETRY_DELAY = 0.5  # seconds, the SDK's
MAX_RETRY_DELAY = 8.0  # seconds, the SDK's
LONGEST_RETRY_AFTER = 60.0  # seconds: a longer Retry-After is not waited for
RETRIED_STATUSES = (408, 409, 429)  # and every 5xx

# When retries stop for the request being sent (time.monotonic()); None: no deadline.
_DEADLINE: ContextVar[float | None] = ContextVar("chatproxy_retry_deadline", default=None)


@contextmanager
def deadline(at: float) -> Iterator[None]:
    """Within the block, no retry starts after `at` (a `time.monotonic()` value)."""
    token = _DEADLINE.set(at)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def too_late(wait: float) -> bool:
    """True when a retry after waiting `wait` seconds would start past the current deadline."""
    at = _DEADLINE.get()
    return at is not None and time.monotonic() + wait >= at


def status_retried(status: int, headers: Mapping[str, str]) -> bool:
    """True when an answer with HTTP `status` is worth asking again (`x-should-retry` first)."""
    said = headers.get("x-should-retry")
    if said == "true":
        return True
    if said == "false":
        return False
    return status in RETRIED_STATUSES or status >= 500


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the answer asks to wait (`retry-after-ms`, or `Retry-After` in seconds or as
    an HTTP date), or None when it asks nothing readable."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return float(millis) / 1000
        except ValueError:
            pass
    said = headers.get("retry-after")
    if said is None:
        return None
    try:
        return float(said)
    except ValueError:
        date = parsedate_tz(said)
        return None if date is None else mktime_tz(date) - time.time()


def retry_wait(retries_taken: int, headers: Mapping[str, str] | None) -> float:
    """Seconds to wait before retry number `retries_taken + 1`, as the SDK waits."""
    asked = retry_after(headers)
    if asked is not None and 0 < asked <= LONGEST_RETRY_AFTER:
        return asked
    backoff = min(INITIAL_RETRY_DELAY * 2.0**retries_taken, MAX_RETRY_DELAY)
    return max(backoff * (1 - 0.25 * random.random()), 0.0)
