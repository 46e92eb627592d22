"""The `openai` SDK as the upstream client: the fallback when OPENAI_PROXY is set.

geventhttpclient (the lean client, `chatproxy.upstream.lean`) speaks neither
SOCKS nor, through `CONNECT`, a proxy the way the SDK's httpx2 transport does;
so with any OPENAI_PROXY every upstream request goes through the SDK, as it all
did before the lean client: the SDK's retries (bounded by the deadline of
`chatproxy.upstream.retries`), headers and errors, over the sharded pools of
`chatproxy.upstream.transport`. This module imports `openai` and `httpx2`
(about 32 MB per process with pydantic), so `chatproxy.upstream.client`
imports it only when a proxy is set.

Requests go through the SDK's low-level `client.post(..., cast_to=httpx2.Response)`
with the body left unread, as `with_streaming_response` does, but without the
SDK's per-call conversion of the params (about 0.3 ms) that a gateway passing
checked params on does not need.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import openai
from openai._constants import RAW_RESPONSE_HEADER

from chatproxy.config import Settings
from chatproxy.errors import error_detail
from chatproxy.upstream.failures import retried
from chatproxy.upstream.responses import Failure, ReadBrokeOff, ReadTimedOut
from chatproxy.upstream.retries import too_late
from chatproxy.upstream.transport import PoolShards, use_real_poll_for_idle_checks
from chatproxy.upstream_targets import UpstreamTarget

# Makes the SDK return the raw response with its body unread (the header is
# the SDK's own, set by `with_streaming_response`).
UNREAD_BODY: openai.RequestOptions = {"headers": {RAW_RESPONSE_HEADER: "stream"}}
# An upload's Content-Type, carried under this name past the SDK (which would build a multipart
# body of its own for a multipart Content-Type) and put in place as the request leaves; never sent.
UPLOAD_TYPE = "X-Chatproxy-Upload-Type"


class SdkServer:
    """One upstream server asked through the SDK: `post` sends a request, with retries."""

    def __init__(self, target: UpstreamTarget, settings: Settings) -> None:
        self.target = target
        http_client = openai.DefaultHttpxClient(
            transport=PoolShards(settings),
            # OPENAI_PROXY is the one proxy setting; HTTP(S)_PROXY are not consulted.
            trust_env=False,
            # A context-length error is not retried, even when a server answers it with a 500.
            event_hooks={"request": [upload_type], "response": [mark_final]},
        )
        self.client = DeadlineOpenAI(
            api_key=target.api_key,
            base_url=target.base_url,
            organization=settings.openai_org_id,
            project=settings.openai_project_id,
            timeout=httpx2.Timeout(settings.timeout, connect=settings.connect_timeout),
            max_retries=settings.max_retries,
            http_client=http_client,
        )
        use_real_poll_for_idle_checks()

    def post(self, path: str, body: dict[str, Any]) -> SdkResponse:
        """`POST path` (under the server's base URL) with the JSON `body`; the body unread.

        Raises Failure once the SDK's retries are spent (or stopped at the deadline).
        """
        with _sdk_failures():
            response = self.client.post(
                path, body=body, cast_to=httpx2.Response, options=UNREAD_BODY
            )
        return SdkResponse(response)

    def post_bytes(self, path: str, data: bytes, content_type: str) -> SdkResponse:
        """`POST path` with `data` as it is (a client's upload), as `content_type`; raises
        Failure as `post` does."""
        options: openai.RequestOptions = {
            "headers": {RAW_RESPONSE_HEADER: "stream", UPLOAD_TYPE: content_type}
        }
        with _sdk_failures():
            response = self.client.post(
                path, content=data, cast_to=httpx2.Response, options=options
            )
        return SdkResponse(response)

    def call(self, method: str, path: str) -> SdkResponse:
        """`method` (GET, DELETE, or POST without a body) on `path` (its query string
        included); the body unread. Raises Failure as `post` does."""
        with _sdk_failures():
            if method == "GET":
                response = self.client.get(path, cast_to=httpx2.Response, options=UNREAD_BODY)
            elif method == "DELETE":
                response = self.client.delete(path, cast_to=httpx2.Response, options=UNREAD_BODY)
            else:
                response = self.client.post(path, cast_to=httpx2.Response, options=UNREAD_BODY)
        return SdkResponse(response)


def upload_type(request: httpx2.Request) -> None:
    """An httpx2 request hook: an upload's Content-Type put in place (see UPLOAD_TYPE)."""
    found = request.headers.pop(UPLOAD_TYPE, None)
    if found is not None:
        request.headers["Content-Type"] = found


class SdkResponse:
    """An httpx2 response as an `UpstreamResponse` (`chatproxy.upstream.responses`)."""

    def __init__(self, response: httpx2.Response, sent_at: float | None = None) -> None:
        self._response = response
        try:
            self.path = response.request.url.path
        except RuntimeError:  # a response made without a request (tests)
            self.path = ""
        self.sent_at = sent_at
        self.content_type = response.headers.get("content-type")

    marks_idle = False  # httpx2 times a read only to fail it

    def iter_bytes(self, idle: float | None = None) -> Iterator[bytes]:
        """The body as it arrives; httpx2's errors as ReadTimedOut or ReadBrokeOff. Silence is
        not marked (`idle` is ignored)."""
        with _read_failures():
            yield from self._response.iter_bytes()

    def iter_lines(self, idle: float | None = None) -> Iterator[str | None]:
        """The body's lines, as `iter_bytes` raises."""
        with _read_failures():
            yield from self._response.iter_lines()

    def read(self) -> bytes:
        """The whole body, as `iter_bytes` raises."""
        return b"".join(self.iter_bytes())

    def close(self) -> None:
        """Release the connection."""
        self._response.close()


def mark_final(response: httpx2.Response) -> None:
    """An httpx2 response hook: a 5xx that is a context-length error is not to be retried.

    The openai SDK retries every 5xx unless the answer says `x-should-retry:
    false`; Ollama answers a prompt too long with a 500. Only 5xx answers are
    read here (their bodies are small); the SDK reads the body again from memory.
    """
    if response.status_code < 500:
        return
    try:
        detail = error_detail(json.loads(response.read()))
    except (ValueError, httpx2.HTTPError, httpx2.StreamError):
        return  # not JSON, or it broke off: the SDK decides as it would have
    if not retried(response.status_code, detail):
        response.headers["x-should-retry"] = "false"


class DeadlineOpenAI(openai.OpenAI):
    """The SDK's client, its retries bounded by the current `retries.deadline`."""

    def _should_retry(self, response: httpx2.Response) -> bool:
        # A status error: the SDK retries only if this says so, and raises it otherwise.
        wait = self._parse_retry_after_header(response.headers) or 0.0
        return super()._should_retry(response) and not too_late(wait)

    def _sleep_for_retry(
        self,
        *,
        retries_taken: int,
        max_retries: int,
        options: Any,
        response: httpx2.Response | None,
    ) -> None:
        if response is None:
            # A timeout or a connection error, being handled by the SDK right now.
            headers = None
            wait = self._calculate_retry_timeout(max_retries - retries_taken, options, headers)
            if too_late(wait):
                failure = sys.exc_info()[1]
                try:
                    request = failure.request  # type: ignore[union-attr]
                except (AttributeError, RuntimeError):  # httpx's errors may have none
                    request = httpx2.Request("POST", str(self.base_url))
                if isinstance(failure, httpx2.TimeoutException):
                    raise openai.APITimeoutError(request=request) from failure
                raise openai.APIConnectionError(request=request) from failure
            time.sleep(wait)
            return
        super()._sleep_for_retry(
            retries_taken=retries_taken, max_retries=max_retries, options=options, response=response
        )


@contextmanager
def _sdk_failures() -> Iterator[None]:
    """The SDK's errors, once its retries are spent, as a Failure."""
    try:
        yield
    except openai.APITimeoutError:
        raise Failure("timeout") from None
    except openai.APIConnectionError as exc:
        raise Failure("unreachable", cause=type(exc.__cause__).__name__) from None
    except openai.APIStatusError as exc:
        raise Failure("status", exc.status_code, exc.body, exc.response.headers) from None
    except openai.APIError:
        raise Failure("unreadable") from None


@contextmanager
def _read_failures() -> Iterator[None]:
    """httpx2's failures while reading a body, as ReadTimedOut or ReadBrokeOff."""
    try:
        yield
    except httpx2.TimeoutException:
        raise ReadTimedOut from None
    except (httpx2.TransportError, httpx2.StreamError):
        raise ReadBrokeOff from None
