"""OpenAI's wire format for the simulator: request checks, errors and response bodies.

Shapes follow the OpenAI API reference (https://platform.openai.com/docs/api-reference):
chat completion objects and `chat.completion.chunk` SSE events, legacy `text_completion`
objects, the models list, and the error body `{"error": {"message", "type", "param",
"code"}}` with OpenAI's own wording, so clients and gateways meet what they will meet
in production. Pure functions: the server in `chatproxy.simulator` does the I/O.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from chatproxy.simulator import answers

CHAT_MODELS = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1-nano",
    "gpt-4.1-mini",
    "gpt-4.1",
    "gpt-3.5-turbo",
    "o4-mini",
    # Reasoning models of other servers: DeepSeek's API, and gpt-oss as vLLM or Ollama serve it.
    "deepseek-reasoner",
    "gpt-oss-20b",
    # A model as an OpenAI-compatible server (Ollama) names it, unknown to chatproxy's tables.
    "llama3.1:8b",
)
COMPLETION_MODELS = ("gpt-3.5-turbo-instruct", "davinci-002", "babbage-002")
MODELS = CHAT_MODELS + COMPLETION_MODELS
FINGERPRINT = "fp_sim0c0ffee"
DONE = b"data: [DONE]\n\n"
_CREATED = 1_715_367_049  # a fixed creation time for the models list
# OpenAI pads stream events with an `obfuscation` string of random characters so
# payload sizes do not reveal the tokens; slices of a fixed pool keep it cheap.
_PAD = "q8Zr2XbT0vLk5WmN7cYd1HsJ4uPe9GaF3oRi6tEy"
_KEYS_URL = "https://platform.openai.com/account/api-keys"
NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an "
    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), "
    "or as the password field (with blank username) if you're accessing the API "
    "from your browser and are prompted for a username and password. You can obtain "
    f"an API key from {_KEYS_URL}."
)
BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you "
    "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
    "but what was sent was not valid JSON.)"
)
# fault name -> (status, message, type, param, code), as OpenAI answers them
ERROR_FAULTS: dict[str, tuple[int, str, str, str | None, str | None]] = {
    "rate_limit": (
        429,
        (
            "Rate limit reached for requests per min (RPM) on the simulator: "
            "Limit 3, Used 3, Requested 1. Please try again in 1s."
        ),
        "requests",
        None,
        "rate_limit_exceeded",
    ),
    "server_error": (
        500,
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
        None,
    ),
    "unavailable": (
        503,
        "The engine is currently overloaded, please try again later.",
        "server_error",
        None,
        None,
    ),
    "context_length": (
        400,
        (
            "This model's maximum context length is 128000 tokens. However, your "
            "messages resulted in 130000 tokens. Please reduce the length of the messages."
        ),
        "invalid_request_error",
        "messages",
        "context_length_exceeded",
    ),
}


class ApiError(Exception):
    """An error answered with OpenAI's body `{"error": {message, type, param, code}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers or {}
        error = {"message": message, "type": type_, "param": param, "code": code}
        self.body: dict[str, Any] = {"error": error}

    @classmethod
    def of(cls, status: int, error: dict[str, Any]) -> ApiError:
        """An error whose `error` object is `error` as given, in another server's dialect."""
        made = cls(status, str(error.get("message")))
        made.body = {"error": error}
        return made


# What json.dumps(obj, separators=(",", ":"), ensure_ascii=False) does, without
# building a new encoder per call: it runs once per streamed piece.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(obj: Any) -> str:
    """Compact JSON, non-ASCII kept as is (as OpenAI sends it)."""
    return _ENCODER.encode(obj)


def event(obj: Any) -> bytes:
    """One SSE event: `data: {json}` and a blank line."""
    return f"data: {dumps(obj)}\n\n".encode()


def mask_key(key: str) -> str:
    """A key as OpenAI shows it in a 401: first 8 and last 4 characters, stars between."""
    head, tail = min(8, len(key) // 3), min(4, len(key) // 4)
    return key[:head] + "*" * (len(key) - head - tail) + key[len(key) - tail :]


def wrong_key(key: str) -> ApiError:
    """OpenAI's 401 for a key it does not know."""
    message = f"Incorrect API key provided: {mask_key(key)}. "
    message += f"You can find your API key at {_KEYS_URL}."
    return ApiError(401, message, code="invalid_api_key")


def finish(text: str, body: dict[str, Any]) -> tuple[str, str, int]:
    """Apply `stop`, then `max_completion_tokens` or `max_tokens`.

    Returns (text, finish_reason, completion tokens in the model's encoding);
    a cut answer used exactly the limit, as OpenAI reports it.
    """
    stop = body.get("stop")
    for marker in [stop] if isinstance(stop, str) else stop or []:
        if isinstance(marker, str) and marker and marker in text:
            text = text[: text.index(marker)]
    model = body["model"]
    limit = int(body.get("max_completion_tokens") or body.get("max_tokens") or 0)
    text, cut = answers.truncate_tokens(text, limit, model) if limit else (text, False)
    if cut:
        return text, "length", limit
    return text, "stop", answers.count_tokens(text, model)


def usage(prompt: int, completion: int, reasoning: int = 0) -> dict[str, Any]:
    """The `usage` object, with the detail objects current models send (`completion`
    includes the `reasoning` tokens)."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_completion(
    ident: str,
    created: int,
    model: str,
    text: str,
    reason: str,
    use: dict[str, Any],
    n: int = 1,
    reasoning: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A non-streamed `chat.completion` object with `n` choices (the same answer each).

    `reasoning` adds its field to the message (`{"reasoning_content": text}`).
    """
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text,
        "refusal": None,
        "annotations": [],
        **(reasoning or {}),
    }
    choices = [
        {"index": i, "message": message, "logprobs": None, "finish_reason": reason}
        for i in range(n)
    ]
    return {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": use,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }


def chat_events(
    ident: str,
    created: int,
    model: str,
    pieces: list[str],
    reason: str,
    use: dict[str, Any],
    options: dict[str, Any],
    usage_choices: list[dict[str, Any]] | None = None,
    choices: int = 1,
    thoughts: tuple[str, list[str]] | None = None,
) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """A chat stream as (head, content events, tail) of pre-serialised SSE events.

    As OpenAI sends it: a role-only first delta, one event per piece, a last
    choice with an empty `delta: {}` and the finish_reason; with
    `stream_options.include_usage`, `"usage": null` on each event and a
    `"choices": []` event carrying the usage (or `usage_choices`, as another
    server has them: `chatproxy.simulator.dialects`); then `data: [DONE]`.
    With `choices` > 1 (the request's `n`), each event comes once per choice
    index, in turn, as OpenAI interleaves them. `thoughts` (a field name and
    pieces) come first, each as `{"content": null, FIELD: piece}`.
    """
    with_usage = options.get("include_usage") is True
    obfuscate = options.get("include_obfuscation") is not False
    base = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }

    def chunk(choices: list[Any], n: int, size: int = 0, use_value: Any = None) -> bytes:
        obj = {**base, "choices": choices}
        if with_usage:
            obj["usage"] = use_value
        if obfuscate:
            obj["obfuscation"] = _PAD[n % 8 : n % 8 + max(2, 24 - size)]
        return event(obj)

    def delta(d: dict[str, Any], n: int, reason: str | None = None, index: int = 0) -> bytes:
        choice = {"index": index, "delta": d, "logprobs": None, "finish_reason": reason}
        return chunk([choice], n, len(d.get("content") or ""))

    # Content events differ only in their text and padding: splice the JSON of
    # each piece into one serialised shell (the hot path of a 1,000-stream run).
    def shells(carried: dict[str, Any]) -> list[list[str]]:
        made = []
        for index in range(choices):
            choice = {"index": index, "delta": carried, "logprobs": None, "finish_reason": None}
            shell = {**base, "choices": [choice], **({"usage": None} if with_usage else {})}
            made.append(dumps(shell).split('"\\u0000"'))
        return made

    body: list[bytes] = []
    field, thought_pieces = thoughts or ("", [])
    for each, shell in (
        (thought_pieces, shells({"content": None, field: "\0"})),
        (pieces, shells({"content": "\0"})),
    ):
        for n, piece in enumerate(each, 1):
            pad = _PAD[n % 8 : n % 8 + max(2, 24 - len(piece))]
            end = f',"obfuscation":"{pad}"}}' if obfuscate else "}"
            for before, after in shell:
                body.append(f"data: {before}{dumps(piece)}{after[:-1]}{end}\n\n".encode())
    role = {"role": "assistant", "content": "", "refusal": None}
    head = [delta(role, 0, index=i) for i in range(choices)]
    tail = [delta({}, 0, reason, index=i) for i in range(choices)]
    tail += [chunk(usage_choices or [], 1, 0, use)] if with_usage else []
    return head, body, [*tail, DONE]


def legacy_completion(
    ident: str,
    created: int,
    model: str,
    choices: list[dict[str, Any]],
    use: dict[str, Any],
) -> dict[str, Any]:
    """A non-streamed `text_completion` object."""
    return {
        "id": ident,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": choices,
        "usage": use,
    }


def legacy_events(
    ident: str,
    created: int,
    model: str,
    pieces: list[tuple[int, str]],
    choices: list[dict[str, Any]],
    use: dict[str, Any],
    options: dict[str, Any],
) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """A legacy stream as (head, text events, tail): `choices[i].text` pieces, then [DONE]."""
    with_usage = options.get("include_usage") is True
    base = {"id": ident, "object": "text_completion", "created": created}

    def chunk(choice_list: list[Any], use_value: Any = None) -> bytes:
        obj = {**base, "choices": choice_list, "model": model}
        obj["system_fingerprint"] = FINGERPRINT
        if with_usage:
            obj["usage"] = use_value
        return event(obj)

    def text(index: int, value: str, reason: str | None = None) -> dict[str, Any]:
        return {
            "text": value,
            "index": index,
            "logprobs": None,
            "finish_reason": reason,
        }

    body = [chunk([text(index, piece)]) for index, piece in pieces]
    tail = [chunk([text(c["index"], "", c["finish_reason"])]) for c in choices]
    tail += [chunk([], use)] if with_usage else []
    return [], body, [*tail, DONE]


def model_object(name: str) -> dict[str, Any]:
    """One entry of `GET /v1/models`: `{"id", "object": "model", "created", "owned_by"}`."""
    owner = "openai-internal" if name.startswith("gpt-3.5") else "system"
    return {"id": name, "object": "model", "created": _CREATED, "owned_by": owner}


def model_list(names: Sequence[str] = MODELS) -> dict[str, Any]:
    """`GET /v1/models` of a server with the models `names`: `{"object": "list", "data":
    [model objects]}`."""
    return {"object": "list", "data": [model_object(name) for name in names]}
