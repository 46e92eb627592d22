"""A Responses API stream passed through: named events, ended by the response's last state.

Format (OpenAI API reference, "Responses" → "Streaming events"): each event is
an `event: <type>` line and a `data: {"type": <type>, "sequence_number": N, ...}`
line. It starts with `response.created` (the response object, its `id`), and
ends with no `[DONE]`, at `response.completed`, `response.failed` or
`response.incomplete`, whose `response.usage` holds `input_tokens` and
`output_tokens`; an `error` event (`{"type": "error", "code", "message",
"param"}`) ends it too. Events are passed on as they came (`PassedStream`);
only the first lifecycle event and the last are parsed.
"""

from __future__ import annotations

import json
import re
from typing import Any

from chatproxy.upstream.streams import PassedStream

# The `type` of an event that ends a response stream, as a JSON key and value: a quote in
# a JSON string is escaped, so this matches only an event's own `type`.
_LAST = re.compile(rb'"type":\s*"response\.(?:completed|failed|incomplete)"')
# An `error` event of the upstream's own: its `event:` line, or a `data:` line of that type.
_ERROR = re.compile(rb'^(?:event: ?error\r?$|data: ?\{"type":\s*"error")', re.MULTILINE)
_FIRST = re.compile(rb'"type":\s*"response\.(?:created|queued|in_progress)"')
# Events whose `delta` is text the model wrote (to count it when no usage came).
_TEXT_DELTAS = (
    "response.output_text.delta",
    "response.refusal.delta",
    "response.reasoning_text.delta",
    "response.reasoning_summary_text.delta",
    "response.function_call_arguments.delta",
    "response.custom_tool_call_input.delta",
)


class ResponsesStream(PassedStream):
    """An open Responses API stream passed through; `usage`, `response_id` and `status` are
    read on the way (see the module's doc).

    `usage` is the last event's `response.usage` (`{"input_tokens",
    "output_tokens", "total_tokens", ...}`), None until then; `events` counts
    the events passed on, which is the `sequence_number` an event added after
    them takes. Whole: it ended with `response.completed`, `.failed`,
    `.incomplete` or an `error` event.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.response_id: str | None = None
        self.status: str | None = None
        self.events = 0
        self._ended = False

    def _look(self, events: bytes) -> bytes:
        self.events += events.count(b"\n\n") + events.count(b"\n\r\n")
        if self.response_id is None and _FIRST.search(events):
            found = _response_in(events, _FIRST)
            if found is not None and isinstance(found.get("id"), str):
                self.response_id = found["id"]
        if not self._ended and _ERROR.search(events):
            self._ended = True
        last = _LAST.search(events)
        if last is not None:
            self._ended = True
            found = _response_in(events, _LAST)
            if found is not None:
                if self.response_id is None and isinstance(found.get("id"), str):
                    self.response_id = found["id"]
                usage = found.get("usage")
                self.usage = usage if isinstance(usage, dict) else self.usage
                status = found.get("status")
                self.status = status if isinstance(status, str) else None
        return events

    def _whole(self, last: bytes) -> bool:
        return self._ended

    def received_text(self) -> tuple[str, float]:
        """The text the passed-on events carried, and how many times more bytes passed on.

        Text: the `delta` of each output text, refusal, reasoning and tool-call
        arguments event, from the first KEPT_BYTES of events; the ratio scales
        a count of it to the whole answer. For counting an answer's tokens when
        the stream ended without usage.
        """
        texts = [
            event["delta"]
            for event in self._kept_data()
            if isinstance(event, dict)
            and event.get("type") in _TEXT_DELTAS
            and isinstance(event.get("delta"), str)
        ]
        return "".join(texts), self._ratio()


def _response_in(events: bytes, kind: re.Pattern[bytes]) -> dict[str, Any] | None:
    """The `response` object of the last event in `events` whose type `kind` matches, or None
    (an `error` event has none)."""
    match = None
    for match in kind.finditer(events):  # noqa: B007 (the last one is wanted)
        continue
    if match is None:
        return None
    start = events.rfind(b"\n", 0, match.start()) + 1
    end = events.find(b"\n", match.end())
    line = events[start : end if end >= 0 else len(events)]
    if not line.startswith(b"data:"):
        return None
    try:
        event = json.loads(line[5:])
    except ValueError:
        return None
    response = event.get("response") if isinstance(event, dict) else None
    return response if isinstance(response, dict) else None


def response_text(body: bytes) -> str:
    """The text of a whole response object (its `output` items' text, refusals, reasoning and
    tool-call arguments), as `ResponsesStream.received_text` takes it; "" if not JSON."""
    try:
        response = json.loads(body)
    except ValueError:
        return ""
    output = response.get("output") if isinstance(response, dict) else None
    texts: list[str] = []
    for item in output if isinstance(output, list) else ():
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("arguments"), str):
            texts.append(item["arguments"])
        for name in ("content", "summary"):
            parts = item.get(name)
            for part in parts if isinstance(parts, list) else ():
                if isinstance(part, dict):
                    for field in ("text", "refusal"):
                        if isinstance(part.get(field), str):
                            texts.append(part[field])
    return "".join(texts)
