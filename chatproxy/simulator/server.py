"""An OpenAI-compatible fake upstream server for tests, the offline demo and benchmarks.

Serves `POST /v1/chat/completions` (JSON and SSE), `POST /v1/completions` (legacy),
`GET /v1/models`, the Responses API, embeddings and moderations
(`chatproxy.simulator.more_routes`), audio and images (`chatproxy.simulator.media_routes`)
and OpenAI's error bodies, in the formats of the OpenAI API reference (see
`chatproxy.simulator.wire`). Latency, chunking and faults are set per server
(`Simulator(...)`) or per request by a `[[sim: key=value ...]]` directive in the last user
message (keys: fault, times, chunks, delay, latency, answer, words, dialect, reasoning,
thought; `times=N` limits the fault to the first N requests with that same message, so a
retry of it succeeds; `dialect=litellm` shapes a stream as LiteLLM's proxy does, and faults
named `context_*` answer as other servers do, see `chatproxy.simulator.dialects`;
`reasoning=...` thinks first, see `chatproxy.simulator.reasoning`). A last message asking to
go on ("Continue...") after an answer cut off is answered with the rest of that answer
(`answers.asked`). Built on aiohttp, so one process holds thousands of slow streams. The
command line that serves it is `chatproxy.simulator.command`.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from aiohttp import web

from chatproxy.simulator import answers, checks, dialects, reasoning, wire
from chatproxy.simulator.media_routes import MediaRoutes
from chatproxy.simulator.more_routes import MoreRoutes
from chatproxy.simulator.plan import FAULTS, Plan, plan_for
from chatproxy.simulator.wire import ApiError

DEFAULT_API_KEY = "sk-sim-local"
MAX_RECORDED = 10_000
MAX_BODY_BYTES = 64 * 1024 * 1024  # above OpenAI's 25 MB uploads, so chatproxy's limit is met first
_BROKEN = b'data: {"id": "chatcmpl-broken", "choices": [\n\n'
_INVALID = object()  # marks a request body that is not JSON
_BODY = web.RequestKey("body", object)  # the parsed JSON body, or _INVALID
_RECORDED = web.RequestKey("recorded", dict)  # the request's entry in Simulator.requests
_Events = tuple[list[bytes], list[bytes], list[bytes]]


def _error_response(error: ApiError) -> web.Response:
    return web.json_response(
        error.body, status=error.status, headers=error.headers, dumps=wire.dumps
    )


def _abort(request: web.BaseRequest) -> None:
    """Drop the connection with a TCP RST (SO_LINGER 0), as a crashed upstream would."""
    transport = request.transport
    if transport is None:
        return
    try:
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except (AttributeError, OSError):
        pass  # no socket to tune: a plain abort still drops the connection
    transport.abort()


class Simulator:
    """An OpenAI-compatible server with configurable latency, chunking and faults.

    `latency`: seconds before the first byte; `chunks`: content chunks per streamed
    answer (None: 1-3 words each); `chunk_delay`: seconds before each content chunk
    (a non-streamed answer waits as long in total); `fault`: one of FAULTS, applied
    to a `fault_rate` fraction of completions (seeded, so runs repeat); `record`:
    keep the last MAX_RECORDED requests in `requests`; `models`: the only models
    it serves, as a provider's server does (others: 404 `model_not_found`; None:
    OpenAI's, `wire.MODELS`); `stream_options` False: a body with that field
    gets a 400, as from servers that do not know it.
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        latency: float = 0.0,
        chunks: int | None = None,
        chunk_delay: float = 0.0,
        fault: str | None = None,
        fault_rate: float = 1.0,
        record: bool = True,
        models: Sequence[str] | None = None,
        stream_options: bool = True,
    ) -> None:
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {FAULTS}")
        self.api_key, self.record = api_key, record
        self.models = tuple(models) if models is not None else None
        self.stream_options = stream_options
        self.fault, self.fault_rate = fault, fault_rate
        self._defaults = Plan(latency, chunks, chunk_delay)
        self._rng = random.Random(0)
        self._requests: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDED)
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = asyncio.Event()
        self._hung: set[asyncio.Future[None]] = set()
        # Requests seen so far per message with a `times=N` directive.
        self._seen: Counter[str] = Counter()

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Requests received, oldest first: `{"method", "path", "json", "headers", "peer"}`.

        Header names are lower-cased and exclude Authorization; `json` is None for a
        body that is not JSON. A streamed answer adds `sent`: the `time.monotonic()`
        at which each content event was written, in order, filled in as it streams
        (Linux's monotonic clock is system-wide: other processes can compare theirs).
        """
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        """Forget the recorded requests and restart the seeded fault sequence."""
        with self._lock:
            self._requests.clear()
        self._rng.seed(0)
        self._seen.clear()

    def make_app(self) -> web.Application:
        """The aiohttp application, for serving it some other way."""
        app = web.Application(middlewares=[self._middleware], client_max_size=MAX_BODY_BYTES)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._legacy)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model}", self._model)
        MoreRoutes(self).add_to(app)  # the Responses API, embeddings, moderations
        MediaRoutes(self).add_to(app)  # audio and images
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen from the running event loop; returns the base URL `http://HOST:PORT/v1`."""
        self._runner = web.AppRunner(
            self.make_app(),
            access_log=None,  # a log line per request costs more than the request
            handle_signals=False,
            shutdown_timeout=1.0,  # then open streams and hung requests are cancelled
            handler_cancellation=True,  # a client that leaves ends its handler
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=2048, reuse_address=True)
        await site.start()
        port = self._runner.addresses[0][1]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"

    async def close(self) -> None:
        """Stop listening and end open requests, hung ones included."""
        for waiter in list(self._hung):
            waiter.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve from a daemon thread with its own event loop; returns the base URL, listening."""
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        ready = threading.Event()
        outcome: dict[str, Any] = {}

        async def serve() -> None:
            self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
            try:
                outcome["url"] = await self.start(host, port)
            except Exception as exc:  # re-raised in the caller's thread
                outcome["error"] = exc
                return
            finally:
                ready.set()
            await self._stopping.wait()
            await self.close()

        self._thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
        self._thread.start()
        ready.wait()
        if "error" in outcome:
            self._thread.join()
            self._thread = None
            raise outcome["error"]
        return outcome["url"]

    def stop(self) -> None:
        """Stop the server started by start_in_thread and wait for its thread."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=10)
        self._thread = self._loop = None

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Record, authenticate and turn every error into OpenAI's error body."""
        try:
            raw = await request.read() if request.body_exists else b""
            try:
                request[_BODY] = json.loads(raw) if raw else None
            except ValueError:
                request[_BODY] = _INVALID
            if self.record:
                self._record(request)
            if request.path.startswith("/v1/"):
                self._authenticate(request.headers.get("Authorization", ""))
                body = request[_BODY]
                if isinstance(body, dict):
                    checks.check_accepted(body, self.models, self.stream_options)
            response = await handler(request)
        except ApiError as exc:
            response = _error_response(exc)
        except web.HTTPException as exc:
            message = exc.reason
            if exc.status in (404, 405):
                message = f"Invalid URL ({request.method} {request.path})"
            response = _error_response(ApiError(exc.status, message))
        if not response.prepared:
            response.headers.update(self._headers())
        return response

    @staticmethod
    def _headers() -> dict[str, str]:
        return {"x-request-id": f"req_{uuid.uuid4().hex}", "openai-version": "2020-10-01"}

    def _record(self, request: web.Request) -> None:
        body = request[_BODY]
        entry = {
            "method": request.method,
            "path": request.path,
            "json": None if body is _INVALID else body,
            "headers": {
                k.lower(): v for k, v in request.headers.items() if k.lower() != "authorization"
            },
            # The client's side of the TCP connection: tells reused connections apart.
            "peer": request.transport.get_extra_info("peername") if request.transport else None,
        }
        request[_RECORDED] = entry
        with self._lock:
            self._requests.append(entry)

    def _authenticate(self, header: str) -> None:
        """401 worded as OpenAI words it, for a missing or a wrong bearer key."""
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(401, wire.NO_KEY)
        if key.strip() != self.api_key:
            raise wire.wrong_key(key.strip())

    @staticmethod
    def _body(request: web.Request) -> dict[str, Any]:
        body = request[_BODY]
        if body is _INVALID or body is None:
            raise ApiError(400, wire.BAD_JSON)
        if not isinstance(body, dict):
            raise ApiError(400, "Invalid request body: expected a JSON object.")
        return body

    def _plan(self, text: str) -> tuple[Plan, str]:
        """Server options overridden by the directive in `text`; returns (plan, text without it)."""
        found, question = answers.parse_directive(text)
        fault = None
        if self.fault is not None and self._rng.random() < self.fault_rate:
            fault = self.fault
        plan, times = plan_for(found, self._defaults, fault)
        if times > 0:
            self._seen[text] += 1
            if self._seen[text] > times:
                plan = replace(plan, fault=None)
        return plan, question

    async def _begin(
        self, request: web.Request, plan: Plan, stream: bool
    ) -> web.StreamResponse | None:
        """Wait out the latency, then inject the plan's fault; None means answer normally."""
        if plan.latency > 0:
            await asyncio.sleep(plan.latency)
        fault = plan.fault
        if fault is None or (stream and fault in ("reset_mid_stream", "malformed_chunk")):
            return None
        if fault in wire.ERROR_FAULTS:
            status, message, type_, param, code = wire.ERROR_FAULTS[fault]
            headers = {"Retry-After": "1"} if status == 429 else None
            raise ApiError(status, message, type_, param, code, headers)
        if fault in dialects.CONTEXT_FAULTS:
            raise ApiError.of(*dialects.CONTEXT_FAULTS[fault])
        if fault == "malformed_chunk":  # a 200 whose body is cut-off JSON
            return web.Response(body=_BROKEN[6:-2], content_type="application/json")
        if fault in ("reset", "reset_mid_stream"):
            _abort(request)
        await self._hang()  # also after a reset, until aiohttp notices it
        return None

    async def _hang(self) -> None:
        """Wait until the client leaves (aiohttp then cancels the handler) or close()."""
        waiter = asyncio.get_running_loop().create_future()
        self._hung.add(waiter)
        try:
            await waiter
        finally:
            self._hung.discard(waiter)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/chat/completions: a `chat.completion`, or `chat.completion.chunk` SSE events."""
        body = self._body(request)
        model = checks.check_request(body, True, self.models or wire.MODELS)
        messages = body["messages"]
        last, history, so_far = answers.asked(messages)  # so_far: an answer to go on with
        plan, question = self._plan(last)
        stream = body.get("stream") is True
        early = await self._begin(request, plan, stream)
        if early is not None:
            return early
        text = answers.compose_answer(history, question, plan.answer, plan.words, so_far)
        text, reason, completion = wire.finish(text, body)
        thinking = reasoning.think(model, plan.reasoning, question, plan.thought)
        n = int(body.get("n") or 1)  # each of the n choices is the same answer, billed n times
        prompt, completion = answers.prompt_tokens(messages, model), completion + thinking.tokens
        use = wire.usage(prompt, completion * n, thinking.reported_tokens * n)
        thoughts, pieces = thinking.stream(answers.split_pieces(text, plan.chunks))
        ident, created = f"chatcmpl-sim{uuid.uuid4().hex[:20]}", int(time.time())
        if stream:
            options = body.get("stream_options") or {}
            usage_choices = dialects.USAGE_CHOICES[plan.dialect]
            events = wire.chat_events(
                ident, created, model, pieces, reason, use, options, usage_choices, n, thoughts
            )
            return await self._stream(request, events, plan)
        await asyncio.sleep(plan.delay * len(pieces))
        content, fields = thinking.content(text), thinking.fields()
        result = wire.chat_completion(ident, created, model, content, reason, use, n, fields)
        return web.json_response(result, dumps=wire.dumps)

    async def _legacy(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/completions: a `text_completion` with a choice per prompt, or its SSE stream."""
        body = self._body(request)
        model = checks.check_request(body, False, self.models or wire.MODELS)
        prompt = body["prompt"]
        prompts = [prompt] if isinstance(prompt, str) else [p for p in prompt if isinstance(p, str)]
        prompts = prompts or [""]
        plan, _ = self._plan(prompts[-1])
        stream = body.get("stream") is True
        early = await self._begin(request, plan, stream)
        if early is not None:
            return early
        choices: list[dict[str, Any]] = []
        pieces: list[tuple[int, str]] = []
        completion = 0
        for index, text in enumerate(prompts):
            question = answers.parse_directive(text)[1]
            asked = [{"role": "user", "content": question}]
            answer = answers.compose_answer(asked, question, plan.answer, plan.words)
            answer, reason, used = wire.finish(answer, body)
            completion += used
            choice = {"text": answer, "index": index, "logprobs": None, "finish_reason": reason}
            choices.append(choice)
            pieces += [(index, p) for p in answers.split_pieces(answer, plan.chunks)]
        use = wire.usage(sum(answers.count_tokens(p, model) for p in prompts), completion)
        ident, created = f"cmpl-sim{uuid.uuid4().hex[:20]}", int(time.time())
        if stream:
            options = body.get("stream_options") or {}
            events = wire.legacy_events(ident, created, model, pieces, choices, use, options)
            return await self._stream(request, events, plan)
        await asyncio.sleep(plan.delay * len(pieces))
        result = wire.legacy_completion(ident, created, model, choices, use)
        return web.json_response(result, dumps=wire.dumps)

    async def _stream(
        self, request: web.Request, events: _Events, plan: Plan
    ) -> web.StreamResponse:
        """Send pre-serialised SSE events: head at once, each body event after a pause, tail."""
        head, body, tail = events
        if plan.fault == "reset_mid_stream":
            body, tail = body[: len(body) // 2], []
        elif plan.fault == "malformed_chunk":
            body, tail = body[:3], [_BROKEN]
        headers = {"Content-Type": "text/event-stream; charset=utf-8"}
        headers["Cache-Control"] = "no-cache"
        response = web.StreamResponse(headers={**headers, **self._headers()})
        await response.prepare(request)
        write, delay = response.write, plan.delay
        sent: list[float] | None = None
        if self.record and _RECORDED in request:
            sent = request[_RECORDED]["sent"] = []
        try:
            if head:
                await write(b"".join(head))
            for item in body:
                if delay:
                    await asyncio.sleep(delay)
                if sent is not None:
                    sent.append(time.monotonic())
                await write(item)
            if tail:
                # The finish, usage and [DONE] events leave together, as from OpenAI.
                await write(b"".join(tail))
            if plan.fault == "reset_mid_stream":
                _abort(request)
                await self._hang()
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away; there is nobody left to tell
        return response

    async def _models(self, request: web.Request) -> web.Response:
        """GET /v1/models: `{"object": "list", "data": [model objects]}`."""
        return web.json_response(wire.model_list(self.models or wire.MODELS), dumps=wire.dumps)

    async def _model(self, request: web.Request) -> web.Response:
        """GET /v1/models/{model}: one model object, or 404 `model_not_found`."""
        name = request.match_info["model"]
        if name not in (self.models or wire.MODELS):
            message = f"The model '{name}' does not exist"
            raise ApiError(404, message, param="model", code="model_not_found")
        return web.json_response(wire.model_object(name), dumps=wire.dumps)
