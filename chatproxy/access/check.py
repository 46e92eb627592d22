"""The check before every API request: who the caller is (`keys`), then its quotas (`quotas`)."""

from __future__ import annotations

from flask import Flask, request

from chatproxy.access.keys import authenticate
from chatproxy.access.quotas import asks_upstream, check_quotas
from chatproxy.config import Settings
from chatproxy.errors import RateLimited
from chatproxy.store.database import db, release_session
from chatproxy.store.idempotency import HEADER, has_answer


def register_access_check(app: Flask, settings: Settings, blueprints: set[str]) -> None:
    """Check the caller (`authenticate`) and its quotas before every request to `blueprints`.

    Raises, from the hook, Unauthorized (401) for a missing or unknown key and
    RateLimited (429) for a key over a quota, unless its `Idempotency-Key`
    holds an answer to give back. CORS preflights (OPTIONS) pass: browsers
    send them without credentials.
    """

    @app.before_request
    def check_access() -> None:
        if request.blueprint in blueprints and request.method != "OPTIONS":
            try:
                caller = authenticate(settings)
                if asks_upstream():
                    try:
                        check_quotas(caller)
                    except RateLimited:
                        # A retry whose answer is kept asks nothing: it gets that answer.
                        key = request.headers.get(HEADER)
                        if key is None or not has_answer(db.engine, caller.name, key):
                            raise
            finally:
                # Give the connection back: the request may now wait on the upstream for minutes.
                release_session()
