"""The application for the `flask` command: `flask --app app run`, `flask --app app keys ...`.

As under gunicorn, a wrong or missing setting ends every command with one line
naming it, never a traceback. `flask run` starts as gunicorn.conf.py does: it
serves only with an upstream to ask (outside `--debug`), in simulator mode
without OPENAI_BASE_URL it starts the built-in simulator first, and it brings
the database to the newest schema.
"""

from __future__ import annotations

import atexit
import os
import sys

import click
from dotenv import load_dotenv
from flask import Flask
from flask.helpers import get_debug_flag
from sqlalchemy.exc import SQLAlchemyError

import chatproxy
from chatproxy.config import ConfigError, Settings, require_upstream
from chatproxy.simulator_process import start_simulator
from chatproxy.store.schema import upgrade_database


def create_app() -> Flask:
    """chatproxy for the `flask` command; exits with one line on a wrong setting."""
    try:
        serving = _running_flask_run()
        if serving:
            load_dotenv(chatproxy.ROOT / ".env")
            settings = chatproxy.load_configuration(os.environ).settings
            if not get_debug_flag():
                require_upstream(settings)
            _start_simulator_if_chosen(settings)
            upgrade_database(os.environ)
        return chatproxy.create_app(serving=serving)
    except ConfigError as error:
        sys.exit(f"chatproxy: {error}")
    except SQLAlchemyError as error:
        # The driver's message names the host and database, never the password.
        reason = getattr(error, "orig", None) or error
        sys.exit(f"chatproxy: the database (DATABASE_URL) cannot be migrated: {reason}")


def _running_flask_run() -> bool:
    """True under `flask run`: Flask loads the app from inside that command's own callback;
    for the app's commands (keys, chat, ...) it loads it while looking the command up."""
    context = click.get_current_context(silent=True)
    return context is not None and context.command.name == "run"


def _start_simulator_if_chosen(settings: Settings) -> None:
    """In simulator mode without OPENAI_BASE_URL, start the simulator on a free port.

    The port is any free one, so that a `make run` elsewhere keeps its own; the
    development server's reloader process inherits OPENAI_BASE_URL and starts
    none. The simulator ends with this process.
    """
    if settings.simulator_port is None:
        return
    simulator = start_simulator(0, settings.upstream_key or "")
    atexit.register(simulator.stop)
    os.environ["OPENAI_BASE_URL"] = simulator.url
    click.echo(f" * CHATPROXY_UPSTREAM=simulator: answers come from {simulator.url}", err=True)
