"""Server-sent events: chatproxy's own answer events, passed-through streams, keep-alives.

Our events (DESIGN.md): `event: reasoning` / `data: {"content": str}` for each
piece of the model's reasoning (before and between the answer's), `event: delta`
/ `data: {"content": str}` for each piece of the answer, then `event: done` /
`data: {"finish_reason", "usage", "model", "cost"}` (`cost` in USD, or null;
`reasoning_seconds` too when the model reasoned), or `event: error` /
`data: {"error": {...}}` in OpenAI's error shape. `/v1` streams are the
upstream's own events (OpenAI's chunks and `data: [DONE]`), ended by a
`data: {"error": {...}}` event if they break.
Format: the HTML Living Standard, "Server-sent events".
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Response

from chatproxy.errors import APIError
from chatproxy.metrics import STREAMS_IN_FLIGHT, UPSTREAM_ERRORS
from chatproxy.upstream.reasoning import Reasoning
from chatproxy.upstream.streams import ChatStream, PassedStream, StreamClosed, UpstreamStream

KEEPALIVE = b": keep-alive\n\n"
HEADERS = {
    "Cache-Control": "no-cache",
    # nginx would otherwise buffer the stream and deliver the answer all at once.
    "X-Accel-Buffering": "no",
}
_END = object()
# (usage, model the upstream reported) -> cost in USD, or None without a price.
CostOf = Callable[[dict[str, Any] | None, str | None], float | None]


@dataclass(frozen=True)
class Said:
    """What a streamed answer said: its `content`, the model's `reasoning`, and how many
    seconds the reasoning streamed before the answer started (None without reasoning)."""

    content: str
    reasoning: str = ""
    reasoning_seconds: float | None = None


# (what was said so far, upstream error or None, client went away) -> fields for the done event.
OnEnd = Callable[[Said, APIError | None, bool], dict[str, Any]]
log = logging.getLogger(__name__)


def event(name: str, data: Any) -> bytes:
    """One SSE event: `event: NAME` and `data: JSON` lines, then a blank line."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {name}\ndata: {payload}\n\n".encode()


@dataclass(frozen=True)
class Checkpoint:
    """Saves an answer's text and reasoning so far (`save(text, reasoning)`) every `every`
    seconds while it streams.

    `every` 0 saves nothing.
    """

    save: Callable[[str, str], None]
    every: float


def answer_events(
    stream: ChatStream,
    cost_of: CostOf,
    on_end: OnEnd | None = None,
    checkpoint: Checkpoint | None = None,
) -> Generator[bytes]:
    """The events of one streamed answer; a failure mid-stream becomes `event: error`.

    `cost_of(usage, model)` prices the finished answer for its `done` event.
    The model's reasoning (`Reasoning` pieces of the stream) goes out as
    `event: reasoning`, the answer as `event: delta`.
    `on_end(said, error, closed)` runs once the answer ends, however it
    ends: `said` is all the text and reasoning that arrived (`Said`), `error`
    the upstream's failure or None, `closed` True when the client went away;
    after a whole answer, the fields it returns are added to the `done` event.
    `checkpoint` saves the text and reasoning so far as they grow.
    """
    pieces: list[str] = []
    thoughts: list[str] = []
    thinking_since: float | None = None  # when the first piece of reasoning came
    thought_for: float | None = None  # seconds from then to the answer's first piece
    every = checkpoint.every if checkpoint is not None and checkpoint.every > 0 else 0.0
    saved_at = time.monotonic()

    try:
        for piece in stream:
            if not piece:
                yield b""  # silence upstream: a keep-alive goes out (with_keepalive)
                continue
            if piece.__class__ is Reasoning:
                if thinking_since is None:
                    thinking_since = time.monotonic()
                thoughts.append(piece)
                yield event("reasoning", {"content": piece})
            else:
                if thinking_since is not None and thought_for is None:
                    thought_for = time.monotonic() - thinking_since
                pieces.append(piece)
                yield event("delta", {"content": piece})
            if every and time.monotonic() - saved_at >= every:
                checkpoint.save("".join(pieces), "".join(thoughts))  # type: ignore[union-attr]
                saved_at = time.monotonic()
    except StreamClosed:
        log.info("client went away mid-answer")
        if on_end is not None:
            on_end(_said(pieces, thoughts, thinking_since, thought_for), None, True)
        return
    except GeneratorExit:  # closed while read in this greenlet: the client went away
        log.info("client went away mid-answer")
        if on_end is not None:
            on_end(_said(pieces, thoughts, thinking_since, thought_for), None, True)
        raise
    except APIError as error:
        log.warning("stream ended early: %s", error.code)
        UPSTREAM_ERRORS.labels(error.code or "upstream_error").inc()
        if on_end is not None:
            on_end(_said(pieces, thoughts, thinking_since, thought_for), error, False)
        yield event("error", error.body())
        return
    finally:
        stream.close()
    ended = _said(pieces, thoughts, thinking_since, thought_for)
    extra = on_end(ended, None, False) if on_end is not None else {}
    usage, model = stream.usage, stream.model
    done = {
        "finish_reason": stream.finish_reason,
        "usage": usage,
        "model": model,
        "cost": cost_of(usage, model),
        **extra,
    }
    if ended.reasoning_seconds is not None:
        done["reasoning_seconds"] = round(ended.reasoning_seconds, 3)
    yield event("done", done)


def _said(
    pieces: list[str], thoughts: list[str], thinking_since: float | None, thought_for: float | None
) -> Said:
    """What a stream said so far; the reasoning's seconds run to now when no answer followed."""
    if thinking_since is not None and thought_for is None:
        thought_for = time.monotonic() - thinking_since
    return Said("".join(pieces), "".join(thoughts), thought_for)


def passthrough_events(
    stream: PassedStream,
    on_end: Callable[[], None] | None = None,
    tap: Callable[[bytes], None] | None = None,
    error_event: Callable[[APIError], bytes] | None = None,
) -> Generator[bytes]:
    """The upstream's events as they came; a failure mid-stream ends them with one error event.

    The error event is `error_event(error)`, by default `data: {"error": {...}}`
    in OpenAI's shape, with no `[DONE]` after it: the openai SDK raises
    APIError on it. `tap(piece)` sees each piece, error event included, before
    it is passed on (b"", the stream's mark of silence, it does not).
    `on_end()` runs once the stream ends, however it ends (the stream's
    `usage` is then known).
    """
    events = _ending_on_failure(iter(stream), stream, error_event or openai_error_event)
    try:
        if tap is None:
            yield from events
        else:
            for piece in events:
                if piece:
                    tap(piece)
                yield piece
    finally:
        events.close()  # at once, not when collected: it closes the upstream stream
        if on_end is not None:
            on_end()


def openai_error_event(error: APIError) -> bytes:
    """`data: {"error": {...}}` and a blank line: an error as OpenAI puts it in a stream."""
    payload = json.dumps(error.body(), ensure_ascii=False, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


def responses_error_event(error: APIError, sequence_number: int) -> bytes:
    """A Responses API stream's `error` event for a failure of ours (OpenAI API reference,
    "Responses" → "Streaming events" → `error`): `{"type": "error", "code", "message",
    "param", "sequence_number"}`, with OpenAI's error object as `error` too, on which the
    openai SDK raises APIError as it does for a chat stream's."""
    detail = error.body()["error"]
    data = {
        "type": "error",
        "code": detail.get("code"),
        "message": detail.get("message"),
        "param": detail.get("param"),
        "sequence_number": sequence_number,
        "error": detail,
    }
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: error\ndata: {payload}\n\n".encode()


def _ending_on_failure(
    events: Iterator[bytes], stream: UpstreamStream, error_event: Callable[[APIError], bytes]
) -> Generator[bytes]:
    """Pass `events` on; an upstream failure becomes `error_event(error)`, a client gone is logged.

    The stream is closed at the end, however it ends.
    """
    try:
        yield from events
    except StreamClosed:
        log.info("client went away mid-answer")
    except GeneratorExit:  # closed while read in this greenlet: the client went away
        log.info("client went away mid-answer")
        raise
    except APIError as error:
        log.warning("stream ended early: %s", error.code)
        UPSTREAM_ERRORS.labels(error.code or "upstream_error").inc()
        yield error_event(error)
    finally:
        stream.close()


def with_keepalive(
    events: Generator[bytes], stream: UpstreamStream, interval: float
) -> Iterator[bytes]:
    """Pass on `events`, the events of `stream`, adding a comment line whenever none came for
    `interval` seconds; the stream is closed when the client goes away or the events end.

    When the stream can mark silence (`UpstreamStream.mark_idle`: the lean
    client), its events carry an empty piece for it and are read here, in the
    response's own greenlet. Otherwise (the SDK's) they are pulled in a helper
    thread, so that the wait can time out: at 1,000 streams that thread, its
    queue and the timed waits cost a worker a quarter of its CPU.
    """
    if stream.mark_idle(interval):
        return _marked_keepalive(events, stream.close)
    return _pumped_keepalive(events, interval, stream.close)


def _marked_keepalive(events: Generator[bytes], on_close: Callable[[], None]) -> Iterator[bytes]:
    """`events` with each empty piece (silence) replaced by a keep-alive comment.

    Closed early (the client went away), it closes `events` at once, so that
    they store what arrived (`answer_events`, `passthrough_events`).
    """
    STREAMS_IN_FLIGHT.inc()
    try:
        for piece in events:
            yield piece or KEEPALIVE
    finally:
        STREAMS_IN_FLIGHT.dec()
        events.close()
        on_close()


def _pumped_keepalive(
    events: Iterator[bytes], interval: float, on_close: Callable[[], None]
) -> Iterator[bytes]:
    """`events`, pulled in a helper thread, with a keep-alive comment after each `interval`
    seconds without one; `on_close` must make a blocked read fail, so the helper ends too."""
    pieces: queue.SimpleQueue[object] = queue.SimpleQueue()

    def pump() -> None:
        try:
            for piece in events:
                pieces.put(piece)
        finally:
            pieces.put(_END)

    threading.Thread(target=pump, daemon=True, name="sse-pump").start()
    STREAMS_IN_FLIGHT.inc()
    try:
        while True:
            try:
                piece = pieces.get(timeout=interval)
            except queue.Empty:
                yield KEEPALIVE
                continue
            if piece is _END:
                return
            if piece:  # not a mark of silence (none comes from the SDK's streams)
                yield piece  # type: ignore[misc]
    finally:
        STREAMS_IN_FLIGHT.dec()
        on_close()


def stream_response(
    stream: ChatStream,
    keepalive_interval: float,
    cost_of: CostOf,
    on_end: OnEnd | None = None,
    headers: Mapping[str, str] | None = None,
    checkpoint: Checkpoint | None = None,
) -> Response:
    """A `text/event-stream` response carrying one answer, with keep-alives.

    `cost_of(usage, model)` gives the answer's cost in USD, or None;
    `on_end` stores how the answer ended and `checkpoint` saves it while it
    streams (see `answer_events`).
    """
    events = answer_events(stream, cost_of, on_end, checkpoint)
    body = with_keepalive(events, stream, keepalive_interval)
    return Response(body, mimetype="text/event-stream", headers={**HEADERS, **(headers or {})})


def passthrough_response(
    stream: PassedStream,
    keepalive_interval: float,
    on_end: Callable[[], None] | None = None,
    tap: Callable[[bytes], None] | None = None,
    error_event: Callable[[APIError], bytes] | None = None,
) -> Response:
    """A `text/event-stream` response passing the upstream's stream on, with keep-alives.

    `tap` sees what is passed on, `error_event` makes the event a failure ends
    it with and `on_end()` runs when the stream has ended (see `passthrough_events`).
    """
    events = passthrough_events(stream, on_end, tap, error_event)
    body = with_keepalive(events, stream, keepalive_interval)
    return Response(body, mimetype="text/event-stream", headers=HEADERS)
