"""A request checked as OpenAI checks it: the 400s and 404s of what it refuses.

Messages, codes and params are OpenAI's own (`invalid_type`,
`missing_required_parameter`, `integer_above_max_value`, `model_not_found`...),
so chatproxy's handling of an upstream's refusal is tested against the real
wording. Used by `chatproxy.simulator.server` and `more_routes`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from chatproxy.simulator import reasoning
from chatproxy.simulator.wire import CHAT_MODELS, COMPLETION_MODELS, MODELS, ApiError

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_RANGES = {
    "temperature": (0, 2),
    "top_p": (0, 1),
    "presence_penalty": (-2, 2),
    "frequency_penalty": (-2, 2),
}
_NOT_CHAT = (
    "This is not a chat model and thus not supported in the v1/chat/completions "
    "endpoint. Did you mean to use v1/completions?"
)
_NOT_LEGACY = (
    "This is a chat model and not supported in the v1/completions endpoint. "
    "Did you mean to use v1/chat/completions?"
)


def _missing(name: str) -> ApiError:
    message = f"Missing required parameter: '{name}'."
    return ApiError(400, message, param=name, code="missing_required_parameter")


def check_number(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    integer = name.startswith("max_") or name in ("n", "best_of")
    kind = "integer" if integer else "decimal"
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        got = type(value).__name__
        message = f"Invalid type for '{name}': expected an {kind}, but got {got} instead."
        raise ApiError(400, message, param=name, code="invalid_type")
    if not low <= value <= high:
        side, end, bound = ("below", "min", low) if value < low else ("above", "max", high)
        message = (
            f"Invalid '{name}': {kind} {side} {end}imum value. "
            f"Expected a value {'>=' if end == 'min' else '<='} {bound}, "
            f"but got {value} instead."
        )
        raise ApiError(400, message, param=name, code=f"{kind}_{side}_{end}_value")


def check_type(body: dict[str, Any], name: str, kinds: tuple[type, ...]) -> None:
    """400 `invalid_type` unless `body[name]` is absent, null or one of `kinds`, as OpenAI does."""
    value = body.get(name)
    if value is not None and not isinstance(value, kinds):
        message = f"Invalid type for '{name}': expected {' or '.join(k.__name__ for k in kinds)}."
        raise ApiError(400, message, param=name, code="invalid_type")


def check_accepted(
    body: dict[str, Any], models: Collection[str] | None, stream_options: bool
) -> None:
    """Refuse what a server started with `--models` or `--no-stream-options` does not take.

    A model outside `models` (None: any) gets OpenAI's 404 `model_not_found`;
    a body with `stream_options` when `stream_options` is False gets the 400
    servers that do not know the field answer (OpenAI's shape, Azure OpenAI's words).
    """
    model = body.get("model")
    if models is not None and isinstance(model, str) and model not in models:
        message = f"The model `{model}` does not exist or you do not have access to it."
        raise ApiError(404, message, code="model_not_found")
    if not stream_options and "stream_options" in body:
        message = "Unrecognized request argument supplied: stream_options"
        raise ApiError(400, message, param="stream_options")


# Models of the simulator that see no images (OpenAI's gpt-3.5-turbo, and the other servers').
_BLIND = ("gpt-3.5-turbo", "deepseek", "gpt-oss")


def _check_parts(content: Any, index: int, model: str) -> None:
    """Content parts as OpenAI checks them: `text` with a string, `image_url` with a `url` that
    is an http(s) URL or a base64 image data URL, and only for models that see images."""
    if not isinstance(content, list):
        return
    for j, part in enumerate(content):
        param = f"messages[{index}].content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            continue
        if kind != "image_url":
            message = f"Invalid value: '{kind}'. Supported values are: 'text' and 'image_url'."
            raise ApiError(400, message, param=f"{param}.type", code="invalid_value")
        if model.startswith(_BLIND):
            message = "Invalid content type. image_url is only supported by certain models."
            raise ApiError(400, message, param=param, code="invalid_content_type")
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else None
        if not isinstance(url, str) or not url.startswith(("data:image/", "http://", "https://")):
            message = "Invalid image URL: expected a base64 data URL or an http(s) URL."
            raise ApiError(400, message, param=f"{param}.image_url.url", code="invalid_image_url")


def check_request(body: dict[str, Any], chat: bool, models: Collection[str] = MODELS) -> str:
    """Check a completion request as OpenAI does; returns the model or raises ApiError.

    400 for a missing model, messages or prompt, a bad role or an out-of-range
    parameter; 404 `model_not_found` for a model not in `models` (the server's),
    or for a model of the other endpoint (a chat model on /v1/completions and
    the reverse).
    """
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _missing("model")
    if chat:
        messages = body.get("messages")
        if messages is None:
            raise _missing("messages")
        if not isinstance(messages, list) or not messages:
            message = (
                "Invalid 'messages': empty array. Expected an array with minimum "
                "length 1, but got an empty array instead."
            )
            raise ApiError(400, message, param="messages", code="empty_array")
        for i, item in enumerate(messages):
            role = item.get("role") if isinstance(item, dict) else None
            if role not in _ROLES:
                message = f"Invalid value: '{role}'. Supported values are: "
                message += ", ".join(f"'{r}'" for r in _ROLES) + "."
                param = f"messages[{i}].role"
                raise ApiError(400, message, param=param, code="invalid_value")
            _check_parts(item.get("content"), i, model)
    elif body.get("prompt") is None:
        raise _missing("prompt")
    for name, (low, high) in _RANGES.items():
        check_number(body, name, low, high)
    for name in ("max_tokens", "max_completion_tokens"):
        check_number(body, name, 1, 2**31)
    check_number(body, "n", 1, 128)
    if not chat:
        check_number(body, "best_of", 1, 20)
    check_type(body, "stop", (str, list))
    check_type(body, "stream_options", (dict,))
    if not chat:
        check_type(body, "prompt", (str, list))
    if body.get("stream_options") is not None and body.get("stream") is not True:
        message = "The 'stream_options' parameter is only allowed when 'stream' is enabled."
        raise ApiError(400, message, param="stream_options")
    if model in (COMPLETION_MODELS if chat else CHAT_MODELS):
        raise ApiError(404, _NOT_CHAT if chat else _NOT_LEGACY, param="model")
    if model not in models:
        message = f"The model `{model}` does not exist or you do not have access to it."
        raise ApiError(404, message, code="model_not_found")
    fault = reasoning.effort_fault(model, body.get("reasoning_effort"))
    if fault is not None:
        raise ApiError(400, fault[0], param="reasoning_effort", code=fault[1])
    return model
