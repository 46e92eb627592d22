"""The `openai` SDK's retries, stopped at a deadline so they do not stack with a client's own.

The SDK retries a request (408, 409, 429, 5xx, timeouts, connection errors)
with exponential backoff, honouring Retry-After. A client of chatproxy that is
itself an SDK retries too, so without a bound an upstream answering 429 after
4.8 s kept such a client waiting 49 s before it saw the error. `DeadlineOpenAI`
is the SDK's client with one change: no retry starts once the request's
deadline (CHATPROXY_RETRY_DEADLINE seconds since it reached chatproxy, set by
`deadline`) has passed, or would pass while waiting for it; the error of the
last attempt is then raised as the SDK raises it. Failing over to another
upstream is not a retry and still happens.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpx2
import openai

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


def _too_late(wait: float) -> bool:
    at = _DEADLINE.get()
    return at is not None and time.monotonic() + wait >= at


class DeadlineOpenAI(openai.OpenAI):
    """The SDK's client, its retries bounded by the current `deadline`."""

    def _should_retry(self, response: httpx2.Response) -> bool:
        # A status error: the SDK retries only if this says so, and raises it otherwise.
        wait = self._parse_retry_after_header(response.headers) or 0.0
        return super()._should_retry(response) and not _too_late(wait)

    def _sleep_for_retry(
        self,
        *,
        retries_taken: int,
        max_retries: int,
        options: Any,
        response: httpx2.Response | None,
    ) -> None:
        if response is None:
            # A timeout or a connection error, being handled by the SDK right now.
            headers = None
            wait = self._calculate_retry_timeout(max_retries - retries_taken, options, headers)
            if _too_late(wait):
                failure = sys.exc_info()[1]
                try:
                    request = failure.request  # type: ignore[union-attr]
                except (AttributeError, RuntimeError):  # httpx's errors may have none
                    request = httpx2.Request("POST", str(self.base_url))
                if isinstance(failure, httpx2.TimeoutException):
                    raise openai.APITimeoutError(request=request) from failure
                raise openai.APIConnectionError(request=request) from failure
            time.sleep(wait)
            return
        super()._sleep_for_retry(
            retries_taken=retries_taken, max_retries=max_retries, options=options, response=response
        )
