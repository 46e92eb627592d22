"""A question to `/callChatGPT`: its parameters read, bounded and turned into upstream params.

Values come from the query string, a form or a JSON body (DESIGN.md, HTTP
contract); all are checked here, before anything is sent upstream, and a bad
one raises BadRequest (400) or Forbidden (403) naming the parameter. A
`persona` (chatproxy.personas) puts its messages first and gives the default model.
The messages are fitted into the model's context window (chatproxy.tokens).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chatproxy.attachments import Attachment, Upload, content_parts, read_attachments
from chatproxy.config import NOT_CHAT_MODELS, Settings
from chatproxy.errors import BadRequest, Forbidden, NotFound
from chatproxy.personas import Persona
from chatproxy.tokens import (
    Message,
    context_window,
    count_messages,
    count_text,
    fit_messages,
    limit_field,
)

MAX_STOP_SEQUENCES = 4  # OpenAI's limit for `stop`
REASONING_EFFORTS = ("minimal", "low", "medium", "high")  # OpenAI's, for `reasoning_effort`
MAX_LISTED_PERSONAS = 20  # how many ids an unknown-persona error names
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")

# Sampling parameters passed upstream as given: name -> (low, high), both inclusive.
NUMBER_RANGES = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}


@dataclass
class Question:
    """One question, checked: the text, the model, and what to send upstream."""

    input: str
    model: str
    system: str | None = None
    persona: Persona | None = None
    max_tokens: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    format: str = "text"
    attachments: list[Attachment] = field(default_factory=list)

    def chat_params(
        self,
        settings: Settings,
        *,
        extra_leading: Sequence[Message] = (),
        history: Sequence[Message] = (),
    ) -> dict[str, Any]:
        """The body of `POST /chat/completions` (OpenAI API reference) for this question.

        `messages`: the persona's messages, then `extra_leading` (a
        conversation's system messages; when given, they stand for `system`),
        else `system` as one more system message, then as much of `history`
        (earlier questions and answers) as fits, oldest dropped first, then the
        question as the user's. `max_tokens` is the
        request's, or the owner's cap when none was asked for (sent as
        `max_completion_tokens` to OpenAI's reasoning models, which refuse `max_tokens`). Raises
        BadRequest `context_length_exceeded` (param `input`) when the messages
        and `max_tokens` do not fit in the model's context window
        (`chatproxy.tokens.fit_messages`), so nothing is sent upstream.
        """
        leading = [dict(message) for message in self.persona.messages] if self.persona else []
        if extra_leading:
            leading.extend(dict(message) for message in extra_leading)
        elif self.system:
            leading.append({"role": "system", "content": self.system})
        max_tokens = self.max_tokens or settings.max_tokens
        # Facts about the model (its window, its cap's field) are the real one's, not an alias's.
        real = settings.upstream_model(self.model)
        window = context_window(real, settings.context_window)
        question = {"role": "user", "content": content_parts(self.input, self.attachments)}
        self._check_files_fit(leading, real, max_tokens, window)
        return {
            "model": self.model,
            "messages": fit_messages(leading, history, question, real, max_tokens, window),
            limit_field(real): max_tokens,
            **self.options,
        }

    @property
    def images(self) -> list[Attachment]:
        """The question's images."""
        return [a for a in self.attachments if a.kind == "image"]

    def _check_files_fit(
        self, leading: Sequence[Message], model: str, max_tokens: int, window: int
    ) -> None:
        """Raise BadRequest `context_length_exceeded` (param `file`) naming the first attached
        file that does not fit the window with the question, its images and `max_tokens`."""
        files = [a for a in self.attachments if a.kind == "file"]
        if not files:
            return
        rest = [*leading, {"role": "user", "content": content_parts(self.input, self.images)}]
        room = window - max_tokens - count_messages(rest, model)
        for attachment in files:
            size = count_text(attachment.file_part()["text"], model)
            if size > room:
                raise BadRequest(
                    f"The file {attachment.name!r} is {size:,} tokens; {max(room, 0):,} fit in "
                    f"{model}'s context window of {window:,} tokens with the question and "
                    f"max_tokens {max_tokens:,}. Attach a shorter file or a part of it.",
                    param="file",
                    code="context_length_exceeded",
                )
            room -= size


def not_allowed(model: str, settings: Settings) -> NotFound | Forbidden:
    """The error for a model the caller may not ask for: 404 `model_not_found` when no
    upstream serves it (CHATPROXY_UPSTREAMS' `models`), else 403 `model_not_allowed`
    (outside CHATPROXY_MODELS or the key's models)."""
    if not settings.served(model):
        return NotFound(
            f"The model {model!r} does not exist or is not available here.",
            param="model",
            code="model_not_found",
        )
    return Forbidden(
        f"The model {model!r} is not allowed here. Allowed: {', '.join(settings.models)}.",
        param="model",
        code="model_not_allowed",
    )


def parse_question(
    values: Mapping[str, Any],
    settings: Settings,
    *,
    wants: str,
    personas: Mapping[str, Persona] | None = None,
    uploads: Mapping[str, Sequence[Upload]] | None = None,
) -> Question:
    """Check the parameters of one question.

    `values` maps parameter names to strings (query string, form) or JSON
    values; `wants` is the response format the client's `Accept` header asked
    for (`text`, `json` or `sse`), overridden by `format=` and `stream=`;
    `personas` are the ones `persona=` may name (`{id: Persona}`). The model is
    `model=`, else the persona's, else CHATPROXY_MODEL. Raises BadRequest for a
    missing or wrong value (code `persona_not_found` for an unknown persona,
    `model_not_supported` for a model that answers no chat, `unsupported_parameter`
    for `reasoning_effort` to a model that does not take it), Forbidden for a
    model outside CHATPROXY_MODELS, NotFound for one no upstream serves (`not_allowed`).
    Attachments are JSON `images`/`files` in `values` and multipart parts in
    `uploads` (`chatproxy.attachments.read_attachments`, which says their errors).
    """
    text = _text(values, "input", settings.max_input_chars, required=True)
    assert text is not None
    persona = _persona(values, personas or {})
    persona_model = persona.model if persona else None
    model = _text(values, "model", 200) or persona_model or settings.model
    if not settings.allows(model):
        raise not_allowed(model, settings)
    if model in NOT_CHAT_MODELS:
        raise BadRequest(
            f"The model {model!r} answers no chat (only /v1/completions, /v1/embeddings or "
            f"/v1/moderations), not questions. Ask one of: {', '.join(settings.chat_models)}.",
            param="model",
            code="model_not_supported",
        )
    options: dict[str, Any] = {}
    for name, (low, high) in NUMBER_RANGES.items():
        number = _number(values, name, low, high)
        if number is not None:
            options[name] = number
    stop = _stop(values)
    if stop is not None:
        options["stop"] = stop
    effort = _reasoning_effort(values, model, settings)
    if effort is not None:
        options["reasoning_effort"] = effort
    max_tokens = _positive_int(values, "max_tokens", settings.max_tokens)
    answer_format = _choice(values, "format", ("text", "json", "sse")) or wants
    stream = _flag(values, "stream")
    if stream is None:
        stream = answer_format == "sse"
    return Question(
        input=text,
        model=model,
        system=_text(values, "system", settings.max_input_chars),
        persona=persona,
        max_tokens=max_tokens,
        options=options,
        stream=stream,
        format="sse" if stream else answer_format,
        attachments=read_attachments(values, uploads or {}, settings, model),
    )


def _reasoning_effort(values: Mapping[str, Any], model: str, settings: Settings) -> str | None:
    """`reasoning_effort`, for a model that takes it (CHATPROXY_REASONING_MODELS); else 400."""
    effort = _choice(values, "reasoning_effort", REASONING_EFFORTS)
    if effort is not None and not settings.takes_reasoning_effort(settings.upstream_model(model)):
        raise BadRequest(
            f"Unsupported parameter: 'reasoning_effort' is not supported with the model "
            f"{model!r}. Models that take it here: {', '.join(settings.reasoning_models)} "
            "(CHATPROXY_REASONING_MODELS).",
            param="reasoning_effort",
            code="unsupported_parameter",
        )
    return effort


def _text(values: Mapping[str, Any], name: str, limit: int, required: bool = False) -> str | None:
    value = values.get(name)
    if value is None:
        if required:
            raise BadRequest(
                f"Missing required parameter {name!r}.",
                param=name,
                code="missing_required_parameter",
            )
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name!r} must be a string.", param=name, code="invalid_type")
    if "\x00" in value:
        raise BadRequest(f"{name!r} must not hold NUL characters.", param=name)
    if not value.strip():
        if required:
            raise BadRequest(f"{name!r} must not be empty.", param=name, code="empty_string")
        return None
    if len(value) > limit:
        raise BadRequest(
            f"{name!r} is {len(value)} characters long; the limit is {limit}.",
            param=name,
            code="string_above_max_length",
        )
    return value


def _persona(values: Mapping[str, Any], personas: Mapping[str, Persona]) -> Persona | None:
    persona_id = _text(values, "persona", 100)
    if persona_id is None:
        return None
    persona = personas.get(persona_id)
    if persona is None:
        known = list(personas)
        listed = ", ".join(known[:MAX_LISTED_PERSONAS])
        if len(known) > MAX_LISTED_PERSONAS:
            listed += ", ..."
        raise BadRequest(
            f"No persona {persona_id!r} here. "
            + (f"Available: {listed} (GET /api/personas)." if known else "None are configured."),
            param="persona",
            code="persona_not_found",
        )
    return persona


def _number(values: Mapping[str, Any], name: str, low: float, high: float) -> float | None:
    value = values.get(name)
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{name!r} must be a number.", param=name, code="invalid_type") from None
    except OverflowError:  # an integer beyond a double's range
        number = math.inf
    if not math.isfinite(number) or not low <= number <= high:
        raise BadRequest(f"{name!r} must be between {low:g} and {high:g}.", param=name)
    return number


def _positive_int(values: Mapping[str, Any], name: str, cap: int) -> int | None:
    value = values.get(name)
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise TypeError
        number = int(value)
    except (TypeError, ValueError):
        raise BadRequest(
            f"{name!r} must be a positive integer.", param=name, code="invalid_type"
        ) from None
    if number < 1:
        raise BadRequest(f"{name!r} must be a positive integer.", param=name)
    if number > cap:
        raise BadRequest(
            f"{name!r} is {number}; the limit here is {cap} (CHATPROXY_MAX_TOKENS).",
            param=name,
            code="above_max_tokens",
        )
    return number


def _flag(values: Mapping[str, Any], name: str) -> bool | None:
    value = values.get(name)
    if value is None or isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise BadRequest(f"{name!r} must be true or false (1 or 0).", param=name)


def _choice(values: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> str | None:
    value = values.get(name)
    if value is None or value == "":
        return None
    if value not in allowed:
        raise BadRequest(f"{name!r} must be one of {', '.join(allowed)}.", param=name)
    return str(value)


def _stop(values: Mapping[str, Any]) -> str | list[str] | None:
    value = values.get("stop")
    if value is None or value == "":
        return None
    sequences = [value] if isinstance(value, str) else value
    if (
        not isinstance(sequences, list)
        or not 1 <= len(sequences) <= MAX_STOP_SEQUENCES
        or not all(isinstance(s, str) and 0 < len(s) <= 100 for s in sequences)
    ):
        raise BadRequest(
            f"'stop' must be a string or a list of up to {MAX_STOP_SEQUENCES} strings "
            "of 1 to 100 characters.",
            param="stop",
        )
    return value
