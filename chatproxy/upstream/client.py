"""The upstream: OpenAI, or any OpenAI-compatible server, asked as the `openai` SDK asks.

One `Upstream` per process (built by `create_app`). Every outbound call lives
here, with a timeout. Failures come out as the errors of `chatproxy.errors`
(DESIGN.md, "Upstream"): bad key → 502 naming OPENAI_API_KEY, 429 → 429 with
Retry-After, timeout → 504, connection failure → 502, context too long → 400,
a model the upstream lacks → 404 (`chatproxy.upstream.failures`).

Two HTTP clients carry the requests, with the SDK's headers, retries and
errors either way (`chatproxy.upstream.responses` is what both hand back):

- the lean client (`chatproxy.upstream.lean`, geventhttpclient's C parser over
  pooled sockets) carries them all on the server's path: the SDK cost 1.21 ms
  of CPU per request and 32 µs per stream event in a gevent worker, and
  `import openai` about 32 MB in every worker, which therefore never imports it;
- the `openai` SDK (`chatproxy.upstream.sdk`, imported only then) when
  OPENAI_PROXY is set: geventhttpclient speaks no SOCKS.

Streams are read as raw SSE (`chatproxy.upstream.streams`) and only the fields
we need are parsed: the SDK's typed chunk objects cost about 110 µs each, raw
lines about 8 µs.

The host and path of every call come from settings (OPENAI_BASE_URL, or
CHATPROXY_UPSTREAMS for several servers to fail over between) and the
paths of `chatproxy.upstream.paths`, never from a client's request: the
pass-through may POST to RAW_PATHS (`post_raw`) and UPLOAD_PATHS (`post_upload`) only.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

from flask import current_app

from chatproxy.config import Settings
from chatproxy.errors import (
    APIError,
    UpstreamError,
    UpstreamNotConfigured,
    UpstreamTimeout,
    error_detail,
)
from chatproxy.metrics import UPSTREAM_ERRORS, UPSTREAM_FAILOVERS, UPSTREAM_LATENCY
from chatproxy.upstream.asked import note_asked
from chatproxy.upstream.failures import server_failed, status_error
from chatproxy.upstream.lean import LeanServer
from chatproxy.upstream.paths import (
    CHAT_PATH,
    PROMPT_FIELDS,
    RAW_PATHS,
    RESPONSE_ID,
    RESPONSE_ROUTES,
    RESPONSES_PATH,
    UPLOAD_PATHS,
)
from chatproxy.upstream.reasoning import reasoning_of, split_think
from chatproxy.upstream.response_stream import ResponsesStream
from chatproxy.upstream.responses import Failure, ReadBrokeOff, ReadTimedOut, UpstreamResponse
from chatproxy.upstream.retries import deadline
from chatproxy.upstream.selection import Selection, Server, body_for
from chatproxy.upstream.streams import ChatStream, PassedStream, RawStream
from chatproxy.upstream_targets import UpstreamTarget

log = logging.getLogger(__name__)

QUESTION_FIELD = "input"
# Where create_app keeps the process's Upstream (app.extensions).
UPSTREAM = "chatproxy.upstream"


@dataclass
class ChatAnswer:
    """A finished answer: `content`, `model`, `finish_reason` and the upstream's `usage`;
    `reasoning`, the model's reasoning when the upstream sent any (`upstream.reasoning`)."""

    content: str
    model: str | None
    finish_reason: str | None
    usage: dict[str, Any] | None
    reasoning: str | None = None


@dataclass
class RawAnswer:
    """A whole answer passed through: the upstream's JSON `body` bytes as they came, its `usage`
    and its `id` (a string, else None)."""

    body: bytes
    usage: dict[str, Any] | None
    id: str | None = None


class Sender(Protocol):
    """One upstream server's HTTP client: the lean one, or the SDK with OPENAI_PROXY."""

    target: UpstreamTarget  # the server it asks

    def post(self, path: str, body: dict[str, Any]) -> UpstreamResponse:
        """`POST path` with the JSON `body`, retried as the SDK retries; raises Failure."""
        ...

    def call(self, method: str, path: str) -> UpstreamResponse:
        """`method` on `path` (its query string included) without a body, retried as `post`."""
        ...

    def post_bytes(self, path: str, data: bytes, content_type: str) -> UpstreamResponse:
        """`POST path` with `data` as it is, sent as `content_type`, retried as `post`."""
        ...


class Upstream:
    """The process's upstream clients, one per upstream server, built from settings.

    With several servers (CHATPROXY_UPSTREAMS) a request goes to those that
    serve its model (`selection`; 404 `model_not_found` when none does), the
    first one (or one drawn by weight, with CHATPROXY_UPSTREAM_ORDER=weight); when it
    fails with a connection error, a timeout, 401, 403, 408, 409, 429 or a 5xx
    after the retries, the next one is asked (not for a context-length
    error or a model it lacks: the request's fault, see `failures`). A server that failed
    CHATPROXY_UPSTREAM_FAILURES requests in a row that another server then
    answered is set aside for CHATPROXY_UPSTREAM_COOLDOWN seconds: asked only
    after the others. A request that fails everywhere counts against no
    server (it may be the request's fault). The counts are per process.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        targets = settings.upstream_targets
        # Looked for in passed-through answers, which must never carry one.
        self.keys_bytes = tuple(target.api_key.encode() for target in targets)
        self._servers = [Server(target, self._sender(target)) for target in targets]
        self.selection = Selection(self._servers, settings)

    def _sender(self, target: UpstreamTarget) -> Sender:
        """The lean client for `target`, or the SDK when OPENAI_PROXY is set (any proxy:
        geventhttpclient speaks no SOCKS); the SDK is imported only then."""
        if self.settings.openai_proxy:
            from chatproxy.upstream.sdk import SdkServer

            return SdkServer(target, self.settings)
        return LeanServer(target, self.settings)

    @property
    def configured(self) -> bool:
        """True when there is a server and a key to call it with."""
        return bool(self._servers)

    def complete_chat(self, params: dict[str, Any]) -> ChatAnswer:
        """Ask for one whole chat completion (`POST /chat/completions`, not streamed).

        `params` are the request's body fields (`model`, `messages`, ...).
        The reasoning is read in each dialect: `message.reasoning_content` or
        `message.reasoning`, else a leading `<think>` block of the content.
        Raises APIError subclasses, never an SDK or network exception.
        """
        _, completion = self._read_json(self._post(CHAT_PATH, params, QUESTION_FIELD))
        try:
            choice = completion["choices"][0]
            message = choice["message"]
            content = message.get("content") or ""
            reasoning = reasoning_of(message)
            if reasoning is None and isinstance(content, str):
                reasoning, content = split_think(content)
            return ChatAnswer(
                content=content,
                model=completion.get("model"),
                finish_reason=choice.get("finish_reason"),
                usage=completion.get("usage"),
                reasoning=reasoning,
            )
        except (KeyError, IndexError, TypeError, AttributeError):
            raise UpstreamError(
                "The upstream's answer has no choices[0].message.",
                code="upstream_malformed",
            ) from None

    def complete_raw(self, path: str, body: dict[str, Any]) -> RawAnswer:
        """One whole answer to pass through: `POST path` (one of RAW_PATHS) with `body` as is.

        The answer's bytes are kept as they came (never re-serialised, never
        with the upstream key); they must be a JSON object, else UpstreamError
        `upstream_malformed`. Raises APIError subclasses, as `post_raw` does.
        """
        return self._raw_answer(self.post_raw(path, body))

    def call_raw(
        self, method: str, response_id: str, route: str = "", query: dict[str, Any] | None = None
    ) -> RawAnswer:
        """A stored response's route, passed through: `method` on `/responses/{response_id}`
        followed by `route` (one of RESPONSE_ROUTES), with `query` as its query string.

        `response_id` must look like an id (RESPONSE_ID) and `route` be one of
        RESPONSE_ROUTES (ValueError otherwise): the caller has checked the id is
        its caller's, so the path is one the upstream made. The answer must be
        a JSON object, as `complete_raw`'s; raises APIError subclasses.
        """
        if route not in RESPONSE_ROUTES or not RESPONSE_ID.fullmatch(response_id):
            raise ValueError(f"not a stored response's route: {response_id!r} {route!r}")
        path = f"{RESPONSES_PATH}/{response_id}{route}"
        if query:
            path += "?" + urlencode(query, doseq=True)
        label = f"{RESPONSES_PATH}/{{id}}{route}"  # one metrics label for every id
        response = self._send(lambda sender: sender.call(method, path), label, "input", None)
        return self._raw_answer(response)

    def _raw_answer(self, response: UpstreamResponse) -> RawAnswer:
        """The whole answer of `response`, its bytes kept (see `complete_raw`)."""
        content, answer = self._read_json(response)
        if not isinstance(answer, dict):
            raise UpstreamError(
                "The upstream answered with something that is not a JSON object.",
                code="upstream_malformed",
            )
        for key in self.keys_bytes:
            if key in content:
                content = content.replace(key, b"[redacted]")
        usage, ident = answer.get("usage"), answer.get("id")
        return RawAnswer(
            content,
            usage if isinstance(usage, dict) else None,
            ident if isinstance(ident, str) else None,
        )

    def open_chat_stream(self, params: dict[str, Any]) -> ChatStream:
        """Start a streamed chat completion; the request is sent before this returns.

        Errors before the first byte (bad key, 429, timeout, ...) raise here, so
        the caller can answer with a proper status instead of opening a stream.
        Usage is asked for with `stream_options.include_usage` (left out for an
        upstream that refuses it: the caller then counts the usage).
        """
        params = {**params, "stream": True, "stream_options": {"include_usage": True}}
        return ChatStream(self._post(CHAT_PATH, params, QUESTION_FIELD), self)

    def open_raw_stream(
        self, path: str, body: dict[str, Any], hide_usage: bool = False
    ) -> PassedStream:
        """Start a stream to pass through: `POST path` (one of RAW_PATHS) with `body` as is.

        `body` asks for the stream itself (`"stream": true`); with `hide_usage`
        the usage chunk is read but not passed on. Errors before the first
        byte raise here, as for `open_chat_stream`. A Responses stream
        (RESPONSES_PATH) is a ResponsesStream, others a RawStream.
        """
        if path == RESPONSES_PATH:
            return ResponsesStream(self.post_raw(path, body), self)
        return RawStream(self.post_raw(path, body), self, hide_usage=hide_usage)

    def post_raw(self, path: str, body: dict[str, Any]) -> UpstreamResponse:
        """`POST path` under the configured base URL, `body` sent as given; the body unread.

        `path` must be one of RAW_PATHS (ValueError otherwise), so nothing in a
        client's request picks the host or the path; no header of the client's
        is sent (chatproxy's key and the headers the SDK sends, `lean`). The
        caller closes the response. Raises APIError subclasses (see `_map_failure`).
        """
        if path not in RAW_PATHS:
            raise ValueError(f"not an upstream path chatproxy passes requests to: {path!r}")
        return self._post(path, body, PROMPT_FIELDS[path])

    def post_upload(
        self, path: str, data: bytes, content_type: str, model: str
    ) -> UpstreamResponse:
        """`POST path` (one of UPLOAD_PATHS, else ValueError) with a client's multipart/form-data
        body `data`, sent on byte for byte with its `content_type` (the boundary in it);
        `model` is the one it names. The body unread; raises as `post_raw` does."""
        if path not in UPLOAD_PATHS:
            raise ValueError(f"not an upstream path chatproxy passes uploads to: {path!r}")
        return self._send(
            lambda sender: sender.post_bytes(path, data, content_type),
            path,
            PROMPT_FIELDS[path],
            {"model": model},
        )

    def _post(self, path: str, body: dict[str, Any], prompt_field: str) -> UpstreamResponse:
        """`POST path` with the JSON `body`, as each server takes it (`selection.body_for`;
        see `_send`)."""
        return self._send(
            lambda sender: sender.post(path, body_for(body, sender.target)),
            path,
            prompt_field,
            body,
        )

    def _send(
        self,
        request: Callable[[Sender], UpstreamResponse],
        path: str,
        prompt_field: str,
        body: dict[str, Any] | None,
        model: str | None = None,
    ) -> UpstreamResponse:
        """`request(sender)` with the SDK's retries, headers and errors, failing over in turn
        among the servers that serve `model` (else `body`'s `model`; every server when
        neither names one). `request` sends the body as `sender.target` takes it
        (`selection.body_for`: an alias's real name, no refused `stream_options`).

        No retry starts after CHATPROXY_RETRY_DEADLINE seconds (`retries`);
        failing over to the next server still does.

        Returns the response with its body unread; the caller closes it.
        Raises NotFound (404 `model_not_found`) before asking anyone when no
        server serves `model`; the mapped error of the last server asked when none answered, or
        at once when the request is at fault (`failures.server_failed`);
        `prompt_field` is the client's field a context-length error names.
        """
        if not self._servers:
            raise UpstreamNotConfigured(
                "No upstream is configured: set OPENAI_API_KEY "
                "(or CHATPROXY_UPSTREAM=simulator for the built-in simulator)."
            )
        if model is None and body is not None and isinstance(body.get("model"), str):
            model = body["model"]
        servers = self._in_turn(model)
        failed: list[Server] = []
        retries_end = time.monotonic() + self.settings.retry_deadline
        for number, server in enumerate(servers, 1):
            started = time.perf_counter()
            note_asked(server.target.name)
            try:
                with deadline(retries_end):
                    response = request(server.sender)
            except Failure as failure:
                error = self._map_failure(failure, prompt_field, model)
                UPSTREAM_ERRORS.labels(error.code or "upstream_error").inc()
                status = failure.status
                if not server_failed(status, error) or number == len(servers):
                    # Failed everywhere: the request, not a server, may be at fault.
                    raise error from None
                failed.append(server)
                UPSTREAM_FAILOVERS.labels(server.target.name).inc()
                log.warning(
                    "upstream %s failed (%s); asking %s",
                    server.target.name,
                    error.code,
                    servers[number].target.name,
                )
                continue
            self.selection.answered(server, failed)  # the failed ones count a failure
            UPSTREAM_LATENCY.labels(path).observe(time.perf_counter() - started)
            response.sent_at = started  # for the time to first token
            return response
        raise AssertionError("unreachable: the last server's failure is raised above")

    def set_aside(self) -> dict[str, float]:
        """Each server's name and the seconds it stays set aside (0: asked), in this process."""
        now = time.monotonic()
        return {s.target.name: max(0.0, s.set_aside_until - now) for s in self._servers}

    def _in_turn(self, model: str | None = None) -> list[Server]:
        """The servers to ask for one request of `model`, in turn (`Selection.in_turn`):
        those that serve it, all for None. Raises NotFound (404 `model_not_found`) when
        none serves it."""
        return self.selection.in_turn(self.selection.serving(model))

    def _read_json(self, response: UpstreamResponse) -> tuple[bytes, Any]:
        """Read a whole JSON answer: (its bytes, its value); closes the response.

        Raises UpstreamTimeout, or UpstreamError when the body breaks off or is not JSON.
        """
        try:
            content = response.read()
            return content, json.loads(content)
        except ReadTimedOut:
            raise self.timeout_error() from None
        except ReadBrokeOff:
            raise UpstreamError(
                "The upstream connection broke off before the answer was complete.",
                code="upstream_interrupted",
            ) from None
        except ValueError:
            raise UpstreamError(
                "The upstream answered with something that is not JSON.",
                code="upstream_malformed",
            ) from None
        finally:
            response.close()

    def timeout_error(self) -> UpstreamTimeout:
        """The error for an upstream that did not answer within CHATPROXY_TIMEOUT."""
        return UpstreamTimeout(
            f"The upstream did not answer within {self.settings.timeout:g} s (CHATPROXY_TIMEOUT)."
        )

    def _map_failure(self, failure: Failure, context_param: str, model: object) -> APIError:
        """Translate a failed request into the error a client of chatproxy should see.

        `context_param` and `model` are for `failures.status_error`.
        """
        if failure.kind == "timeout":
            log.warning("upstream timeout")
            return self.timeout_error()
        if failure.kind == "unreachable":
            log.warning("upstream unreachable: %s", failure.cause)
            return UpstreamError(
                "The connection to the upstream failed: check "
                f"{self._settings_named('OPENAI_BASE_URL')} and OPENAI_PROXY.",
                code="upstream_unreachable",
            )
        if failure.status is None:
            return UpstreamError("The upstream's answer could not be read.")
        detail = error_detail(failure.body)
        error = status_error(
            failure.status,
            detail,
            failure.headers,
            context_param=context_param,
            model=model,
            named=self._settings_named,
            scrub=self.scrub,
        )
        log.warning("upstream answered %s (%s)", failure.status, error.code)
        return error

    def _settings_named(self, name: str) -> str:
        """`name`, or CHATPROXY_UPSTREAMS when that setting replaces it."""
        return "CHATPROXY_UPSTREAMS" if self.settings.upstreams else name

    def scrub(self, text: str) -> str:
        """`text` with any upstream key, should one be there, replaced by `[redacted]`."""
        for server in self._servers:
            text = text.replace(server.target.api_key, "[redacted]")
        return text


def current_upstream() -> Upstream:
    """The current process's upstream client (one per process, made by create_app)."""
    return current_app.extensions[UPSTREAM]  # type: ignore[no-any-return]
