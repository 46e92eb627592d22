"""Real gunicorn servers for end-to-end tests: start, wait until ready, stop, read logs.

Each server is `python -m gunicorn -c gunicorn.conf.py wsgi:app` run from the
repository root, configured by its environment only, in its own process group
(so nothing it starts can outlive the test), its error log captured to a file.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest
from dotenv import dotenv_values

from chatproxy import create_app
from chatproxy.access.keys import issue_key
from chatproxy.simulator import Simulator
from tests.conftest import UPSTREAM_KEY, need

ROOT = Path(__file__).resolve().parent.parent
COMMAND = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
START_TIMEOUT = 60.0  # seconds for gunicorn to boot its workers and answer /healthz
STOP_TIMEOUT = 30.0  # seconds for gunicorn to exit after SIGTERM when no answer is in flight
WORLD_CUP = "谁赢了2022年世界杯?"


REDIS_URL = "redis://127.0.0.1:6379/15"  # a database of the tests' own; keys are unique per test


def redis_is_there() -> None:
    """Fail in CI, skip elsewhere, unless Redis answers on 127.0.0.1:6379."""
    if not accepts_connections(6379):
        need("Redis at 127.0.0.1:6379", "start redis-server")


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accepts_connections(port: int) -> bool:
    """True when something listens on 127.0.0.1:`port`."""
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def server_env(**settings: str) -> dict[str, str]:
    """The process environment minus every chatproxy and gunicorn setting, plus `settings`.

    A developer's own settings must not change what is tested: those in the
    environment are dropped, and those in a local `.env` (which gunicorn.conf.py
    and wsgi.py load for whatever is unset) are set empty, which counts as unset.
    """
    names = set(dotenv_values(ROOT / ".env.example")) | {"GUNICORN_CMD_ARGS", "SIMULATOR_API_KEY"}
    names |= {"SIMULATOR_MODELS", "SIMULATOR_STREAM_OPTIONS"}
    # Run under `make test`, a `make` started by a test would print make's own
    # "Entering directory" lines around what it runs.
    names |= {"MAKEFLAGS", "MAKELEVEL", "MFLAGS"}
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in names and not name.startswith(("OPENAI_", "CHATPROXY_"))
    }
    env.update(dict.fromkeys(dotenv_values(ROOT / ".env"), ""))
    env.update(settings)
    return env


@dataclass
class Gunicorn:
    """One gunicorn master started by a test; `url` is like `http://127.0.0.1:PORT`.

    The master runs in its own process group. It is reaped only after that
    group was cleared, so its pid cannot name anyone else's group meanwhile.
    """

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    out_path: Path

    def log(self) -> str:
        """What gunicorn wrote to stderr so far (its error log)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def output(self) -> str:
        """What gunicorn, its workers and its simulator wrote to stdout and stderr."""
        return self.out_path.read_text(encoding="utf-8", errors="replace") + self.log()

    def status(self) -> int | None:
        """The exit status (negative: killed by that signal), None while it runs; no reaping."""
        if self.process.returncode is not None:
            return self.process.returncode
        info = os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if info is None or info.si_pid == 0:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def wait_until_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Poll `/healthz` until it answers 200; fail with the log if it never does."""
        deadline = time.monotonic() + timeout
        with httpx2.Client(timeout=2) as client:
            while time.monotonic() < deadline:
                if (status := self.status()) is not None:
                    pytest.fail(
                        f"gunicorn exited with {status} before it answered "
                        f"{self.url}/healthz; its stderr:\n{self.log()}"
                    )
                with suppress(httpx2.TransportError):
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        return
                time.sleep(0.1)
        pytest.fail(
            f"gunicorn did not answer {self.url}/healthz within {timeout:g} s; its stderr:\n"
            f"{self.log()}"
        )

    def wait_for_exit(self, timeout: float) -> int:
        """The exit status once the master exited; fail if it still runs after `timeout` s."""
        deadline = time.monotonic() + timeout
        while (status := self.status()) is None:
            if time.monotonic() > deadline:
                pytest.fail(f"gunicorn still runs {timeout:g} s on; its stderr:\n{self.log()}")
            time.sleep(0.05)
        return status

    def terminate(self) -> None:
        """Ask gunicorn to stop gracefully (SIGTERM), as systemd and docker do."""
        if self.status() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM and wait; then SIGKILL whatever is left of its process group, and reap."""
        if self.process.returncode is not None:
            return
        self.terminate()
        with suppress(pytest.fail.Exception):
            self.wait_for_exit(STOP_TIMEOUT)
        # Workers or a simulator left behind (or a master that would not stop) must not leak.
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@dataclass
class Launcher:
    """Starts gunicorn servers and remembers them, their logs and the upstream key each had."""

    log_dir: Path
    database_url: str
    started: list[tuple[Gunicorn, str | None]] = field(default_factory=list)

    def __call__(self, name: str, *, ready: bool = True, **settings: str) -> Gunicorn:
        """Start gunicorn with `server_env(**settings)` (BIND is chosen here).

        DATABASE_URL is the launcher's unless `settings` name another.
        """
        port = free_port()
        env = server_env(
            BIND=f"127.0.0.1:{port}", **{"DATABASE_URL": self.database_url, **settings}
        )
        log_path = self.log_dir / f"{name}.stderr"
        out_path = self.log_dir / f"{name}.stdout"
        with open(log_path, "wb") as stderr, open(out_path, "wb") as stdout:
            process = subprocess.Popen(
                COMMAND,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        server = Gunicorn(process, f"http://127.0.0.1:{port}", log_path, out_path)
        self.started.append((server, env.get("OPENAI_API_KEY") or None))
        if ready:
            server.wait_until_ready()
        return server

    def stop_all(self) -> None:
        for server, _ in reversed(self.started):
            server.stop()


def upstream_settings(simulator: Simulator, **overrides: str | None) -> dict[str, str]:
    """Settings of a server whose upstream is the `simulator` fixture; None leaves one out."""
    settings: dict[str, str | None] = {
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "OPENAI_BASE_URL": simulator.base_url,
        "CHATPROXY_MAX_RETRIES": "0",
        "CHATPROXY_AUTH": "open",
        **overrides,
    }
    return {name: value for name, value in settings.items() if value is not None}


def make_key(settings: dict[str, str], **limits: int) -> str:
    """A new access key with `limits` (`rpm=6`, ...), stored where `settings` point."""
    with create_app(settings).app_context():
        return issue_key(f"test-{uuid.uuid4().hex[:10]}", **limits)


def served_by(request_id: str, servers: Sequence[Gunicorn], timeout: float = 10.0) -> Gunicorn:
    """The one server of `servers` whose log names `request_id`; fails if none or several do.

    A request is logged once it has ended (a stream, after its last piece), so
    this waits up to `timeout` s for the line.
    """
    deadline = time.monotonic() + timeout
    while not (found := [server for server in servers if request_id in server.log()]):
        if time.monotonic() > deadline:
            pytest.fail(f"no server logged request {request_id} within {timeout:g} s")
        time.sleep(0.05)
    assert len(found) == 1, f"request {request_id} is in the logs of {len(found)} servers"
    return found[0]


def streams_in_flight(server: Gunicorn) -> float:
    """How many streamed answers `server` is sending right now, as its `/metrics` says."""
    metrics = httpx2.get(f"{server.url}/metrics", timeout=5).text
    for line in metrics.splitlines():
        if line.startswith("chatproxy_streams_in_flight "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class TcpProxy:
    """A TCP proxy on 127.0.0.1 to `target` (host, port) that a test can cut and restore.

    `cut()` stops listening and closes every connection through it, as a
    database host that went away; `restore()` listens again on the same port.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, []
        if listener is not None:
            with suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for connection in connections:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._connections += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
