"""Shared fixtures: the simulator, apps built against it, and real HTTP servers.

The OpenAI side is always the simulator over real sockets. Every app built
here is watched for the upstream key: a response header or body, or a log
line, that contains it fails the run at the end of the session.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from chatproxy import create_app
from chatproxy.config import database_url as database_url_setting
from chatproxy.simulator import Simulator
from chatproxy.store.schema import upgrade_database

UPSTREAM_KEY = "sk-sim-test-upstream-key-0123456789"
IN_CI = os.environ.get("CI") == "true"
# The suite runs on SQLite unless TEST_DATABASE_URL names a PostgreSQL database
# (`make test` runs it on both); its tables go into a schema made afresh.
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")
TEST_SCHEMA = "chatproxy_test"


def need(what: str, install: str) -> None:
    """Fail in CI, skip elsewhere: a test cannot find `what` (installed by `install`)."""
    message = f"{what} is missing: {install}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


# An access key of chatproxy, as `flask keys create` makes them (`cpk-` and 43 characters).
ACCESS_KEY = re.compile(r"cpk-[A-Za-z0-9_-]{40,}")
# The requests whose answer is a new access key, shown this once (the console's API).
MAKES_KEYS = {("POST", "/api/admin/keys")}


class LeakWatch:
    """Collects every place the upstream key or an access key showed up: responses, log records."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.found: list[str] = []

    def check(self, text: str | bytes, where: str, access_keys: bool = True) -> None:
        """Note `where` if `text` holds the upstream key or (unless not `access_keys`) an
        access key."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        if self.secret in text:
            self.found.append(where)
        if access_keys and ACCESS_KEY.search(text):
            self.found.append(where + " (an access key)")

    def middleware(self, wsgi_app: Callable[..., Iterable[bytes]]) -> Callable[..., Any]:
        """Wrap a WSGI app so its status, headers and body pieces are checked."""

        def watched(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            where = f"response to {environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}"

            def checking_start_response(status: str, headers: list, exc_info=None):  # type: ignore[no-untyped-def]
                self.check(status + repr(headers), where + " (headers)")
                return start_response(status, headers, exc_info)

            body = wsgi_app(environ, checking_start_response)
            # The console's "make a key" answers the new key, once: its one purpose.
            shows_a_key = (environ.get("REQUEST_METHOD"), environ.get("PATH_INFO")) in MAKES_KEYS
            return _CheckedBody(body, lambda piece: self.check(piece, where, not shows_a_key))

        return watched


class _CheckedBody:
    """A WSGI body passed on piece by piece, each checked; keeps `close()` working."""

    def __init__(self, body: Iterable[bytes], check: Callable[[bytes], None]) -> None:
        self.body = body
        self.check = check

    def __iter__(self) -> Iterator[bytes]:
        for piece in self.body:
            self.check(piece)
            yield piece

    def close(self) -> None:
        close = getattr(self.body, "close", None)
        if close is not None:
            close()


class _LogWatch(logging.Handler):
    def __init__(self, watch: LeakWatch) -> None:
        super().__init__(logging.DEBUG)
        self.watch = watch

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.watch.check(text, f"log record of {record.name}")


@pytest.fixture(scope="session", autouse=True)
def leak_watch() -> Iterator[LeakWatch]:
    """Over the whole session, the upstream key appears in no response and no log line."""
    watch = LeakWatch(UPSTREAM_KEY)
    handler = _LogWatch(watch)
    loggers = [logging.getLogger(name) for name in ("", "chatproxy", "werkzeug")]
    for logger in loggers:
        logger.addHandler(handler)
    logging.getLogger("chatproxy").setLevel(logging.DEBUG)
    # The SDK also reads OPENAI_* from the process environment; tests set everything.
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(("OPENAI_", "CHATPROXY_")):
                patch.delenv(name)
        yield watch
    for logger in loggers:
        logger.removeHandler(handler)
    assert not watch.found, f"a key leaked in: {sorted(set(watch.found))}"


@pytest.fixture(scope="session")
def simulator() -> Iterator[Simulator]:
    """The OpenAI simulator, in this process, on a free port."""
    sim = Simulator(api_key=UPSTREAM_KEY)
    sim.base_url = sim.start_in_thread()
    yield sim
    sim.stop()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty database brought to the newest schema by the migrations, for the whole session.

    SQLite in a temporary folder, or with TEST_DATABASE_URL a schema of its
    own in that PostgreSQL database, dropped and made again.
    """
    if TEST_DATABASE_URL:
        url = _fresh_postgresql_schema(TEST_DATABASE_URL, TEST_SCHEMA)
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'chatproxy.db'}"
    upgrade_database({"DATABASE_URL": url})
    return url


def _fresh_postgresql_schema(server_url: str, schema: str) -> str:
    """`server_url` with its search_path set to `schema`, which is made empty first."""
    import sqlalchemy

    url = database_url_setting(server_url)
    try:
        engine = sqlalchemy.create_engine(url)
        with engine.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
        engine.dispose()
    except sqlalchemy.exc.OperationalError as error:
        need(f"PostgreSQL at TEST_DATABASE_URL ({error.orig})", "start PostgreSQL or unset it")
    separator = "&" if "?" in url else "?"
    # Commits need not wait for the disk here: the tests check behaviour, not durability.
    options = f"-csearch_path%3D{schema}%20-csynchronous_commit%3Doff"
    return f"{url}{separator}options={options}"


@pytest.fixture(scope="session")
def app_env(simulator: Simulator, database_url: str) -> dict[str, str]:
    """Settings of an app whose upstream is the simulator, as a real OpenAI-compatible server."""
    return {
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "OPENAI_BASE_URL": simulator.base_url,
        "CHATPROXY_MAX_RETRIES": "0",
        "CHATPROXY_TIMEOUT": "10",
        "DATABASE_URL": database_url,
        # Most tests are about other things than access keys (tests/test_access.py).
        "CHATPROXY_AUTH": "open",
    }


@pytest.fixture(scope="session")
def make_app(app_env: dict[str, str], leak_watch: LeakWatch) -> Callable[..., Flask]:
    """Build an app with `app_env` plus overrides, watched for key leaks."""

    def build(**overrides: str) -> Flask:
        app = create_app({**app_env, **overrides})
        app.config["TESTING"] = True
        app.wsgi_app = leak_watch.middleware(app.wsgi_app)  # type: ignore[method-assign]
        return app

    return build


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask):  # type: ignore[no-untyped-def]
    return app.test_client()


@dataclass
class LiveServer:
    """A real HTTP server in a thread; `url` is like `http://127.0.0.1:PORT`."""

    url: str
    app: Flask


@contextmanager
def serve(app: Flask) -> Iterator[LiveServer]:
    """Serve `app` over real HTTP (werkzeug, threaded) until the block ends."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LiveServer(url=f"http://127.0.0.1:{server.server_port}", app=app)
    finally:
        server.shutdown()
        thread.join(timeout=5)


@pytest.fixture(scope="session")
def api_server(make_app: Callable[..., Flask]) -> Iterator[LiveServer]:
    """The app as a real server, its upstream the simulator seen as a real OpenAI server."""
    with serve(make_app()) as server:
        yield server


@pytest.fixture(scope="session")
def live_server(make_app: Callable[..., Flask]) -> Iterator[LiveServer]:
    """The app as a real server in simulator mode (the page shows its banner)."""
    with serve(make_app(CHATPROXY_UPSTREAM="simulator")) as server:
        yield server


@pytest.fixture
def make_server_with(make_app: Callable[..., Flask]) -> Iterator[Callable[..., LiveServer]]:
    """Start a real server with particular settings; it stops after the test."""
    stack: list[Any] = []

    def start(**overrides: str) -> LiveServer:
        context = serve(make_app(**overrides))
        stack.append(context)
        return context.__enter__()

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


@pytest.fixture
def chatproxy_log() -> Iterator[list[logging.LogRecord]]:
    """The `chatproxy` logger's records during the test (it does not propagate to caplog)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("chatproxy")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def wait_for_record(records: list[logging.LogRecord], text: str, timeout: float = 10.0) -> None:
    """Wait until a record containing `text` arrives (it may come from a server thread)."""
    deadline = time.monotonic() + timeout
    while not any(text in record.getMessage() for record in records):
        assert time.monotonic() < deadline, [record.getMessage() for record in records]
        time.sleep(0.05)


def raw_http(base_url: str, request: bytes) -> bytes:
    """Send `request` as it is (no client tidies it up) to `base_url`'s server; its whole answer.

    The request should say `Connection: close`, or the server closes after answering.
    """
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        return b"".join(iter(lambda: sock.recv(65536), b""))
