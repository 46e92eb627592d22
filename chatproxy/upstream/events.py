"""OpenAI's stream events read as bytes: where events end, the `[DONE]` line, the usage
chunk, and the texts of chunks and answers.

Cheap on the bytes as they pass (`rfind` from the end, where the keys sit);
json runs only on the line that carries the usage, or to count what passed.
Formats: OpenAI API reference, "Streaming" and "The chat completion chunk
object". Used by `chatproxy.upstream.streams`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

USAGE_KEY = b'"usage":'
_DONE_LINES = (b"data: [DONE]", b"data:[DONE]")


def answer_text(body: bytes) -> str:
    """The text of a whole answer (`chat.completion` or legacy `text_completion` JSON), as
    `RawStream.received_text` takes it from chunks; "" for a body that is not JSON."""
    try:
        answer = json.loads(body)
    except ValueError:
        return ""
    return "".join(texts_of(answer))


def texts_of(chunk: Any) -> Iterator[str]:
    """The texts of each choice of a chunk or answer: content, reasoning, tool-call arguments."""
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, dict):
            continue
        places: list[Any] = [choice]
        for name in ("delta", "message"):
            inner = choice.get(name)
            if isinstance(inner, dict):
                places.append(inner)
                calls = inner.get("tool_calls")
                if isinstance(calls, list):
                    places += [c.get("function") for c in calls if isinstance(c, dict)]
        for place in places:
            if not isinstance(place, dict):
                continue
            for name in ("text", "content", "reasoning_content", "reasoning", "arguments"):
                value = place.get(name)
                if isinstance(value, str):
                    yield value


def events_end(buffer: bytes) -> int:
    """Where the last whole SSE event in `buffer` ends (after its blank line), or 0.

    Lines end in `\\n` or `\\r\\n` (a lone `\\r` is not looked for).
    """
    lf = buffer.rfind(b"\n\n")
    crlf = buffer.rfind(b"\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 3 if crlf >= 0 else 0)


def ends_with_done(events: bytes) -> bool:
    """True when the last line of `events` is `data: [DONE]`, the end of an OpenAI stream."""
    last = events.rstrip()
    return last[last.rfind(b"\n") + 1 :] in _DONE_LINES


def usage_in(events: bytes) -> dict[str, Any] | None:
    """The `usage` object of the last chunk in `events` that has one, or None.

    Cheap for chunks without one: a quote inside a JSON string is escaped, so
    `"usage":` only ever matches a key, and `"usage":null` is skipped without
    parsing. The line holding an object is parsed with json.
    """
    at = events.rfind(USAGE_KEY)
    while at >= 0:
        if events[at + len(USAGE_KEY) : at + len(USAGE_KEY) + 8].lstrip().startswith(b"{"):
            start = events.rfind(b"\n", 0, at) + 1
            end = events.find(b"\n", at)
            line = events[start : end if end >= 0 else len(events)]
            if line.startswith(b"data:"):
                try:
                    chunk = json.loads(line[5:])
                except ValueError:
                    chunk = None
                usage = chunk.get("usage") if isinstance(chunk, dict) else None
                if isinstance(usage, dict):
                    return usage
        at = events.rfind(USAGE_KEY, 0, at)
    return None


def without_usage_chunk(events: bytes) -> bytes:
    """`events` without the chunk that carries only the usage (see `usage_only`).

    That is the last chunk `stream_options.include_usage` adds: OpenAI's has
    `"choices": []`, LiteLLM's proxy's one choice with an empty delta. A chunk
    that carries more than the usage keeps it, since its client needs the rest.
    """
    at = events.rfind(USAGE_KEY)
    while at >= 0:
        start = events.rfind(b"\n", 0, at) + 1
        end = events.find(b"\n", at)
        line = events[start : end if end >= 0 else len(events)]
        value = events[at + len(USAGE_KEY) : at + len(USAGE_KEY) + 8].lstrip()
        if value.startswith(b"{") and line.startswith(b"data:") and usage_only(line[5:]):
            cut = end + 1 if end >= 0 else len(events)
            while events[cut : cut + 1] in (b"\n", b"\r") and cut < len(events):
                cut += 1  # the blank line that ends the event
            return events[:start] + events[cut:]
        at = events.rfind(USAGE_KEY, 0, at)
    return events


# What a choice may carry that its client reads: chat deltas, and legacy completions' text.
_CARRIED = ("content", "reasoning_content", "reasoning", "tool_calls", "function_call", "refusal")


def usage_only(data: bytes) -> bool:
    """True when the chunk `data` (one event's JSON) has a `usage` object and nothing else a
    client reads: no content, reasoning, tool call, refusal or text in any choice, and no
    finish_reason. Parsed with json: it runs once per stream, on the chunk with the usage.
    """
    try:
        chunk = json.loads(data)
    except ValueError:
        return False
    if not isinstance(chunk, dict) or not isinstance(chunk.get("usage"), dict):
        return False
    choices = chunk.get("choices") or []
    if not isinstance(choices, list):
        return False
    for choice in choices:
        if not isinstance(choice, dict) or choice.get("finish_reason") is not None:
            return False
        delta = choice.get("delta") or {}
        if choice.get("text") or not isinstance(delta, dict):
            return False
        if any(delta.get(name) for name in _CARRIED):
            return False
    return True
