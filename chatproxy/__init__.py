"""chatproxy: a self-hosted ChatGPT Q&A page and OpenAI API gateway (Flask)."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chatproxy.config import Settings, load_settings, require_upstream

if TYPE_CHECKING:
    from flask import Flask

    from chatproxy.personas import Persona
    from chatproxy.tokens import Price

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("chatproxy")


@dataclass(frozen=True)
class Configuration:
    """What chatproxy is configured with, read and checked: settings, personas, prices."""

    settings: Settings
    personas: dict[str, Persona]
    prices: dict[str, Price]


def load_configuration(environ: Mapping[str, str]) -> Configuration:
    """Read and check the settings in `environ`, the persona files and the prices file.

    Every check start-up makes, in one place: create_app calls it, and so does
    gunicorn.conf.py in the master, so that a wrong setting stops gunicorn
    before any worker starts. Raises ConfigError with one line naming the
    variable when a setting is wrong, when CHATPROXY_MAX_TOKENS does not fit a
    model's context window or when CHATPROXY_PRICES_FILE is malformed; or
    naming the file, as `personas/ID.json: <fault>`, when a persona is.
    """
    from chatproxy.personas import load_personas
    from chatproxy.tokens import check_max_tokens, load_prices

    settings = load_settings(environ)
    personas = load_personas(settings.personas_dir, settings.models)
    check_max_tokens(settings.models, settings.max_tokens, settings.context_window)
    return Configuration(settings, personas, load_prices(settings.prices_file))


def create_app(
    environ: Mapping[str, str] | None = None, *, serving: bool = False, commands: bool = True
) -> Flask:
    """Build the application.

    `environ` holds the settings (see `.env.example`); by default `.env` is
    loaded into the process environment and that is read. Raises ConfigError
    with one line naming what is wrong (see load_configuration). Without an
    upstream (no OPENAI_API_KEY, simulator not chosen) the app answers 503
    `upstream_not_configured`: the `flask` commands that never ask need none.
    When `serving` (wsgi.py, `flask run`) it raises ConfigError instead, unless
    in debug mode, and logs where answers come from. Without `commands`
    (gunicorn's workers, wsgi.py) the `flask` commands are not registered:
    neither they nor Alembic (`flask db`) are imported, which keeps about
    15 MB out of every worker.
    """
    from flask import Flask

    from chatproxy.access.check import register_access_check
    from chatproxy.access.quotas import init_limits
    from chatproxy.errors import register_error_handlers
    from chatproxy.state import PERSONAS, PRICES, SETTINGS
    from chatproxy.store.database import INSTANCE_DIR, init_store, register_store_errors
    from chatproxy.upstream.client import UPSTREAM, Upstream
    from chatproxy.web import (
        admin_api,
        admin_page,
        api,
        ask,
        attachments_api,
        conversations_api,
        health,
        media,
        openapi,
        page,
        responses,
        v1,
    )
    from chatproxy.web.bodylimit import register_body_limits
    from chatproxy.web.headers import register_relative_redirects, register_security_headers
    from chatproxy.web.requestlog import register_request_log
    from chatproxy.web.upload_budget import register_upload_budget

    if environ is None:
        from dotenv import load_dotenv

        load_dotenv(ROOT / ".env")
        environ = os.environ
    configuration = load_configuration(environ)
    settings, personas, prices = (
        configuration.settings,
        configuration.personas,
        configuration.prices,
    )
    app = Flask(
        __name__,
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
        instance_path=str(INSTANCE_DIR),
    )
    if serving and not app.debug:
        require_upstream(settings)
    if settings.trusted_proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # The client's address and scheme as the proxies in front (nginx) saw them;
        # with none trusted, X-Forwarded-* headers are a client's claim and ignored.
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n)  # type: ignore[method-assign]
    # Uploads (audio, images to edit) may be larger than the rest; chunked bodies too are held
    # to their limit (werkzeug alone would cut them short, silently).
    uploads = dict.fromkeys(media.UPLOAD_ROUTES, settings.max_upload_bytes)
    # A question in multipart or JSON may carry images and files: held to the upload limit;
    # in a query string or a urlencoded form, to the body limit.
    attachable = {
        "/callChatGPT": settings.max_upload_bytes,
        "/api/conversations/import": settings.max_upload_bytes,  # an export with images
    }
    register_body_limits(app, settings.max_body_bytes, uploads, attachable)
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.extensions[SETTINGS] = settings
    app.extensions[PERSONAS] = personas
    app.extensions[PRICES] = prices
    app.extensions[UPSTREAM] = Upstream(settings)
    init_store(
        app, settings.database_url, migrations=commands, pool_size=settings.database_pool_size
    )
    if settings.cors_origins:
        from flask_cors import CORS

        CORS(
            app,
            # Not the console's API: it is for the owner's own page, never another site's.
            resources={r"/callChatGPT": {}, r"/api/(?!admin/).*": {}, r"/v1/*": {}},
            origins=list(settings.cors_origins),
            expose_headers=["Retry-After", "X-Conversation-Id", "Idempotent-Replayed"],
        )
    register_error_handlers(app)
    register_store_errors(app)
    register_security_headers(app)
    register_request_log(app, settings)  # first: every later failure has a request id
    register_relative_redirects(app)
    api_blueprints = [
        ask.bp,
        api.bp,
        conversations_api.bp,
        attachments_api.bp,
        v1.bp,
        responses.bp,
        media.bp,
    ]
    # Before Flask-Limiter's own check: the caller decides which limits apply.
    register_access_check(app, settings, {bp.name for bp in api_blueprints})
    init_limits(app, settings, api_blueprints)
    # After the access check and rate limits: a refused request never waits for room.
    register_upload_budget(app, attachable, settings.upload_memory_bytes)
    app.register_blueprint(page.bp)
    app.register_blueprint(admin_page.bp)
    app.register_blueprint(admin_api.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    for blueprint in api_blueprints:
        app.register_blueprint(blueprint)
    if commands:
        from chatproxy.cli import register_commands

        register_commands(app)
    _configure_logging()
    if serving:
        _log_start(settings, personas)
    return app


def recover(app: Flask) -> None:
    """Finish, in the background, what a worker that died left behind.

    Answers it was streaming (saved as `streaming`, not since) are marked
    `interrupted`, now and once more when those of a worker that just died
    have gone stale, and answers kept in the spool while the database was
    away are written. Called by gunicorn as each worker starts (gunicorn.conf.py);
    safe to run in several processes at once. A database still away is only
    logged: the spool waits for the next write.
    """
    import threading
    import time

    from sqlalchemy.exc import SQLAlchemyError

    from chatproxy.state import current_settings
    from chatproxy.store.answers import stale_after, sweep_unfinished
    from chatproxy.store.database import db
    from chatproxy.store.models import utcnow
    from chatproxy.store.spool import replay

    def sweep(seconds: float) -> None:
        swept = sweep_unfinished(db.engine, utcnow() - stale_after(seconds))
        if swept:
            log.warning("%d answers a stopped worker left: interrupted", swept)

    def run() -> None:
        with app.app_context():
            seconds = current_settings().checkpoint_seconds
            try:
                sweep(seconds)
                replay(db.engine)
                # A worker that died just now (this one's predecessor) saved its
                # answers moments ago: they look unfinished only once stale.
                time.sleep(stale_after(seconds).total_seconds())
                sweep(seconds)
            except SQLAlchemyError as error:
                log.warning("recovery waits for the database: %s", type(error).__name__)

    threading.Thread(target=run, daemon=True, name="recover").start()


def _configure_logging() -> None:
    """Send chatproxy's log to gunicorn's error log when served by gunicorn, else stderr."""
    if not log.handlers:
        gunicorn_log = logging.getLogger("gunicorn.error")
        if gunicorn_log.handlers:
            log.handlers = list(gunicorn_log.handlers)
            log.setLevel(gunicorn_log.level)
        else:
            handler = logging.StreamHandler()
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            log.addHandler(handler)
            log.setLevel(logging.INFO)
        log.propagate = False
    # The development server logs each request line, query string and all.
    werkzeug_log = logging.getLogger("werkzeug")
    if not any(isinstance(f, _HideAccessKeys) for f in werkzeug_log.filters):
        werkzeug_log.addFilter(_HideAccessKeys())
    # The SDK's and HTTP client's debug logs carry request details that have no
    # place in a production log.
    for name in ("openai", "httpx2", "httpcore2", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


class _HideAccessKeys(logging.Filter):
    """Blank out `key=...` (an access key in a URL) in log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "key=" in message:
            record.msg = _KEY_IN_URL.sub(r"\1[hidden]", message)
            record.args = None
        return True


_KEY_IN_URL = re.compile(r"([?&]key=)[^&\s\"]+")


def _log_start(settings: Settings, personas: Mapping[str, object]) -> None:
    upstream = "the built-in simulator" if settings.simulator_in_use else "OpenAI"
    if settings.openai_base_url and not settings.simulator_in_use:
        upstream = "an OpenAI-compatible server (OPENAI_BASE_URL)"
    if settings.upstreams:
        names = ", ".join(target.name for target in settings.upstreams)
        upstream = f"{len(settings.upstreams)} upstreams by {settings.upstream_order} ({names})"
    if not settings.upstream_targets:
        upstream = "no upstream (OPENAI_API_KEY is not set): questions get 503"
    log.info("chatproxy answers from %s, default model %s", upstream, settings.model)
    log.info("personas: %s", ", ".join(personas) or "none")
    if settings.auth == "open":
        log.warning(
            "CHATPROXY_AUTH=open: anyone who can reach this service can ask questions "
            "on the upstream key"
        )
    else:
        log.info("CHATPROXY_AUTH=keys: questions need an access key (make one: make key NAME=me)")
