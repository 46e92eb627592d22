"""Reading a Responses API stream on the way (`ResponsesStream`): its id, usage and end, from
named events split anywhere by the network, and what it counts when no usage came."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from chatproxy.errors import UpstreamError
from chatproxy.upstream.response_stream import ResponsesStream, response_text

USAGE = {"input_tokens": 9, "output_tokens": 4, "total_tokens": 13}


def event(kind: str, number: int, **fields: Any) -> bytes:
    data = json.dumps({"type": kind, "sequence_number": number, **fields})
    return f"event: {kind}\ndata: {data}\n\n".encode()


def body(last: str = "response.completed") -> bytes:
    started = {"id": "resp_1", "object": "response", "status": "in_progress", "usage": None}
    done = {**started, "status": last.split(".")[-1], "usage": USAGE}
    delta = 'the words response.completed and "type":"error" are only text'
    return b"".join(
        [
            event("response.created", 0, response=started),
            event("response.output_text.delta", 1, item_id="m", delta=delta),
            event(last, 2, response=done),
        ]
    )


class Fake:
    """An upstream response whose body arrives in `blocks`."""

    path, sent_at, marks_idle = "/v1/responses", None, True

    def __init__(self, blocks: list[bytes]) -> None:
        self.blocks = blocks

    def iter_bytes(self, idle: float | None = None) -> Iterator[bytes]:
        return iter(self.blocks)

    def close(self) -> None:
        pass


class Client:
    keys_bytes = (b"sk-upstream-secret",)

    def timeout_error(self) -> Exception:
        raise AssertionError

    def scrub(self, text: str) -> str:
        return text


def read(blocks: list[bytes]) -> tuple[ResponsesStream, bytes]:
    stream = ResponsesStream(Fake(blocks), Client())  # type: ignore[arg-type]
    return stream, b"".join(stream)


@pytest.mark.parametrize("size", [1, 7, 64, 100_000])
@pytest.mark.parametrize("last", ["response.completed", "response.incomplete", "response.failed"])
def test_id_usage_and_end_are_found_however_the_events_are_split(size, last):
    whole = body(last)
    stream, passed = read([whole[i : i + size] for i in range(0, len(whole), size)])
    assert passed == whole
    assert (stream.response_id, stream.usage, stream.status) == ("resp_1", USAGE, last[9:])
    assert stream.events == 3


def test_a_stream_that_ends_before_its_last_event_is_an_error():
    whole = body()
    cut = whole[: whole.index(b"event: response.completed")]
    stream = ResponsesStream(Fake([cut]), Client())  # type: ignore[arg-type]
    with pytest.raises(UpstreamError):
        list(stream)
    assert stream.usage is None
    text, ratio = stream.received_text()
    assert text.startswith("the words") and ratio == 1.0


def test_an_error_event_of_the_upstream_ends_it():
    error = b'event: error\ndata: {"type":"error","code":"x","message":"m","sequence_number":1}\n\n'
    _, passed = read([body()[: body().index(b"event: response.output")], error])  # no raise
    assert passed.endswith(error)


def test_the_upstream_key_never_passes():
    leaked = event("response.output_text.delta", 1, delta="sk-upstream-secret")
    _, passed = read([leaked, body()])
    assert b"sk-upstream-secret" not in passed and b"[redacted]" in passed


def test_the_text_of_a_whole_response():
    answer = {"output": [{"type": "message", "content": [{"type": "output_text", "text": "hi"}]}]}
    assert response_text(json.dumps(answer).encode()) == "hi"
    assert response_text(b"not json") == ""
