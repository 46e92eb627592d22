"""Request bodies held to their route's limit: CHATPROXY_MAX_UPLOAD_BYTES for uploads, else
CHATPROXY_MAX_BODY_BYTES; sent in chunks or with a Content-Length alike.

A body with a `Content-Length` over its route's limit is refused (413) by
werkzeug before it is read (`register_body_limits` sets the request's
`max_content_length`).

Werkzeug refuses a body whose `Content-Length` is over the limit (413), but a
chunked one (`Transfer-Encoding: chunked`, no `Content-Length`) it reads up to
the limit and stops there without a word: a form's question was silently cut.
This WSGI middleware reads such a body first, at most one byte past the limit,
and hands it on with the length it found; one byte past the limit makes
werkzeug answer 413, as for a stated length, once the body is read.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flask import Flask, request

READ_SIZE = 64 * 1024

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


ATTACHMENT_TYPES = ("multipart/form-data", "application/json")
"""The bodies that may carry a question's attachments (`/callChatGPT`): multipart parts, or
JSON `images` and `files`. A query string or a urlencoded form carries none."""


def register_body_limits(
    app: Flask,
    max_bytes: int,
    larger: Mapping[str, int] | None = None,
    typed: Mapping[str, int] | None = None,
) -> None:
    """Hold every request body of `app` to `max_bytes`, and those of the paths of `larger`
    (`{"/v1/audio/transcriptions": bytes, ...}`) to theirs; 413 beyond, chunked or not.
    The paths of `typed` (`{"/callChatGPT": bytes}`) take theirs only for a body of one of
    ATTACHMENT_TYPES.

    Installs the WSGI middleware for chunked bodies, and a hook that runs before
    any other reads the body.
    """
    larger = dict(larger or {})
    typed = dict(typed or {})
    app.config["MAX_CONTENT_LENGTH"] = max_bytes
    app.wsgi_app = ChunkedBodyLimit(app.wsgi_app, max_bytes, larger, typed)  # type: ignore[method-assign]

    @app.before_request
    def route_limit() -> None:
        limit = larger.get(request.path)
        if limit is None and request.mimetype in ATTACHMENT_TYPES:
            limit = typed.get(request.path)
        if limit is not None:
            request.max_content_length = limit


class ChunkedBodyLimit:
    """WSGI middleware: a chunked request body read up to its limit + 1 and given a length.

    The limit is `max_bytes`, or `larger[path]` for the paths it names, or
    `typed[path]` for a body of one of ATTACHMENT_TYPES.
    """

    def __init__(
        self,
        app: WSGIApp,
        max_bytes: int,
        larger: Mapping[str, int] | None = None,
        typed: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = dict(larger or {})
        self.typed = dict(typed or {})

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if not environ.get("CONTENT_LENGTH") and "chunked" in (
            environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        ):
            path = environ.get("PATH_INFO", "")
            limit = self.larger.get(path, self.max_bytes)
            media_type = environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
            if path in self.typed and media_type in ATTACHMENT_TYPES:
                limit = self.typed[path]
            try:
                body = _read_at_most(environ["wsgi.input"], limit + 1)
            # A malformed chunk or a client gone: each server raises its own error
            # (gunicorn's ParseException is no OSError).
            except Exception:
                environ["wsgi.input"] = _Unreadable()  # werkzeug: 400 once it is read
            else:
                # Now a body of known length, as werkzeug sees it (it ignores a length given
                # with `chunked`); past the limit it says "at least max + 1": 413 when read.
                del environ["HTTP_TRANSFER_ENCODING"]
                environ["wsgi.input"] = io.BytesIO(body)
                environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)


def _read_at_most(stream: Any, limit: int) -> bytes:
    """Up to `limit` bytes of `stream` (a server's dechunked `wsgi.input`), less at its end."""
    pieces: list[bytes] = []
    left = limit
    while left > 0:
        piece = stream.read(min(READ_SIZE, left))
        if not piece:
            break
        pieces.append(piece)
        left -= len(piece)
    return b"".join(pieces)


class _Unreadable(io.RawIOBase):
    """A body that failed to arrive: reading it raises OSError, as the server's input did."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        raise OSError("the request body could not be read")
