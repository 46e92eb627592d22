"""The `flask` terminal commands: `chat` (`chat`), and the owner's `conversations`,
`keys` and `usage` (`admin`) and `requests` (`requests`). They use the same store,
personas and upstream as the service, with the settings of `.env` and the
environment (`flask --app app chat`).
"""

from __future__ import annotations

from flask import Flask

from chatproxy.cli.admin import conversations_cli, keys_cli, usage_command
from chatproxy.cli.chat import chat
from chatproxy.cli.requests import requests_command


def register_commands(app: Flask) -> None:
    """Add `flask chat`, `flask conversations ...`, `flask keys ...`, `flask usage` and
    `flask requests`."""
    app.cli.add_command(chat)
    app.cli.add_command(conversations_cli)
    app.cli.add_command(keys_cli)
    app.cli.add_command(usage_command)
    app.cli.add_command(requests_command)
