"""The application's per-process state: settings, personas and prices.

The upstream client is `chatproxy.upstream.client.current_upstream`; the caller
and what it may do, `chatproxy.access.keys.current_caller`.
"""

from __future__ import annotations

from flask import current_app

from chatproxy.config import Settings
from chatproxy.personas import Persona
from chatproxy.tokens import Price

SETTINGS = "chatproxy.settings"
PERSONAS = "chatproxy.personas"
PRICES = "chatproxy.prices"


def current_settings() -> Settings:
    """The settings the current app was created with."""
    return current_app.extensions[SETTINGS]


def current_personas() -> dict[str, Persona]:
    """The personas loaded at start-up, `{id: Persona}` sorted by id (may be empty)."""
    return current_app.extensions[PERSONAS]


def current_prices() -> dict[str, Price]:
    """USD per 1M tokens by model: the built-in table with CHATPROXY_PRICES_FILE over it."""
    return current_app.extensions[PRICES]
