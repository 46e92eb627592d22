"""Attachment bytes in flight, bounded per worker: a question with large attachments waits for
room before its body is read, so a burst of them cannot take a worker's memory.

A question's images and files are held several times over while it is
answered (the body, the decoded bytes, the data URLs sent upstream, the request
body built from them, the rows written): about nine times its body's size,
until its answer ends. Each body of a multipart or JSON request to the paths
given, above SMALL_BODY bytes, takes its `Content-Length` from a budget of
CHATPROXY_UPLOAD_MEMORY_BYTES per worker before it is read, and gives it back
once its response is closed (after the last piece of a streamed answer). A
request that finds no room waits (cooperatively, under gevent) up to
WAIT_SECONDS, then gets 503 `uploads_busy` with Retry-After, nothing asked.
A body larger than the whole budget waits for all of it.
"""

from __future__ import annotations

import threading
from collections.abc import Collection

from flask import Flask, Response, g, request

from chatproxy.errors import UploadsBusy
from chatproxy.web.bodylimit import ATTACHMENT_TYPES

SMALL_BODY = 256 * 1024  # a question without large attachments never waits
WAIT_SECONDS = 30.0
RETRY_AFTER = 5


class ByteBudget:
    """A number of bytes shared by the requests of one worker (a counting semaphore by size)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self.waiting = 0  # requests waiting for room now
        self._changed = threading.Condition()  # gevent's under its monkey patch

    def acquire(self, size: int, timeout: float) -> int | None:
        """Take `size` bytes (at most the whole budget); the bytes taken, or None after
        `timeout` seconds without room."""
        size = min(size, self.total)
        with self._changed:
            self.waiting += 1
            try:
                if not self._changed.wait_for(lambda: self.used + size <= self.total, timeout):
                    return None
            finally:
                self.waiting -= 1
            self.used += size
        return size

    def release(self, size: int) -> None:
        """Give back `size` bytes taken by `acquire`."""
        with self._changed:
            self.used -= size
            self._changed.notify_all()


def register_upload_budget(app: Flask, paths: Collection[str], total: int) -> None:
    """Hold the large multipart and JSON bodies of `paths` to `total` bytes in flight per worker
    (module doc)."""
    budget = ByteBudget(total)
    app.extensions["chatproxy.upload_budget"] = budget

    def give_back() -> None:
        held = g.pop("upload_bytes_held", 0)
        if held:
            budget.release(held)

    @app.before_request
    def wait_for_room() -> None:
        if request.path not in paths or request.mimetype not in ATTACHMENT_TYPES:
            return
        size = request.content_length or 0
        if size <= SMALL_BODY or size > (request.max_content_length or size):
            return  # small, or refused (413) once read
        held = budget.acquire(size, WAIT_SECONDS)
        if held is None:
            raise UploadsBusy(
                "This server holds as many attachments as it may right now "
                "(CHATPROXY_UPLOAD_MEMORY_BYTES); nothing was asked. Try again shortly.",
                retry_after=RETRY_AFTER,
            )
        g.upload_bytes_held = held

    @app.after_request
    def release_when_closed(response: Response) -> Response:
        held = g.pop("upload_bytes_held", 0)
        if held:
            # After the last byte of the response (a stream's too), not when the view returns.
            response.call_on_close(lambda: budget.release(held))
        return response

    @app.teardown_request
    def release_on_failure(error: BaseException | None) -> None:
        give_back()  # a response never made (an unhandled error): nothing else will
