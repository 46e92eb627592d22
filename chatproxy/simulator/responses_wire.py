"""The Responses API's wire format for the simulator: response objects and their stream events.

Shapes follow the OpenAI API reference, "Responses" ("The response object",
"Streaming events", "List input items"), as the official SDK parses them
(`openai/types/responses/`, and the stream state of
`openai/lib/streaming/responses/`): a `response` object whose `output` holds
one assistant `message` with one `output_text` part, and a stream of named
events, each `event: <type>` and `data: {"type", "sequence_number", ...}`:
`response.created`, `response.in_progress`, `response.output_item.added`,
`response.content_part.added`, one `response.output_text.delta` per piece,
`response.output_text.done`, `response.content_part.done`,
`response.output_item.done`, then `response.completed` (or
`response.incomplete` when `max_output_tokens` cut it). No `[DONE]`.
Pure functions: the routes in `chatproxy.simulator.more_routes` do the I/O.
"""

from __future__ import annotations

import uuid
from typing import Any

from chatproxy.simulator import answers
from chatproxy.simulator.wire import dumps

_PAD = "q8Zr2XbT0vLk5WmN7cYd1HsJ4uPe9GaF3oRi6tEy"


def new_id(prefix: str) -> str:
    """An id as OpenAI makes them: `resp_`, `msg_` and 48 hex digits."""
    return f"{prefix}_{uuid.uuid4().hex}{uuid.uuid4().hex[:16]}"


def input_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A request's `instructions` and `input` as chat messages (`{"role", "content"}`), for
    composing the answer and counting its prompt: a string input is one user message, items
    keep their role and their text parts' text."""
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        messages.append({"role": "developer", "content": instructions})
    value = body.get("input")
    if isinstance(value, str):
        messages.append({"role": "user", "content": value})
    for item in value if isinstance(value, list) else ():
        if isinstance(item, dict) and item.get("type", "message") == "message":
            messages.append({"role": item.get("role", "user"), "content": item_text(item)})
    return messages


def item_text(item: dict[str, Any]) -> str:
    """The text of an input or output message item: a string content, or its text parts'."""
    content = item.get("content")
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return "".join(
        part.get("text", "")
        for part in parts
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    )


def input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's `input` as stored input items (each with an `id`), as "List input items"
    gives them: a string is one user message with an `input_text` part."""
    value = body.get("input")
    items = [{"role": "user", "content": value}] if isinstance(value, str) else value or []
    stored = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        if item.get("type", "message") == "message":
            content = item.get("content")
            if isinstance(content, str):
                content = [{"type": "input_text", "text": content}]
            item = {
                "type": "message",
                "role": item.get("role", "user"),
                "content": content,
                "status": "completed",
            }
        stored.append({"id": item.get("id") or new_id("msg"), **item})
    return stored


def usage(prompt: int, completion: int) -> dict[str, Any]:
    """A response's `usage`: `input_tokens`, `output_tokens`, `total_tokens` and their details."""
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def message(item_id: str, text: str, status: str) -> dict[str, Any]:
    """The assistant's output message item, its text in one `output_text` part."""
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    content = [part] if status == "completed" or text else []
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def response(
    ident: str,
    created: int,
    body: dict[str, Any],
    status: str,
    output: list[dict[str, Any]],
    use: dict[str, Any] | None,
) -> dict[str, Any]:
    """A `response` object: the request's settings echoed, its `output`, `status` and `usage`."""
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    return {
        "id": ident,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "completed_at": created if status == "completed" else None,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": body["model"],
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": use,
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def named_event(kind: str, number: int, fields: dict[str, Any]) -> bytes:
    """One Responses stream event: `event: <kind>` and `data: {"type", "sequence_number", ...}`."""
    data = {"type": kind, "sequence_number": number, **fields}
    return f"event: {kind}\ndata: {dumps(data)}\n\n".encode()


def events(
    final: dict[str, Any], pieces: list[str], obfuscate: bool = True
) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """The stream of `final` (a finished response object) as (head, delta events, tail) of
    pre-serialised events, in the order the SDK's stream state expects (module doc)."""
    item = final["output"][0]
    item_id, text = item["id"], item["content"][0]["text"] if item["content"] else ""
    started = {**final, "status": "in_progress", "output": [], "usage": None}
    started["completed_at"] = started["incomplete_details"] = None
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    number = 0

    def next_event(kind: str, fields: dict[str, Any]) -> bytes:
        nonlocal number
        made = named_event(kind, number, fields)
        number += 1
        return made

    head = [
        next_event("response.created", {"response": started}),
        next_event("response.in_progress", {"response": started}),
        next_event(
            "response.output_item.added",
            {"output_index": 0, "item": message(item_id, "", "in_progress")},
        ),
        next_event("response.content_part.added", {**where, "part": empty}),
    ]
    body = []
    for count, piece in enumerate(pieces, 1):
        fields: dict[str, Any] = {**where, "delta": piece, "logprobs": []}
        if obfuscate:
            fields["obfuscation"] = _PAD[count % 8 : count % 8 + max(2, 24 - len(piece))]
        body.append(next_event("response.output_text.delta", fields))
    done_part: dict[str, Any] = {
        "type": "output_text",
        "text": text,
        "annotations": [],
        "logprobs": [],
    }
    last = "response.completed" if final["status"] == "completed" else "response.incomplete"
    tail = [
        next_event("response.output_text.done", {**where, "text": text, "logprobs": []}),
        next_event("response.content_part.done", {**where, "part": done_part}),
        next_event("response.output_item.done", {"output_index": 0, "item": item}),
        next_event(last, {"response": final}),
    ]
    return head, body, tail


def answer_of(
    history: list[dict[str, Any]], body: dict[str, Any], plan_answer: str | None, words: int | None
) -> str:
    """The answer to the last user message of `history` (the previous responses' turns and this
    request's input), as chat would answer it (`answers.compose_answer`)."""
    users = [m for m in history if m.get("role") == "user"]
    question = answers.parse_directive(str(users[-1]["content"]))[1] if users else ""
    return answers.compose_answer(history, question, plan_answer, words)
