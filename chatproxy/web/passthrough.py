"""The OpenAI-compatible pass-through: a request body checked against the owner's policy.

Bodies are those of the OpenAI API reference (https://platform.openai.com/docs/api-reference),
"Create chat completion" (`POST /v1/chat/completions`), "Create completion"
(`POST /v1/completions`, legacy), "Create a model response" (`POST /v1/responses`),
"Create embeddings" (`POST /v1/embeddings`) and "Create moderation"
(`POST /v1/moderations`); model objects are those of "Models". chatproxy
checks what its owner decides (the model, CHATPROXY_MODELS; the answer's length,
CHATPROXY_MAX_TOKENS) and what it needs to route the call (`stream`, and for
chat `messages`); every other field goes upstream as the client sent it,
unknown ones too, and the upstream judges them. A bad body raises BadRequest
(400) or Forbidden (403) naming the field, before anything is sent upstream.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from chatproxy.config import Settings
from chatproxy.errors import BadRequest, NotFound
from chatproxy.questions import not_allowed
from chatproxy.tokens import limit_field
from chatproxy.upstream.paths import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    EMBEDDINGS_PATH,
    MODERATIONS_PATH,
    RESPONSES_PATH,
)

# OpenAI's default `max_tokens` for legacy completions, sent when none is given.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16
LIMITS = ("max_tokens", "max_completion_tokens")
# OpenAI's moderation model when a request names none: sent, so the model checked is the one used.
MODERATION_DEFAULT_MODEL = "omni-moderation-latest"
ENCODING_FORMATS = ("float", "base64")


@dataclass(frozen=True)
class PassThrough:
    """A checked request, ready to send.

    `path`: the upstream path (one of `upstream.RAW_PATHS`); `body`: what to
    send there; `stream`: whether the answer comes as SSE events; `model`: the
    model asked for; `hide_usage`: chatproxy asked for the stream's usage
    chunk itself (to record the usage) and the client must not get it;
    `cap`: the output tokens one answer may take; `answers`: how many answers
    the upstream writes (`n`, or a legacy `best_of`), each up to `cap`;
    `billed`: False for an endpoint that bills no tokens (moderations).
    """

    path: str
    body: dict[str, Any]
    stream: bool
    model: str = ""
    hide_usage: bool = False
    cap: int = 0
    answers: int = 1
    billed: bool = True

    @property
    def prompt(self) -> Any:
        """What holds the prompt in `body` (chat `messages`, a legacy `prompt`, an `input` and
        a response's `instructions`), whose JSON size bounds its tokens."""
        body = self.body
        if "messages" in body:
            return body["messages"]
        if "prompt" in body:
            return body["prompt"]
        return [body.get("instructions"), body.get("input")]


def read_body(data: bytes) -> dict[str, Any]:
    """The request body as a JSON object; BadRequest (400, `invalid_json`) for anything else.

    NaN and Infinity are refused: they are not JSON, and no upstream takes them;
    so is a number too large for a double (`1e309`), which Python would read as
    infinity (400 `number_too_large`).
    """
    try:
        body = json.loads(data, parse_constant=_not_json, parse_float=_finite)
        if b"\\u" in data and isinstance(body, dict):
            # JSON may escape a lone surrogate (`"\\udb56"`), which is no text at all:
            # refused here rather than failing once something encodes it.
            json.dumps(body, ensure_ascii=False).encode()
    except _Overflow:
        raise BadRequest(
            "A number in the request body is too large (beyond 1.8e308).",
            code="number_too_large",
        ) from None
    except (ValueError, RecursionError, UnicodeEncodeError):
        body = None
    if not isinstance(body, dict):
        raise BadRequest(
            "The request body must be a JSON object (see the OpenAI API reference).",
            code="invalid_json",
        )
    return body


def check_chat(body: dict[str, Any], settings: Settings) -> PassThrough:
    """Check a chat completion request; returns what to send to `/chat/completions`.

    `model`: a string (400), one of CHATPROXY_MODELS (403 `model_not_allowed`) served
    by some upstream (404 `model_not_found`, see `not_allowed`);
    `messages`: a non-empty list (400); `max_tokens`, `max_completion_tokens`:
    if given, integers from 1 to CHATPROXY_MAX_TOKENS (400 naming the field);
    `n`: if given, an integer from 1 to CHATPROXY_MAX_N (400);
    `stream`: true, false or null (400). With neither limit given, the cap
    is added as `max_tokens`, or as `max_completion_tokens` for a reasoning
    model (they refuse `max_tokens`). A stream is asked for its usage
    (`stream_options.include_usage`), whose chunk the client gets only if it
    asked too. Nothing else is looked at or changed.
    """
    model = checked_model(body, settings)
    messages = body.get("messages")
    if messages is None:
        raise BadRequest(
            "Missing required parameter 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list) or not messages:
        raise BadRequest(
            "'messages' must be a non-empty list of messages.", param="messages", code="empty_array"
        )
    given = [_limit(body, name, settings.max_tokens) for name in LIMITS]
    if not any(given):
        # An alias's real model says which field it takes (reasoning models refuse max_tokens).
        body = {**body, limit_field(settings.upstream_model(model)): settings.max_tokens}
    cap = min(value for value in given if value) if any(given) else settings.max_tokens
    answers = _answers(body, "n", settings.max_n) or 1
    stream = _stream(body)
    options = body.get("stream_options")
    asked_usage = isinstance(options, dict) and options.get("include_usage") is True
    if stream and not asked_usage and (options is None or isinstance(options, dict)):
        # The usage is recorded for every answer (quotas, ledger): ask for it,
        # and keep its chunk from a client that did not.
        body = {**body, "stream_options": {**(options or {}), "include_usage": True}}
        return PassThrough(CHAT_PATH, body, stream, model, True, cap, answers)
    return PassThrough(CHAT_PATH, body, stream, model, False, cap, answers)


def check_completion(body: dict[str, Any], settings: Settings) -> PassThrough:
    """Check a legacy completion request; returns what to send to `/completions`.

    `model`, `stream` and `n` as for chat, `best_of` as `n`; `max_tokens`, if
    given, from 1 to CHATPROXY_MAX_TOKENS (400). Without it, OpenAI's default of 16 (or the
    cap, if lower) is sent, so that a server with a larger default stays
    within the cap. Nothing else (`prompt`, `suffix`, `echo`, ...) is looked at.
    """
    model = checked_model(body, settings)
    cap = _limit(body, "max_tokens", settings.max_tokens)
    if cap is None:
        cap = min(COMPLETIONS_DEFAULT_MAX_TOKENS, settings.max_tokens)
        body = {**body, "max_tokens": cap}
    n = _answers(body, "n", settings.max_n) or 1
    best_of = _answers(body, "best_of", settings.max_n) or 1
    answers = max(n, best_of)  # best_of answers are written (and billed); n are sent back
    return PassThrough(COMPLETIONS_PATH, body, _stream(body), model, False, cap, answers)


def check_response(body: dict[str, Any], settings: Settings) -> PassThrough:
    """Check a Responses API request (OpenAI API reference, "Create a model response");
    returns what to send to `/responses`.

    `model` and `stream` as for chat; `max_output_tokens`, if given, from 1
    to CHATPROXY_MAX_TOKENS (400), else the cap is added; `previous_response_id`,
    if given, a string (whose owner the view checks: 404 for another key's).
    Refused with 400 `unsupported_parameter`: `background` true (its usage
    comes after the request has ended, and every answer is charged) and
    `conversation` (an upstream conversation chatproxy cannot tell the owner
    of). Nothing else (`input`, `instructions`, `tools`, ...) is looked at.
    """
    model = checked_model(body, settings)
    cap = _limit(body, "max_output_tokens", settings.max_tokens)
    if cap is None:
        cap = settings.max_tokens
        body = {**body, "max_output_tokens": cap}
    previous = body.get("previous_response_id")
    if previous is not None and not isinstance(previous, str):
        raise BadRequest(
            "'previous_response_id' must be a string.",
            param="previous_response_id",
            code="invalid_type",
        )
    if body.get("background") not in (None, False):
        raise BadRequest(
            "Background responses are not served here: their usage arrives after the "
            "request ends. Send the request without 'background' (streamed, if it is long).",
            param="background",
            code="unsupported_parameter",
        )
    if body.get("conversation") is not None:
        raise BadRequest(
            "'conversation' is not served here; continue a response with "
            "'previous_response_id' instead.",
            param="conversation",
            code="unsupported_parameter",
        )
    return PassThrough(RESPONSES_PATH, body, _stream(body), model, False, cap)


def check_embedding(body: dict[str, Any], settings: Settings) -> PassThrough:
    """Check an embeddings request (OpenAI API reference, "Create embeddings"); returns what
    to send to `/embeddings`.

    `model` as for chat; `input`: a non-empty string, or a non-empty list of
    strings, of token ids, or of lists of token ids (400); `encoding_format`,
    if given, `float` or `base64` (400). Nothing else (`dimensions`, `user`) is
    looked at. Embeddings are never streamed and write no output tokens.
    """
    model = checked_model(body, settings)
    value = body.get("input")
    if value is None:
        raise BadRequest(
            "Missing required parameter 'input'.", param="input", code="missing_required_parameter"
        )
    if not _embedding_input(value):
        raise BadRequest(
            "'input' must be a non-empty string, or a non-empty list of strings, of token ids "
            "or of lists of token ids.",
            param="input",
            code="invalid_value",
        )
    found = body.get("encoding_format")
    if found is not None and found not in ENCODING_FORMATS:
        raise BadRequest(
            f"'encoding_format' must be one of {', '.join(ENCODING_FORMATS)}.",
            param="encoding_format",
            code="invalid_value",
        )
    return PassThrough(EMBEDDINGS_PATH, body, False, model)


def check_moderation(body: dict[str, Any], settings: Settings) -> PassThrough:
    """Check a moderations request (OpenAI API reference, "Create moderation"); returns what
    to send to `/moderations`.

    `model`, if given, as for chat, else OpenAI's default (`omni-moderation-latest`),
    which is then sent and must be allowed too (403); `input`: a non-empty
    string, or a non-empty list of strings or of text and image parts (400). Moderations
    are free: nothing is reserved or billed but the request.
    """
    if body.get("model") is None:
        body = {**body, "model": MODERATION_DEFAULT_MODEL}
    model = checked_model(body, settings)
    value = body.get("input")
    if value is None:
        raise BadRequest(
            "Missing required parameter 'input'.", param="input", code="missing_required_parameter"
        )
    parts = value if isinstance(value, list) else []
    if not (
        (isinstance(value, str) and value)
        or (parts and all(isinstance(p, str) for p in parts))
        or (parts and all(isinstance(p, dict) for p in parts))
    ):
        raise BadRequest(
            "'input' must be a non-empty string, or a non-empty list of strings or of "
            "text and image parts.",
            param="input",
            code="invalid_value",
        )
    return PassThrough(MODERATIONS_PATH, body, False, model, billed=False)


def _embedding_input(value: Any) -> bool:
    """True for an embeddings `input`: a string, or a non-empty list of strings, of token ids,
    or of non-empty lists of token ids."""
    if isinstance(value, str):
        return bool(value)
    if not isinstance(value, list) or not value:
        return False
    if all(isinstance(item, str) for item in value):
        return True
    if all(_token(item) for item in value):
        return True
    return all(
        isinstance(item, list) and item and all(_token(token) for token in item) for item in value
    )


def _token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def model_object(model: str) -> dict[str, Any]:
    """One entry of `GET /v1/models`: `{"id", "object": "model", "created", "owned_by"}`.

    `created` is 0 and `owned_by` "chatproxy": the list comes from
    CHATPROXY_MODELS, not from the upstream, which is not asked.
    """
    return {"id": model, "object": "model", "created": 0, "owned_by": "chatproxy"}


def allowed_model(model: str, settings: Settings) -> dict[str, Any]:
    """The model object of `model`; NotFound (404 `model_not_found`) unless it is allowed."""
    if not settings.allows(model):
        raise NotFound(
            f"The model {model!r} does not exist or is not available here.",
            param="model",
            code="model_not_found",
        )
    return model_object(model)


def checked_model(body: dict[str, Any], settings: Settings) -> str:
    """`body["model"]`: a string (400 otherwise) the caller may use (403 `model_not_allowed`)."""
    model = body.get("model")
    if model is None:
        raise BadRequest(
            "Missing required parameter 'model'.", param="model", code="missing_required_parameter"
        )
    if not isinstance(model, str):
        raise BadRequest("'model' must be a string.", param="model", code="invalid_type")
    if not settings.allows(model):
        raise not_allowed(model, settings)
    return model


def _limit(body: dict[str, Any], name: str, cap: int) -> int | None:
    """`body[name]` if given (null counts as not given): an integer from 1 to `cap`."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name!r} must be an integer.", param=name, code="invalid_type")
    if value < 1:
        raise BadRequest(
            f"{name!r} must be at least 1.", param=name, code="integer_below_min_value"
        )
    if value > cap:
        raise BadRequest(
            f"{name!r} is {value}; the limit here is {cap} (CHATPROXY_MAX_TOKENS).",
            param=name,
            code="above_max_tokens",
        )
    return value


def _answers(body: dict[str, Any], name: str, cap: int) -> int | None:
    """`body[name]` (`n`, `best_of`) if given: an integer from 1 to `cap` (CHATPROXY_MAX_N)."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name!r} must be an integer.", param=name, code="invalid_type")
    if not 1 <= value <= cap:
        raise BadRequest(
            f"{name!r} is {value}; it must be from 1 to {cap} here (CHATPROXY_MAX_N).",
            param=name,
            code="invalid_value",
        )
    return value


def _stream(body: dict[str, Any]) -> bool:
    value = body.get("stream")
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest("'stream' must be true or false.", param="stream", code="invalid_type")
    return value


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


class _Overflow(ValueError):
    """A JSON number beyond the range of a double."""


def _finite(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise _Overflow(text)
    return number
