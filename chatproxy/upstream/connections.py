"""Connections to the upstream servers for the lean client (`chatproxy.upstream.lean`): a pool each.

Sockets come from the standard library's `socket` and `ssl`, not from
`gevent.socket` as geventhttpclient's own `HTTPClient` takes them: in a
gunicorn gevent worker those modules are gevent's (patched before the app
loads), so every read yields to the other greenlets; under `flask run` and in
the tests, where the app runs in plain threads with no patching (a thread per
request), they are ordinary blocking sockets that any thread may use. So one
pool per server reuses connections in both worlds; gevent sockets, bound to
the hub of the thread that made them, could not be shared between the dev
server's threads, and a pool per thread would reuse nothing there.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import certifi

from chatproxy.upstream.responses import Failure


class Pool:
    """Connections to one server: idle ones kept for reuse, at most `size` in all.

    Taking one waits up to `read_timeout` seconds for a free place (Failure
    `timeout` then). Thread-safe: a deque's append and pop are atomic, and the
    bound is a `threading.BoundedSemaphore` (gevent's in a patched worker).
    """

    def __init__(
        self,
        host: str,
        port: int,
        tls: ssl.SSLContext | None,
        *,
        size: int,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._idle: deque[socket.socket] = deque()
        self._places = threading.BoundedSemaphore(size)
        self._poll = real_poll()

    def take(self) -> socket.socket:
        """A connection for one request: the newest idle one still open, or a new one.

        Raises Failure (`timeout`, `unreachable`); the caller gives the
        connection back (`give_back`) or drops it (`discard`), once.
        """
        if not self._places.acquire(timeout=self.read_timeout):
            raise Failure("timeout", cause="PoolTimeout")
        try:
            while True:
                try:
                    sock = self._idle.pop()
                except IndexError:
                    return self._connect()
                if self._still_open(sock):
                    return sock
                sock.close()
        except BaseException:
            self._places.release()
            raise

    def give_back(self, sock: socket.socket) -> None:
        """Keep `sock`, its answer read to the end, for the next request."""
        self._idle.append(sock)
        self._places.release()

    def discard(self, sock: socket.socket) -> None:
        """Close `sock` (its answer was not read to the end, or it broke) and free its place."""
        try:
            sock.close()
        finally:
            self._places.release()

    def _connect(self) -> socket.socket:
        """A new connection, TLS too for https, within the connect timeout."""
        try:
            # Looked up now, not at import: gevent patches `socket` before the app loads.
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(self.read_timeout)
        except TimeoutError:
            raise Failure("timeout", cause="ConnectTimeout") from None
        except OSError as exc:
            raise Failure("unreachable", cause=type(exc).__name__) from None
        return sock

    def _still_open(self, sock: socket.socket) -> bool:
        """True when the idle `sock` has nothing to read: a server that closed it made it
        readable (end of file), and an answer nobody asked for is as bad."""
        poll = self._poll()
        try:
            poll.register(sock.fileno(), select.POLLIN)
        except (OSError, ValueError):
            return False
        return not poll.poll(0)


def real_poll() -> Callable[[], Any]:
    """`select.poll`, the real one even under gevent's patching: an idle connection is
    checked with a zero timeout, which never blocks, so the event loop is not needed."""
    monkey = sys.modules.get("gevent.monkey")  # imported by whoever patched
    if monkey is not None and monkey.is_module_patched("select"):
        return monkey.get_original("select", "poll")  # type: ignore[no-any-return]
    return select.poll


def tls_context() -> ssl.SSLContext:
    """A client TLS context that verifies servers with the system's certificates (OpenSSL's
    compiled-in paths, as httpx2 with trust_env=False), else certifi's; no SSL_CERT_* read."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    paths = ssl.get_default_verify_paths()
    cafile = paths.openssl_cafile if os.path.isfile(paths.openssl_cafile) else None
    capath = paths.openssl_capath if os.path.isdir(paths.openssl_capath) else None
    if cafile or capath:
        context.load_verify_locations(cafile, capath)
    else:
        context.load_verify_locations(certifi.where())
    context.set_alpn_protocols(["http/1.1"])
    return context
