"""The lean upstream client: HTTP/1.1 over pooled sockets, parsed by geventhttpclient's C parser.

It carries every upstream request unless OPENAI_PROXY is set (then the SDK
does, `chatproxy.upstream.sdk`). Profiled in a gevent worker serving 1,000
concurrent streams, the `openai` SDK over httpx2 cost 1.21 ms of CPU per
request and 32 µs per SSE event read (httpcore2 and h11), more than all of
chatproxy's own work, and `import openai` (pydantic, httpx2) about 32 MB in
every worker. Here a request is one `sendall` of bytes mostly built once per
server, and a response is fed to geventhttpclient's llhttp parser in blocks
of up to 64 KiB, so a read costs one `recv` and one `feed` for all the events
that arrived together.

It keeps the SDK's contract (DESIGN.md, "Upstream"): its headers (the key as
`Authorization: Bearer`, OPENAI_ORG_ID and OPENAI_PROJECT_ID), its retries
(`chatproxy.upstream.retries`: connection errors, timeouts, 408, 409, 429,
5xx, `x-should-retry`, Retry-After, backoff, the deadline) and its failures
(`Failure`, mapped by `Upstream._map_failure`). CHATPROXY_CONNECT_TIMEOUT
bounds connecting (and the TLS handshake), CHATPROXY_TIMEOUT each read and
the wait for a free connection.

Connections are kept by `chatproxy.upstream.connections`, which says why
they are the standard library's sockets (gevent's in a worker).
"""

from __future__ import annotations

import codecs
import itertools
import json
import socket
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import Any
from urllib.parse import urlsplit

from geventhttpclient.response import HTTPParseError, HTTPResponse

from chatproxy.config import Settings
from chatproxy.errors import error_detail
from chatproxy.upstream.connections import Pool, tls_context
from chatproxy.upstream.failures import retried
from chatproxy.upstream.responses import Failure, ReadBrokeOff, ReadTimedOut
from chatproxy.upstream.retries import retry_wait, status_retried, too_late
from chatproxy.upstream_targets import UpstreamTarget

BLOCK_BYTES = 64 * 1024  # read at most this much at once: a stream's events as they came
USER_AGENT = "chatproxy (geventhttpclient)"


class LeanServer:
    """One upstream server: `post` (or `call`) sends a request with the SDK's retries, over
    `pool`."""

    def __init__(self, target: UpstreamTarget, settings: Settings) -> None:
        self.target = target
        url = urlsplit(target.base_url)
        https = url.scheme == "https"
        host = url.hostname or ""
        port = url.port or (443 if https else 80)
        self._prefix = url.path.rstrip("/")
        self.max_retries = settings.max_retries
        self.pool = Pool(
            host,
            port,
            tls_context() if https else None,
            size=settings.max_connections,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.timeout,
        )
        headers = {
            "Host": url.netloc.rpartition("@")[2],  # as in the URL, without any user info
            "Authorization": f"Bearer {target.api_key}",
            "Accept": "application/json",
            # Compressing costs more CPU than it saves on loopback, and delays stream events.
            "Accept-Encoding": "identity",
            "User-Agent": USER_AGENT,
        }
        if settings.openai_org_id:
            headers["OpenAI-Organization"] = settings.openai_org_id
        if settings.openai_project_id:
            headers["OpenAI-Project"] = settings.openai_project_id
        # Without a Content-Type: JSON's, or an upload's own (`post_bytes`).
        self._common = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._headers = self._common + "Content-Type: application/json\r\n"

    def post(self, path: str, body: dict[str, Any]) -> LeanResponse:
        """`POST path` (under the server's base URL) with the JSON `body`; the body unread.

        Raises Failure once the retries are spent, stopped at the deadline, or
        not worth making (`retried`, `status_retried`).
        """
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        data = payload.encode()
        target = self._prefix + path
        request = (
            f"POST {target} HTTP/1.1\r\n{self._headers}Content-Length: {len(data)}\r\n\r\n"
        ).encode() + data
        return self._retried(request, target)

    def post_bytes(self, path: str, data: bytes, content_type: str) -> LeanResponse:
        """`POST path` with `data` as it is (a client's upload), as `content_type`; raises
        Failure as `post` does. The request is built once and sent again on a retry."""
        target = self._prefix + path
        head = (
            f"POST {target} HTTP/1.1\r\n{self._common}Content-Type: {content_type}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        return self._retried(head.encode() + data, target)

    def call(self, method: str, path: str) -> LeanResponse:
        """`method` (GET, DELETE, or POST without a body) on `path` (under the base URL, its
        query string included); the body unread. Raises Failure as `post` does."""
        target = self._prefix + path
        request = f"{method} {target} HTTP/1.1\r\n{self._headers}Content-Length: 0\r\n\r\n"
        return self._retried(request.encode(), target)

    def _retried(self, request: bytes, target: str) -> LeanResponse:
        """Send `request` with the SDK's retries; the first answer that is not a Failure."""
        retries_taken = 0
        while True:
            try:
                return self._attempt(request, target)
            except Failure as failure:
                if retries_taken >= self.max_retries or not worth_retrying(failure):
                    raise
                wait = retry_wait(retries_taken, failure.headers)
                if too_late(wait):
                    raise
                time.sleep(wait)  # gevent's under a worker: cooperative
                retries_taken += 1

    def _attempt(self, request: bytes, path: str) -> LeanResponse:
        """Send `request` once; the answer with its headers read, or Failure."""
        pool = self.pool
        sock = pool.take()
        parser = Parser()
        try:
            sock.sendall(request)
            # An interim answer (1xx) is followed by the real one on the same connection.
            while not parser.headers_complete or parser.status_code < 200:
                data = sock.recv(BLOCK_BYTES)
                parser.feed(data)
                if not data:
                    raise ConnectionResetError("closed before an answer")
        except TimeoutError:
            pool.discard(sock)
            raise Failure("timeout", cause="ReadTimeout") from None
        except (OSError, ValueError, HTTPParseError) as exc:
            pool.discard(sock)
            raise Failure("unreachable", cause=type(exc).__name__) from None
        response = LeanResponse(pool, sock, parser, path)
        status = parser.status_code
        if status < 400:
            return response
        try:
            content = response.read()
        except ReadTimedOut:
            raise Failure("timeout", cause="ReadTimeout") from None
        except ReadBrokeOff:
            raise Failure("unreachable", cause="ReadError") from None
        body: object
        try:
            body = json.loads(content)
        except ValueError:
            body = content.decode(errors="replace")
        headers = {name.lower(): value for name, value in parser.items()}
        raise Failure("status", status, body, headers)


def worth_retrying(failure: Failure) -> bool:
    """True when the SDK would ask again after `failure` (retries left aside)."""
    if failure.status is None:
        return failure.kind in ("timeout", "unreachable")
    return retried(failure.status, error_detail(failure.body)) and status_retried(
        failure.status, failure.headers
    )


class Parser(HTTPResponse):
    """geventhttpclient's response parser, the body kept as the pieces it arrives in."""

    def __init__(self) -> None:
        super().__init__("POST")
        self.pieces: list[bytes] = []

    def _on_body(self, buf: bytearray) -> None:
        self.pieces.append(bytes(buf))


class LeanResponse:
    """An answer whose headers were read, its body read as it arrives (an `UpstreamResponse`).

    Its connection goes back to the pool as soon as the body's end is read,
    and is closed instead when the response is closed before that.
    """

    marks_idle = True  # iter_bytes(idle=) and iter_lines(idle=) mark silence

    def __init__(self, pool: Pool, sock: socket.socket, parser: Parser, path: str) -> None:
        self.path = path
        self.sent_at: float | None = None
        self._pool = pool
        self._sock: socket.socket | None = sock
        self._parser = parser
        self._releases = itertools.count()  # next() is atomic: the first caller releases
        self._idle = False  # the socket's timeout was shortened to mark silence
        encoding = parser.get("content-encoding")
        self._decode = decoder(encoding if isinstance(encoding, str) else None)
        found = parser.get("content-type")
        self.content_type = found if isinstance(found, str) else None
        if parser.message_complete:
            self._release(keep=parser.should_keep_alive())

    def iter_bytes(self, idle: float | None = None) -> Iterator[bytes]:
        """The body as it arrives, decoded: each item what one read brought, up to 64 KiB.

        With `idle` (seconds), an empty item each time nothing arrived for that
        long, the read going on after it: a stream's reader sends its keep-alive
        then, without a second greenlet timing the wait. Raises ReadTimedOut
        after CHATPROXY_TIMEOUT without a byte, ReadBrokeOff when the connection
        breaks or ends early, or was closed (`close`).
        """
        parser, decode = self._parser, self._decode
        read_timeout = self._pool.read_timeout
        if idle is not None and self._sock is not None and idle < read_timeout:
            self._sock.settimeout(idle)  # set back as the connection is given back
            self._idle = True
        else:
            idle = None
        heard = time.monotonic()
        try:
            while True:
                pieces = parser.pieces
                if pieces:
                    data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
                    pieces.clear()
                    yield decode(data) if decode else data
                if parser.message_complete:
                    break
                sock = self._sock
                if sock is None:
                    raise ReadBrokeOff
                try:
                    data = sock.recv(BLOCK_BYTES)
                except TimeoutError:
                    if idle is None or time.monotonic() - heard >= read_timeout:
                        raise
                    yield b""
                    continue
                if idle is not None:
                    heard = time.monotonic()
                parser.feed(data)  # b"": the end of a body that runs to the connection's close
                if parser.message_complete:
                    self._release(keep=bool(data) and parser.should_keep_alive())
                elif not data:
                    raise ReadBrokeOff
            if decode:
                rest = decode(b"", True)
                if rest:
                    yield rest
        except TimeoutError:
            raise ReadTimedOut from None
        except (OSError, ValueError, HTTPParseError, zlib.error):
            raise ReadBrokeOff from None
        finally:
            if not parser.message_complete:
                self._release(keep=False)

    def iter_lines(self, idle: float | None = None) -> Iterator[str | None]:
        """The body's lines as text (UTF-8), without `\\n` or `\\r\\n`, and None for each
        `idle` seconds of silence (see `iter_bytes`); raises as `iter_bytes`."""
        text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        pending = ""
        for block in self.iter_bytes(idle):
            if not block:
                yield None
                continue
            lines = (pending + text(block)).split("\n")
            pending = lines.pop()
            for line in lines:
                yield line[:-1] if line.endswith("\r") else line
        pending += text(b"", True)
        if pending:
            yield pending[:-1] if pending.endswith("\r") else pending

    def read(self) -> bytes:
        """The whole body, decoded; raises as `iter_bytes`."""
        return b"".join(self.iter_bytes())

    def close(self) -> None:
        """Drop the connection unless the body was read to its end; safe from another thread.

        A read blocked in another thread or greenlet ends with ReadBrokeOff:
        `shutdown` wakes a blocking `recv` (closing alone does not), gevent's
        `close` wakes a greenlet waiting on the socket.
        """
        sock = self._sock
        if sock is not None and not self._parser.message_complete:
            with suppress(OSError, ValueError):  # already closed or reset
                sock.shutdown(socket.SHUT_RDWR)
        self._release(keep=False)

    def _release(self, keep: bool) -> None:
        """Give the connection back (`keep`) or close it; only the first call does anything."""
        if next(self._releases):
            return
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if keep:
            if self._idle:
                sock.settimeout(self._pool.read_timeout)
            self._pool.give_back(sock)
        else:
            self._pool.discard(sock)


Decode = Callable[..., bytes]


def decoder(encoding: str | None) -> Decode | None:
    """A decompressor's `(data, final=False) -> bytes` for `Content-Encoding`, None for identity.

    chatproxy asks for identity; a server that gzips or brotli-compresses anyway
    is read all the same.
    """
    name = (encoding or "identity").strip().lower()
    if name == "identity":
        return None
    if name in ("gzip", "x-gzip", "deflate"):
        inflate = zlib.decompressobj(zlib.MAX_WBITS | 16 if "gzip" in name else zlib.MAX_WBITS)

        def unzip(data: bytes, final: bool = False) -> bytes:
            return inflate.flush() if final else inflate.decompress(data)

        return unzip
    if name == "br":
        import brotli  # only for a server that sends it

        unbrotli = brotli.Decompressor()

        def unbr(data: bytes, final: bool = False) -> bytes:
            return b"" if final else bytes(unbrotli.process(data))

        return unbr
    return None  # an encoding it does not know: passed on as it came, as httpx2 does
