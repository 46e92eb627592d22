"""What the client and the streams read of an upstream answer, whichever HTTP client carried it.

Two clients send upstream requests (`chatproxy.upstream.client`): the lean one
(`chatproxy.upstream.lean`, geventhttpclient's parser) and the `openai` SDK
(`chatproxy.upstream.sdk`, with OPENAI_PROXY). Both hand back an
`UpstreamResponse` and raise a `Failure` when no usable answer came, so the
streams (`chatproxy.upstream.streams`) and the error mapping
(`Upstream._map_failure`) are written once and import neither client.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Literal, Protocol

# How a request failed: no answer in time, no connection, an HTTP error status,
# or an answer that could not be read.
FailureKind = Literal["timeout", "unreachable", "status", "unreadable"]


class Failure(Exception):
    """An upstream request that got no usable answer, after the client's retries.

    `kind` says how; for `status`, `status` is the HTTP status, `body` the
    parsed JSON of the answer (or its text, or None) and `headers` its headers
    (`get(name)` with a lower-case name); `cause` names the network error, for
    the log (never a URL or a key).
    """

    def __init__(
        self,
        kind: FailureKind,
        status: int | None = None,
        body: object = None,
        headers: Mapping[str, str] | None = None,
        cause: str = "",
    ) -> None:
        super().__init__(kind, status)
        self.kind = kind
        self.status = status
        self.body = body
        self.headers: Mapping[str, str] = headers or {}
        self.cause = cause


class ReadTimedOut(Exception):
    """The upstream sent nothing more within CHATPROXY_TIMEOUT while a body was read."""


class ReadBrokeOff(Exception):
    """The body could not be read to its end: the connection broke, or it was closed here."""


class UpstreamResponse(Protocol):
    """An upstream answer (2xx) whose body is read as it arrives.

    Reading raises ReadTimedOut or ReadBrokeOff, never a client's own
    exceptions. A body read to its end gives its connection back for reuse;
    `close()` (safe from another thread or greenlet, and more than once) ends
    a read in progress with ReadBrokeOff and drops the connection.
    """

    # The URL path asked (e.g. `/v1/chat/completions`), for metrics labels.
    path: str
    # time.perf_counter() when the request was sent, for the time to first token.
    sent_at: float | None
    # True when reading marks silence (`idle=`); otherwise a reader that must hear
    # of it times the wait itself (`chatproxy.web.sse.with_keepalive`).
    marks_idle: bool
    # The answer's Content-Type as the upstream gave it (None without one): what an
    # answer passed on as it came (audio, text) is labelled with.
    content_type: str | None

    def iter_bytes(self, idle: float | None = None) -> Iterator[bytes]:
        """The body as it arrives, decoded, in blocks of up to 64 KiB; with `idle` and
        `marks_idle`, also b"" after each `idle` seconds without a byte."""
        ...

    def iter_lines(self, idle: float | None = None) -> Iterator[str | None]:
        """The body's lines as text, without their line ends (`\\n` or `\\r\\n`); with
        `idle` and `marks_idle`, also None after each `idle` seconds without a byte."""
        ...

    def read(self) -> bytes:
        """The whole body, decoded."""
        ...

    def close(self) -> None:
        """Stop reading and release the connection."""
        ...
