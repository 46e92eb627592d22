"""The application's per-process state: its settings and its upstream client."""

from __future__ import annotations

from flask import current_app

from chatproxy.config import Settings
from chatproxy.upstream import Upstream

SETTINGS = "chatproxy.settings"
UPSTREAM = "chatproxy.upstream"


def current_settings() -> Settings:
    """The settings the current app was created with."""
    return current_app.extensions[SETTINGS]


def current_upstream() -> Upstream:
    """The current process's upstream client (one per process)."""
    return current_app.extensions[UPSTREAM]
