"""Limits and usage: requests per minute (Flask-Limiter), token and USD quotas, the usage ledger.

- Requests per minute per access key (`--rpm`) and per client address
  (CHATPROXY_IP_RPM), counted in a moving window by Flask-Limiter.
- Tokens per minute (`--tpm`), counted from the usage the upstream reports in
  a fixed one-minute window of the `limits` library (the one Flask-Limiter
  uses), on the same storage.
- Tokens and USD per UTC day (`--tokens-per-day`, `--usd-per-day`), read from
  the usage ledger (`UsageDay` rows in the database), which every answer adds
  to. A key over a quota gets 429 until the window or the day turns.

Storage: memory (one process) or Redis (REDIS_URL), shared by workers and hosts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from flask import Flask, Response, current_app, request
from flask_limiter import Limiter, RateLimitExceeded
from limits import RateLimitItemPerMinute
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import bindparam, func, select

from chatproxy.access.keys import Caller, current_caller
from chatproxy.config import Settings
from chatproxy.errors import RateLimited, error_response
from chatproxy.logsafe import Throttle
from chatproxy.store.database import db
from chatproxy.store.models import UsageDay

LIMITER = "chatproxy.limiter"
TOKEN_LIMITER = "chatproxy.token_limiter"
CLOCK = "chatproxy.clock"
LEDGER = UsageDay.__table__

Clock = Callable[[], datetime]
WARN_EVERY = 60.0  # seconds between two warnings that Redis is down
_window_down = Throttle(WARN_EVERY)  # each failure of the rate-limit storage, by its words
log = logging.getLogger(__name__)


def utc_clock() -> datetime:
    """Now, in UTC: the clock the quotas and the ledger use unless a test sets another."""
    return datetime.now(UTC)


def init_limits(app: Flask, settings: Settings, blueprints: list[Any]) -> None:
    """Set up Flask-Limiter on `app` for `blueprints` (the API), the token limiter and the clock.

    Flask-Limiter's own before-request check runs after chatproxy's access check,
    which must be registered first (it names the caller whose limit applies).
    """
    app.config.setdefault("RATELIMIT_STORAGE_URI", settings.redis_url or "memory://")
    app.config.setdefault("RATELIMIT_STRATEGY", "moving-window")
    # Flask-Limiter would add X-RateLimit-* to every answer at the cost of another
    # round trip to Redis; they are sent on the 429s (`_rate_limited`) instead.
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", False)
    # Redis down: answer rather than refuse everyone (limits then do not hold).
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
    limiter_log = logging.getLogger("flask-limiter")
    if not any(isinstance(f, _SwallowedError) for f in limiter_log.filters):
        limiter_log.addFilter(_SwallowedError())
    limiter = _Limiter(key_func=_client_address, app=app)
    limiter.per_address = bool(settings.ip_rpm)
    per_key = limiter.shared_limit(
        _key_rpm,
        scope="key",
        key_func=lambda: "key:" + current_caller().name,
        exempt_when=lambda: current_caller().rpm is None or not asks_upstream(),
        error_message=_key_rpm_message,
    )
    per_address = (
        limiter.shared_limit(
            f"{settings.ip_rpm}/minute",
            scope="address",
            error_message=f"Too many requests from this address: {settings.ip_rpm} per minute.",
        )
        if settings.ip_rpm
        else None
    )
    # A CORS preflight carries no key and asks nothing: no limit counts it.
    limiter.request_filter(lambda: request.method == "OPTIONS")
    for blueprint in blueprints:
        per_key(blueprint)
        if per_address is not None:
            per_address(blueprint)
    app.extensions[LIMITER] = limiter
    app.extensions[TOKEN_LIMITER] = FixedWindowRateLimiter(limiter.storage)
    app.extensions[CLOCK] = utc_clock
    app.register_error_handler(RateLimitExceeded, _rate_limited)


class _Limiter(Limiter):
    """Flask-Limiter, skipped for a request that no limit counts.

    Its check costs about 0.15 ms even when it finds nothing to apply (it
    gathers and filters the limits of the blueprint), which was a tenth of
    chatproxy's own work on a `/v1` request of a key without limits.
    """

    per_address = False  # CHATPROXY_IP_RPM is set: every request counts

    def _check_request_limit(
        self, callable_name: str | None = None, in_middleware: bool = True
    ) -> None:
        if not self.per_address and (current_caller().rpm is None or not asks_upstream()):
            return
        super()._check_request_limit(callable_name, in_middleware)


# The blueprints whose every request may call the upstream: /callChatGPT and /v1 (the
# Responses API's routes and the audio and image routes are blueprints of their own).
_ASKING = frozenset({"ask", "v1", "responses", "media"})


def asks_upstream() -> bool:
    """True when the current request may call the upstream: those a key's limits count.

    `/callChatGPT`, `/v1/...` and Regenerate. The page's own requests (the
    conversation list, a conversation, usage, models, exports) are not
    counted, so a key over a limit still sees its conversations and usage.
    """
    return request.blueprint in _ASKING or request.endpoint == "conversations.regenerate"


def _client_address() -> str:
    # ProxyFix (CHATPROXY_TRUSTED_PROXIES) sets remote_addr from X-Forwarded-For.
    return request.remote_addr or "unknown"


def _key_rpm() -> str:
    # Read even for a key without a limit, which `exempt_when` then lets pass.
    return f"{current_caller().rpm or 1}/minute"


def _key_rpm_message() -> str:
    return f"Too many requests for this access key: {current_caller().rpm} per minute."


def _rate_limited(exc: RateLimitExceeded) -> Response:
    """Flask-Limiter's 429 in OpenAI's error shape, with Retry-After and X-RateLimit-*."""
    message = str(exc.description or "Too many requests.")
    error = RateLimited(f"{message} Try again later.", code="rate_limit_exceeded")
    current = current_app.extensions[LIMITER].current_limit
    if current is None:
        return error_response(error)
    wait = math.ceil(current.reset_at - utc_clock().timestamp())
    error.retry_after = min(max(1, wait), current.limit.get_expiry())
    response = error_response(error)
    response.headers["X-RateLimit-Limit"] = str(current.limit.amount)
    response.headers["X-RateLimit-Remaining"] = str(max(0, current.remaining))
    response.headers["X-RateLimit-Reset"] = str(math.ceil(current.reset_at))
    return response


def check_quotas(caller: Caller) -> None:
    """Refuse (429 with Retry-After) a caller over its tokens-per-minute or daily quota.

    Raises RateLimited with code `tokens_per_minute_exceeded`,
    `tokens_per_day_exceeded` or `usd_per_day_exceeded`.
    """
    if caller.tpm is not None:
        limiter: FixedWindowRateLimiter = current_app.extensions[TOKEN_LIMITER]
        item = RateLimitItemPerMinute(caller.tpm)
        try:
            full = not limiter.test(item, "tpm", caller.name)
            reset = limiter.get_window_stats(item, "tpm", caller.name).reset_time if full else 0
        except Exception as error:  # the storage's client raises its own errors
            minute_window_down(error)
            full = False
        if full:
            raise RateLimited(
                f"This access key used its {caller.tpm:,} tokens for this minute.",
                code="tokens_per_minute_exceeded",
                retry_after=max(1, math.ceil(reset - utc_clock().timestamp())),
            )
    if caller.tokens_per_day is None and caller.usd_per_day is None:
        return
    now = current_app.extensions[CLOCK]()
    spent = usage_on(caller.name, now.date())
    until_tomorrow = seconds_to_midnight(now)
    if caller.tokens_per_day is not None and spent.tokens >= caller.tokens_per_day:
        raise RateLimited(
            f"This access key used its {caller.tokens_per_day:,} tokens for today (UTC).",
            code="tokens_per_day_exceeded",
            retry_after=until_tomorrow,
        )
    if caller.usd_per_day is not None and spent.cost >= caller.usd_per_day:
        raise RateLimited(
            f"This access key spent its ${caller.usd_per_day:g} for today (UTC).",
            code="usd_per_day_exceeded",
            retry_after=until_tomorrow,
        )


def minute_window_down(error: BaseException) -> None:
    """Note that the tokens-per-minute window's storage (Redis) failed; the request goes on.

    Limits then degrade as Flask-Limiter's do (RATELIMIT_SWALLOW_ERRORS): answered
    without the per-minute limits. Logged at most once a minute per process and
    failure (the storage's address is in the error's words).
    """
    if _window_down.allows(f"{type(error).__name__}: {error}"[:300]):
        log.warning(
            "the rate-limit storage (REDIS_URL) is unreachable (%s): answering without "
            "the per-minute limits until it is back",
            type(error).__name__,
        )


class _SwallowedError(logging.Filter):
    """Flask-Limiter's "Swallowing error" records become `minute_window_down`'s warning.

    Flask-Limiter logs every request it lets through while its storage is away
    at ERROR, with a traceback; here that is one warning a minute, without one.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and "Swallowing error" in str(record.msg):
            minute_window_down(error)
            return False
        return True


def seconds_to_midnight(now: datetime) -> int:
    """Whole seconds from `now` to the next midnight (UTC), at least 1."""
    tomorrow = datetime.combine(now.date() + timedelta(days=1), time(), tzinfo=UTC)
    return max(1, math.ceil((tomorrow - now).total_seconds()))


@dataclass
class Spent:
    """A key's usage over some days: requests, tokens and USD."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0

    @property
    def tokens(self) -> int:
        """Prompt and completion tokens together."""
        return self.prompt_tokens + self.completion_tokens


# Built once, with its values bound at each call: it runs before every question of a
# key with a daily quota, and a statement built anew costs more than the query.
SPENT_ON = select(
    func.coalesce(func.sum(LEDGER.c.requests), 0).label("requests"),
    func.coalesce(func.sum(LEDGER.c.prompt_tokens), 0).label("prompt_tokens"),
    func.coalesce(func.sum(LEDGER.c.completion_tokens), 0).label("completion_tokens"),
    func.coalesce(func.sum(LEDGER.c.cost), 0.0).label("cost"),
).where(LEDGER.c.key_name == bindparam("key_name"), LEDGER.c.day == bindparam("day"))


def usage_on(key_name: str, day: date) -> Spent:
    """What `key_name` used on `day` (UTC), summed over models, from the ledger."""
    with db.engine.connect() as connection:
        row = connection.execute(SPENT_ON, {"key_name": key_name, "day": day}).one()
    return Spent(int(row[0]), int(row[1]), int(row[2]), float(row[3]))
