"""An upstream's HTTP error as a client of chatproxy should see it, and whether to ask elsewhere.

`status_error` maps the upstream's status and error object (OpenAI's shape,
`{"message", "type", "param", "code"}`, or near it) to chatproxy's errors
(DESIGN.md, "Upstream"): bad key → 502 naming the setting, 429 → 429 with
Retry-After, a model the upstream lacks → 404 `model_not_found`, a prompt too
long for the model → 400 `context_length_exceeded`, other 400s passed on.

A context-length error is recognised from OpenAI's code and from the words of
the OpenAI-compatible servers chatproxy meets (each is one of the simulator's
faults, `chatproxy.simulator.dialects`): vLLM ("This model's maximum context
length is N tokens. However, you requested M tokens", "... is longer than the
maximum model length of N"), Ollama ("the input length exceeds the context
length", "prompt too long; exceeded max context length by N tokens", the first
sometimes with a 500), llama.cpp's server (type `exceed_context_size_error`,
"... exceeds the available context size ...") and LiteLLM's proxy (its
`ContextWindowExceededError` named in the message, `"code": "400"`). Such an
error is the request's fault: never retried (`retried`, even as a 500), never
failed over (`server_failed`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from chatproxy.errors import (
    APIError,
    BadRequest,
    NotFound,
    RateLimited,
    UpstreamError,
)

_CONTEXT_WORDS = re.compile(
    r"maximum context length is"  # OpenAI's own words, and vLLM's
    r"|longer than the maximum model length"  # vLLM V1
    r"|input length exceeds the context length"  # Ollama
    r"|prompt (?:is )?too long"  # Ollama; Anthropic's words, through LiteLLM
    r"|exceeds the available context size"  # llama.cpp's server
    r"|ContextWindowExceededError",  # LiteLLM's proxy
    re.IGNORECASE,
)
_CONTEXT_TYPES = ("exceed_context_size_error",)  # llama.cpp's server
# OpenAI, vLLM: "The model `x` does not exist ..."; Ollama: 'model "x" not found, try pulling it'.
_MISSING_MODEL = re.compile(
    r"\bmodel\b.*\b(?:does not exist|not found)\b", re.IGNORECASE | re.DOTALL
)
# Codes that say the request, not the server, is at fault: no other server would do better.
REQUESTS_FAULT = ("context_length_exceeded", "model_not_found")

Named = Callable[[str], str]  # a setting's name, as the configuration calls it
Scrub = Callable[[str], str]  # text without the upstream key


def is_context_error(detail: Mapping[str, Any]) -> bool:
    """True when an upstream's error object says the prompt does not fit the model's context."""
    if detail.get("code") == "context_length_exceeded" or detail.get("type") in _CONTEXT_TYPES:
        return True
    message = detail.get("message")
    return isinstance(message, str) and _CONTEXT_WORDS.search(message) is not None


def is_missing_model(detail: Mapping[str, Any]) -> bool:
    """True when an upstream's 404 says it has no such model (not a wrong OPENAI_BASE_URL)."""
    if detail.get("code") == "model_not_found":
        return True
    message = detail.get("message")
    return isinstance(message, str) and _MISSING_MODEL.search(message) is not None


def status_error(
    status: int,
    detail: Mapping[str, Any],
    headers: Mapping[str, str],
    *,
    context_param: str,
    model: object,
    named: Named,
    scrub: Scrub,
) -> APIError:
    """chatproxy's error for an upstream's answer `status` with the error object `detail`.

    `headers` are the answer's (`get` with a lower-case name: Retry-After);
    `context_param` names what was too long in the client's request (`input`
    for /callChatGPT, `messages` or `prompt` for /v1); `model` is the model
    asked for; `named(setting)` names a setting as the configuration has it;
    `scrub(text)` blanks the upstream key out of what the upstream said.
    """
    code = _code(detail)
    if status == 401:
        return UpstreamError(
            f"The upstream rejected chatproxy's API key: check {named('OPENAI_API_KEY')} "
            "on the server.",
            code="upstream_auth_failed",
        )
    if status == 403:
        return UpstreamError(
            f"The upstream refused access: check {named('OPENAI_API_KEY')}, OPENAI_ORG_ID and "
            "OPENAI_PROJECT_ID on the server.",
            code="upstream_forbidden",
        )
    if status == 429 and code == "insufficient_quota":
        return UpstreamError(
            "The upstream account has no quota left: check its plan and billing.",
            code="upstream_quota_exhausted",
        )
    if status == 429:
        return RateLimited(
            "The upstream is rate limiting requests; try again shortly.",
            code="upstream_rate_limited",
            retry_after=retry_after(headers),
        )
    if is_context_error(detail):
        return BadRequest(
            "The question and its context are too long for the model's context window.",
            param=context_param,
            code="context_length_exceeded",
        )
    if status == 404 and is_missing_model(detail):
        shown = f"{model!r} " if isinstance(model, str) else ""
        return NotFound(
            f"The model {shown}does not exist upstream, or chatproxy's upstream key "
            "has no access to it.",
            param="model",
            code="model_not_found",
        )
    if status in (400, 422):
        param = detail.get("param")
        return BadRequest(
            scrub(str(detail.get("message") or "The upstream refused the request.")),
            param=param if isinstance(param, str) else None,
            code=code or "upstream_invalid_request",
        )
    if status == 404:
        # A wrong OPENAI_BASE_URL gives no message; an upstream's own 404 says what it lacks.
        said = detail.get("message")
        return UpstreamError(
            f"The upstream answered 404: {scrub(str(said))}"
            if said
            else f"The upstream answered 404: check {named('OPENAI_BASE_URL')} and that the "
            "model exists there.",
            code="upstream_not_found",
        )
    return UpstreamError(f"The upstream failed (HTTP {status}).", code="upstream_error")


def server_failed(status: int | None, error: APIError) -> bool:
    """True when the server, not the request, is at fault: another server may answer.

    `status` is the upstream's HTTP status, None when there was no answer
    (connection failure, timeout): the server's fault.
    """
    if error.code in REQUESTS_FAULT:
        return False
    return status is None or status in (401, 403, 408, 409, 429) or status >= 500


def retried(status: int, detail: Mapping[str, Any]) -> bool:
    """False for an answer that must not be asked again whatever its status says: a
    context-length error (Ollama answers a prompt too long with a 500, which the SDK's
    policy would retry). `detail` is the answer's error object."""
    return not (status >= 500 and is_context_error(detail))


def retry_after(headers: Mapping[str, str]) -> int:
    """Seconds to wait from the upstream's `Retry-After` header: 1 to 3600, 1 if unreadable."""
    try:
        return min(3600, max(1, round(float(headers.get("retry-after", "1")))))
    except (ValueError, OverflowError):  # not a number, NaN, infinity
        return 1


def _code(detail: Mapping[str, Any]) -> str | None:
    """The error object's `code` if it is a word: vLLM and llama.cpp send the status as a
    number there, LiteLLM as a string ("400"); neither is a code."""
    code = detail.get("code")
    return code if isinstance(code, str) and code and not code.isdigit() else None
