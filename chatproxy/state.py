"""The application's per-process state: settings, personas, prices and the upstream client."""

from __future__ import annotations

from flask import current_app

from chatproxy.config import Settings
from chatproxy.personas import Persona
from chatproxy.tokens import Price
from chatproxy.upstream.client import Upstream

SETTINGS = "chatproxy.settings"
PERSONAS = "chatproxy.personas"
UPSTREAM = "chatproxy.upstream"
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


def current_upstream() -> Upstream:
    """The current process's upstream client (one per process)."""
    return current_app.extensions[UPSTREAM]


def current_owner() -> str | None:
    """Whose conversations the current request sees and makes: its access key's name.

    None, everyone's, while CHATPROXY_AUTH is `open`.
    """
    from chatproxy.access.keys import current_caller

    return current_caller().owner


def current_policy() -> Settings:
    """The settings as they apply to the current caller: the models its access key may use."""
    from chatproxy.access.keys import current_caller

    return current_caller().policy(current_settings())
