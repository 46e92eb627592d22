"""Streamed answers being read from the upstream: as content pieces, or passed through as they came.

Both read OpenAI's SSE stream (OpenAI API reference, "Streaming": `data: {chunk}`
events, each ended by a blank line, then `data: [DONE]`) from an `UpstreamResponse`
whose body is still unread (`Upstream.open_chat_stream`, `open_raw_stream`), from
either HTTP client (`chatproxy.upstream.responses`).
A stream that breaks raises UpstreamError or UpstreamTimeout from the iteration;
one closed on our side (the client went away) raises StreamClosed instead.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from chatproxy.errors import UpstreamError, UpstreamTimeout, error_detail
from chatproxy.metrics import TIME_TO_FIRST_TOKEN
from chatproxy.upstream.events import (
    USAGE_KEY,
    ends_with_done,
    events_end,
    texts_of,
    usage_in,
    without_usage_chunk,
)
from chatproxy.upstream.reasoning import LeadingThink, Reasoning
from chatproxy.upstream.responses import ReadBrokeOff, ReadTimedOut, UpstreamResponse

_FINISH_KEY = b'"finish_reason":'
_DONE_ENDS = (b"[DONE]\n\n", b"[DONE]\r\n\r\n")
KEPT_BYTES = 64 * 1024  # of a passed-through stream, kept to count its tokens if need be
_NOTHING: dict[str, Any] = {}


class UpstreamClient(Protocol):
    """What a stream needs of the client that opened it (`chatproxy.upstream.client.Upstream`)."""

    keys_bytes: tuple[bytes, ...]  # the upstream keys, to blank out of what is passed on

    def timeout_error(self) -> UpstreamTimeout:
        """The error for a read that timed out."""
        ...

    def scrub(self, text: str) -> str:
        """`text` with any upstream key replaced by `[redacted]`."""
        ...


class StreamClosed(Exception):
    """The stream was closed on our side mid-answer: the client went away."""


class UpstreamStream:
    """An upstream response being read; `close()` from another thread ends the read."""

    def __init__(self, response: UpstreamResponse, upstream: UpstreamClient) -> None:
        self._response = response
        self._upstream = upstream
        self._closed = False
        # When the request went upstream (Upstream._post), for the time to first token.
        self._sent_at: float | None = response.sent_at
        # time.perf_counter() when the first piece arrived (None until then): the request log's.
        self.first_piece_at: float | None = None
        self._idle: float | None = None  # see mark_idle

    def mark_idle(self, seconds: float) -> bool:
        """Make the iteration yield an empty piece ("" or b"") after each `seconds` without a
        byte from the upstream, before it starts; False when the response cannot (the SDK's),
        and a reader that must hear of silence times it itself."""
        if not self._response.marks_idle:
            return False
        self._idle = seconds
        return True

    def _first_piece(self) -> None:
        """Record the time to first token of this stream."""
        if self.first_piece_at is None:
            self.first_piece_at = time.perf_counter()
        if self._sent_at is not None:
            path = self._response.path.rsplit("/", 2)[-1]
            TIME_TO_FIRST_TOKEN.labels(path).observe(time.perf_counter() - self._sent_at)
            self._sent_at = None

    def close(self) -> None:
        """Release the upstream connection (safe to call more than once).

        Called from another thread mid-answer (the client went away), it makes
        the iteration end with StreamClosed instead of an upstream error.
        """
        self._closed = True
        self._response.close()

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Turn a failure while reading the body into chatproxy's errors; release the body."""
        try:
            yield
        except ReadTimedOut:
            raise self._upstream.timeout_error() from None
        except ReadBrokeOff:
            if self._closed:
                raise StreamClosed from None
            raise UpstreamError(
                "The upstream connection broke off mid-answer; the answer is incomplete.",
                code="upstream_interrupted",
            ) from None
        finally:
            self._response.close()

    def _ended_early(self) -> Exception:
        """What a body that ended before the answer did is: StreamClosed if we closed it."""
        if self._closed:
            return StreamClosed()
        return UpstreamError(
            "The upstream ended the stream early; the answer is incomplete.",
            code="upstream_interrupted",
        )


class ChatStream(UpstreamStream):
    """An open streamed chat completion: iterate for content pieces, then read the result.

    Iterating yields each non-empty `delta.content` of choice 0 as a `str`
    (and "" for silence, after `mark_idle`), and the model's reasoning as
    `Reasoning` pieces (a `str` too), in each
    dialect of `chatproxy.upstream.reasoning`: `delta.reasoning_content` or
    `delta.reasoning` (before the chunk's content), or a leading `<think>`
    block of the content, read only until the answer starts. Afterwards
    `finish_reason`, `usage` and `model` hold what the upstream reported. A
    stream that breaks (connection reset, a chunk that is not JSON, an error
    event, an end without `[DONE]`) raises UpstreamError or UpstreamTimeout
    from the iteration. Chunk format: OpenAI API reference,
    "The chat completion chunk object".
    """

    def __init__(self, response: UpstreamResponse, upstream: UpstreamClient) -> None:
        super().__init__(response, upstream)
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None

    def __iter__(self) -> Iterator[str]:
        done = False
        think = LeadingThink()
        with self._reading():
            for line in self._response.iter_lines(self._idle):
                if line is None:
                    yield ""  # silence (mark_idle)
                    continue
                if done or not line.startswith("data:"):
                    continue  # blank separators, comments, `event:` lines
                data = line[5:].strip()
                if data == "[DONE]":
                    # Read on to the end of the body (it ends right after [DONE]):
                    # only a response read to its end gives its connection back to the pool.
                    done = True
                    continue
                try:
                    chunk = json.loads(data)
                    choices = chunk.get("choices") or ()
                except (ValueError, AttributeError):
                    raise UpstreamError(
                        "The upstream sent a malformed chunk; the answer is incomplete.",
                        code="upstream_malformed_chunk",
                    ) from None
                if chunk.get("error"):
                    message = error_detail(chunk).get("message") or "unknown error"
                    raise UpstreamError(
                        "The upstream reported an error mid-answer: "
                        + self._upstream.scrub(str(message)),
                        code="upstream_stream_error",
                    )
                if self.model is None:
                    self.model = chunk.get("model")
                for choice in choices:
                    if choice.get("index", 0) != 0:
                        continue
                    delta = choice.get("delta") or _NOTHING
                    thought = delta.get("reasoning_content") or delta.get("reasoning")
                    if thought and thought.__class__ is str:
                        if self._sent_at is not None:
                            self._first_piece()
                        yield Reasoning(thought)
                    content = delta.get("content")
                    if content:
                        if self._sent_at is not None:
                            self._first_piece()
                        if think.done:
                            yield content
                        else:
                            yield from think.feed(content)
                    if choice.get("finish_reason"):
                        self.finish_reason = choice["finish_reason"]
                if chunk.get("usage"):
                    self.usage = chunk["usage"]
            yield from think.end()
        # Some servers omit [DONE]; a finish_reason still means the answer is whole.
        if not done and self.finish_reason is None:
            raise self._ended_early()


class PassedStream(UpstreamStream):
    """An open stream passed through as the upstream sent it: iterate for its events as bytes.

    Each item is one or more whole SSE events (lines and the blank line that
    ends each), byte for byte as they arrived, never part of one, so a
    keep-alive comment can go between two items (and b"" for silence, after
    `mark_idle`). The upstream key never passes, even should an upstream echo
    it. What a kind of stream reads on the way (its usage) and how it knows it
    is whole are its subclass's: `_look` sees each item before it is passed
    on, `_whole` the last one once the body ended. A break (reset, timeout),
    or an end that is not whole, raises UpstreamError or UpstreamTimeout after
    the events that did arrive.
    """

    def __init__(self, response: UpstreamResponse, upstream: UpstreamClient) -> None:
        super().__init__(response, upstream)
        self.usage: dict[str, Any] | None = None
        # The first KEPT_BYTES of the events, to count the answer's tokens when no
        # usage comes (`received_text`); the count of all bytes passed on.
        self._kept: list[bytes] = []
        self._kept_bytes = self._passed_bytes = 0

    def _look(self, events: bytes) -> bytes:
        """Read what is needed of `events` (whole events, before they are passed on); returns
        what to pass on of them (b"": nothing)."""
        return events

    def _whole(self, last: bytes) -> bool:
        """True when the stream, whose `last` item was this, ended as a whole answer does."""
        return True

    def __iter__(self) -> Iterator[bytes]:
        events = pending = b""
        keys = self._upstream.keys_bytes
        with self._reading():
            for data in self._response.iter_bytes(self._idle):
                if not data:
                    yield b""  # silence (mark_idle)
                    continue
                if pending:
                    data = pending + data
                if data.endswith(b"\n\n"):  # the usual: a read ends with whole events
                    events, pending = data, b""
                else:
                    end = events_end(data)
                    events, pending = data[:end], data[end:]
                    if not events:
                        continue
                for key in keys:
                    if key in events:
                        events = events.replace(key, b"[redacted]")
                events = self._look(events)
                if not events:
                    continue
                if self._sent_at is not None:
                    self._first_piece()
                self._keep(events)
                yield events
            if pending.strip():  # a last event without its blank line
                events = self._look(pending.rstrip(b"\r\n") + b"\n\n")
                if events:
                    self._keep(events)
                    yield events
        if not self._whole(events):
            raise self._ended_early()

    def _keep(self, events: bytes) -> None:
        self._passed_bytes += len(events)
        if self._kept_bytes < KEPT_BYTES:
            self._kept.append(events)
            self._kept_bytes += len(events)

    def _kept_data(self) -> Iterator[Any]:
        """The JSON of each `data:` line of the kept events (but `[DONE]` and what is not JSON)."""
        for line in b"".join(self._kept).splitlines():
            if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
                continue
            try:
                yield json.loads(line[5:])
            except ValueError:
                continue

    def received_text(self) -> tuple[str, float]:
        """The text the passed-on events carried, and how many times more bytes passed on
        (for counting an answer's tokens when no usage came); each kind of stream's own."""
        return "", self._ratio()

    def _ratio(self) -> float:
        """How many times more bytes passed on than were kept (1.0 when all were)."""
        return self._passed_bytes / self._kept_bytes if self._kept_bytes else 1.0


class RawStream(PassedStream):
    """A chat or legacy completion stream passed through (see `PassedStream`).

    Chunks are not parsed (the SDK's typed chunks cost about 110 µs each,
    passing bytes on about 2 µs): only the one whose `"usage":` holds an
    object is, and `usage` then holds it (OpenAI's last chunk with
    `stream_options.include_usage`; None when the client did not ask for it).
    With `hide_usage`, that chunk is not passed on when it carries nothing else
    (`usage_only`: OpenAI's has no choices, LiteLLM's one with an empty delta).

    Whole: it ended with `[DONE]` or after a `finish_reason`; an error event
    of the upstream's own is passed on and then the stream ends without another.
    """

    def __init__(
        self, response: UpstreamResponse, upstream: UpstreamClient, hide_usage: bool = False
    ) -> None:
        super().__init__(response, upstream)
        self.hide_usage = hide_usage
        self._done = self._finished = False

    def _look(self, events: bytes) -> bytes:
        # Both keys sit near a chunk's end, where rfind starts (cheaper than `in`);
        # a value that starts with `n` is null.
        at = events.rfind(USAGE_KEY) + len(USAGE_KEY)
        if at >= len(USAGE_KEY) and events[at : at + 1] != b"n":
            self.usage = usage_in(events) or self.usage
            if self.hide_usage:
                events = without_usage_chunk(events)
                if not events:
                    return events
        if not self._finished:  # a finish_reason that is a string, not null
            at = events.rfind(_FINISH_KEY) + len(_FINISH_KEY)
            self._finished = at >= len(_FINISH_KEY) and events[at : at + 8].lstrip()[:1] == b'"'
        if events.endswith(_DONE_ENDS):
            self._done = self._done or ends_with_done(events)
        return events

    def _whole(self, last: bytes) -> bool:
        return self._done or self._finished or b'"error":' in last

    def received_text(self) -> tuple[str, float]:
        """The text the passed-on chunks carried, and how many times more bytes passed on.

        Text: each choice's `delta.content`, reasoning (`delta.reasoning_content`,
        `delta.reasoning`), tool-call arguments, or a legacy completion's `text`,
        from the first KEPT_BYTES of events; the ratio (1.0 when all were kept)
        scales a count of it to the whole answer. For counting an answer's
        tokens when the upstream reported no usage.
        """
        texts: list[str] = []
        for chunk in self._kept_data():
            texts.extend(texts_of(chunk))
        return "".join(texts), self._ratio()
