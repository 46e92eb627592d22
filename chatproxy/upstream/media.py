"""Audio and image answers read from the upstream: whole, as audio bytes, or as typed SSE events.

Formats (OpenAI API reference, "Audio" and "Images"):

- whole: a transcription or translation (`application/json`, or `text/plain`
  for `text`, `srt`, `vtt`), an image response (`{"created", "data", "usage"?}`),
  or speech (audio bytes, `audio/mpeg` ...): `read_whole`;
- speech as it is made (`stream_format` `audio`, the default): the audio's
  bytes as they arrive, passed on untouched (`AudioStream`);
- events (`MediaEvents`): `data: {"type": ...}` lines, each ended by a blank
  line, no `[DONE]`: a transcription's `transcript.text.delta` ... `transcript.text.done`,
  speech's `speech.audio.delta` ... `speech.audio.done`, an image's
  `image_generation.partial_image` ... `image_generation.completed` (or
  `image_edit.*`), each image stream with an `event:` line too. The last
  event carries the `usage` (OpenAI's: `{"input_tokens", "output_tokens",
  "total_tokens", ...}`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from chatproxy.errors import UpstreamError
from chatproxy.upstream.responses import ReadBrokeOff, ReadTimedOut, UpstreamResponse
from chatproxy.upstream.streams import PassedStream, UpstreamClient, UpstreamStream

JSON_TYPE = "application/json"
# The types of the events that end a media stream's part, the usage in them.
LAST_TYPES = (
    "transcript.text.done",
    "speech.audio.done",
    "image_generation.completed",
    "image_edit.completed",
)
# The `type` of an event that ends a media stream: a quote in a JSON string is escaped,
# so this matches only an event's own `type`.
_LAST = re.compile(
    rb'"type":\s*"(?:transcript\.text\.done|speech\.audio\.done'
    rb'|image_generation\.completed|image_edit\.completed)"'
)
_ERROR = re.compile(rb'^(?:event: ?error\r?$|data: ?\{"type":\s*"error")', re.MULTILINE)
_ERROR_OBJECT = b'"error":'


@dataclass(frozen=True)
class MediaAnswer:
    """A whole answer passed through: the upstream's `body` bytes as they came, its
    `content_type`, and what was read of it when it is JSON (`data`: the object, else None;
    `usage`: its `usage` object, else None)."""

    body: bytes
    content_type: str
    data: dict[str, Any] | None
    usage: dict[str, Any] | None


def read_whole(response: UpstreamResponse, upstream: UpstreamClient) -> MediaAnswer:
    """The whole answer of `response`, closed after; its bytes kept, any upstream key blanked.

    A JSON answer must be an object, else UpstreamError `upstream_malformed`;
    other content types (text, audio) are passed on as they are. Raises
    UpstreamTimeout, or UpstreamError `upstream_interrupted` when the body breaks off.
    """
    try:
        content = response.read()
    except ReadTimedOut:
        raise upstream.timeout_error() from None
    except ReadBrokeOff:
        raise UpstreamError(
            "The upstream connection broke off before the answer was complete.",
            code="upstream_interrupted",
        ) from None
    finally:
        response.close()
    content_type = response.content_type or "application/octet-stream"
    data: dict[str, Any] | None = None
    if content_type.split(";")[0].strip().lower() == JSON_TYPE:
        try:
            found = json.loads(content)
        except ValueError:
            found = None
        if not isinstance(found, dict):
            raise UpstreamError(
                "The upstream answered with something that is not a JSON object.",
                code="upstream_malformed",
            )
        data = found
    if not content_type.startswith("audio/"):  # an upstream key is text: never in audio
        for key in upstream.keys_bytes:
            if key in content:
                content = content.replace(key, b"[redacted]")
    usage = data.get("usage") if data is not None else None
    return MediaAnswer(content, content_type, data, usage if isinstance(usage, dict) else None)


class AudioStream(UpstreamStream):
    """Speech being made, passed on as the upstream sends it: iterate for its bytes.

    Each item is what one read brought, untouched. `received` counts the bytes
    passed on, `content_type` is the upstream's (e.g. `audio/mpeg`). A break
    raises UpstreamError or UpstreamTimeout after the bytes that did arrive.
    """

    def __init__(self, response: UpstreamResponse, upstream: UpstreamClient) -> None:
        super().__init__(response, upstream)
        self.content_type = response.content_type or "application/octet-stream"
        self.received = 0

    def __iter__(self) -> Iterator[bytes]:
        with self._reading():
            for data in self._response.iter_bytes():
                if not data:
                    continue
                if self._sent_at is not None:
                    self._first_piece()
                self.received += len(data)
                yield data


class MediaEvents(PassedStream):
    """A transcription, speech or image stream of typed events passed through (see the
    module's doc); `usage` is read from its last events on the way.

    `usage` sums the `usage` objects of the events that end a part (one per
    image when several are made), None when none came. Whole: such an event,
    or an error event, arrived.
    """

    def __init__(self, response: UpstreamResponse, upstream: UpstreamClient) -> None:
        super().__init__(response, upstream)
        self._ended = False

    def _look(self, events: bytes) -> bytes:
        if _LAST.search(events):
            self._ended = True
            for data in _data_of(events):
                usage = data.get("usage") if data.get("type") in LAST_TYPES else None
                if isinstance(usage, dict):
                    self.usage = _summed(self.usage, usage)
        if not self._ended and (_ERROR.search(events) or _ERROR_OBJECT in events):
            self._ended = True
        return events

    def _whole(self, last: bytes) -> bool:
        return self._ended

    def received_text(self) -> tuple[str, float]:
        """The text the events carried (a transcript's deltas), and how many times more bytes
        passed on than were kept; for counting tokens when no usage came."""
        texts = [
            data["delta"]
            for data in self._kept_data()
            if isinstance(data, dict)
            and data.get("type") == "transcript.text.delta"
            and isinstance(data.get("delta"), str)
        ]
        return "".join(texts), self._ratio()


def _data_of(events: bytes) -> Iterator[dict[str, Any]]:
    """The JSON object of each `data:` line of `events` (what is not one is skipped)."""
    for line in events.splitlines():
        if not line.startswith(b"data:"):
            continue
        try:
            data = json.loads(line[5:])
        except ValueError:
            continue
        if isinstance(data, dict):
            yield data


def _summed(total: dict[str, Any] | None, usage: dict[str, Any]) -> dict[str, Any]:
    """`usage` added to `total`, field by integer field (nested details too)."""
    if total is None:
        return dict(usage)
    summed = dict(total)
    for name, value in usage.items():
        before = summed.get(name)
        if isinstance(value, int) and isinstance(before, int):
            summed[name] = before + value
        elif isinstance(value, dict) and isinstance(before, dict):
            summed[name] = _summed(before, value)
        else:
            summed.setdefault(name, value)
    return summed
