"""A week of traffic for the console, made through the real API: the openai SDK, over HTTP,
against a chatproxy whose upstream is the simulator.

The ledger dates each answer by the app's clock (`app.extensions[CLOCK]`), so
the week is asked one day at a time with the clock set to that day: every
row of it is written by chatproxy itself, as a real day's would be. Key
names include hostile ones (HTML and script), which the console must show
as text. Used by tests/test_console_browser.py and bench/console_week.py.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import openai
from flask import Flask

from chatproxy.access.keys import issue_key
from chatproxy.access.quotas import CLOCK, utc_clock

# Names a careless page would run as HTML; `__pwned` is set if one ever does.
HOSTILE_NAMES = (
    '<img src=x onerror="window.__pwned=1">',
    '"><script>window.__pwned=1</script>',
)
MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini")


@dataclass
class Week:
    """What was made: the admin key, and every other key by name."""

    admin_name: str
    admin_key: str
    keys: dict[str, str] = field(default_factory=dict)


def seed_week(app: Flask, base_url: str, days: int = 7, suffix: str | None = None) -> Week:
    """Make an admin key and four ordinary keys (two with hostile names), and ask questions
    with them on each of the last `days` UTC days (a few per key, model and day, more on
    weekdays, some streamed): about 10 per key and day; today also three the upstream fails."""
    suffix = suffix or uuid.uuid4().hex[:6]
    with app.app_context():
        admin_name = f"owner-{suffix}"
        week = Week(admin_name, issue_key(admin_name, admin=True))
        names = [
            f"alice-{suffix}",
            f"build-bot-{suffix}",
            *(f"{n} {suffix}" for n in HOSTILE_NAMES),
        ]
        for n, name in enumerate(names):
            week.keys[name] = issue_key(name, tokens_per_day=20_000 + 15_000 * n, usd_per_day=0.5)
    now = datetime.now(UTC)
    try:
        for back in range(days - 1, -1, -1):
            moment = now - timedelta(days=back)
            app.extensions[CLOCK] = _fixed(moment)
            for n, key in enumerate(week.keys.values()):
                for m, model in enumerate(MODELS):
                    for ask in range(_questions(moment, n, m)):
                        _ask(base_url, key, model, stream=ask % 2 == 1, words=20 + 15 * n)
        # Today some failures too: the upstream erring, and refusing for a while.
        key = next(iter(week.keys.values()))
        for fault in ("server_error", "server_error", "rate_limit"):
            with contextlib.suppress(openai.APIStatusError):  # the error is the point
                _ask(base_url, key, MODELS[0], stream=False, words=5, fault=fault)
    finally:
        app.extensions[CLOCK] = utc_clock
    return week


def _questions(day: datetime, key: int, model: int) -> int:
    """How many questions a key asks of a model on `day`: a shape that differs by day."""
    weekday = day.weekday() < 5
    return max(0, (3 if weekday else 1) + (day.day + key) % 3 - model)


def _fixed(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def _ask(
    base_url: str, key: str, model: str, stream: bool, words: int, fault: str | None = None
) -> None:
    client = openai.OpenAI(api_key=key, base_url=f"{base_url}/v1", max_retries=0)
    directive = f" [[sim: fault={fault}]]" if fault else ""
    question = [{"role": "user", "content": f"Tell me about the week in {words} words{directive}"}]
    if stream:
        chunks = client.chat.completions.create(
            model=model, messages=question, stream=True, max_tokens=words * 3
        )
        for _ in chunks:
            pass
    else:
        client.chat.completions.create(model=model, messages=question, max_tokens=words * 3)
