"""Prices and cost: what a model's tokens cost in USD, from the shipped table or the owner's file.

Prices are USD per 1M tokens (`Price`), an answer's cost is its usage priced
(`cost`); CHATPROXY_PRICES_FILE puts the owner's prices over the table
(`load_prices`). Every endpoint's usage is priced in chat's terms
(`usage_in_chat_terms`): prompt tokens at the input price, completion tokens
at the output price; an embedding has only input tokens, a moderation none.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from chatproxy.environment import ConfigError, read_json_file

T = TypeVar("T")
MAX_PRICES_FILE_BYTES = 1024 * 1024
# A dated snapshot of a model: gpt-4o-mini-2024-07-18, gpt-4-0613.
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{4})$")


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens: `input` (prompt) and `output` (answer, reasoning included); and for
    the models of `/v1/audio` and `/v1/images`, the units they are billed in
    (`chatproxy.media_prices`).

    `media_input`: per 1M audio or image input tokens (a usage's
    `input_token(s)_details.audio_tokens` or `image_tokens`), None when they
    cost `input`; `per_minute`: per minute of audio (whisper-1);
    `per_1m_characters`: per 1M characters of text read aloud (tts-1);
    `per_image`: per image made, by size, `hd ` before it for `quality: hd`
    (`(("1024x1024", 0.04), ("hd 1024x1024", 0.08), ...)`: dall-e).
    """

    input: float
    output: float
    media_input: float | None = None
    per_minute: float | None = None
    per_1m_characters: float | None = None
    per_image: tuple[tuple[str, float], ...] = ()


# Standard-tier text prices, USD per 1M tokens, of OpenAI's pricing page
# (https://developers.openai.com/api/docs/pricing, formerly
# https://openai.com/api/pricing), taken 2026-11-21 from copies of it that
# agree (the page itself could not be fetched here): check before relying on
# them, and override with CHATPROXY_PRICES_FILE. Cached input is billed lower
# upstream; these costs count every prompt token at the full price. Dated
# snapshots take their model's price unless listed themselves.
PRICES: dict[str, Price] = {
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-2024-05-13": Price(5.00, 15.00),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-5": Price(1.25, 10.00),
    "gpt-5-mini": Price(0.25, 2.00),
    "gpt-5-nano": Price(0.05, 0.40),
    "o1": Price(15.00, 60.00),
    "o3": Price(2.00, 8.00),
    "o3-mini": Price(1.10, 4.40),
    "o4-mini": Price(1.10, 4.40),
    "gpt-4-turbo": Price(10.00, 30.00),
    "gpt-4": Price(30.00, 60.00),
    "gpt-4-32k": Price(60.00, 120.00),
    "gpt-3.5-turbo": Price(0.50, 1.50),
    # Legacy completions only; allowed by default. Its price as OpenAI's API
    # charges it, per llmreference.com's comparison of providers (2026-06).
    "gpt-3.5-turbo-instruct": Price(1.50, 2.00),
    # Embeddings (`/v1/embeddings`) bill their input tokens only.
    "text-embedding-3-small": Price(0.02, 0.0),
    "text-embedding-3-large": Price(0.13, 0.0),
    "text-embedding-ada-002": Price(0.10, 0.0),
    # Moderations (`/v1/moderations`) are free.
    "omni-moderation-latest": Price(0.0, 0.0),
    "omni-moderation-2024-09-26": Price(0.0, 0.0),
    "text-moderation-latest": Price(0.0, 0.0),
    "text-moderation-stable": Price(0.0, 0.0),
    # Audio (`/v1/audio/...`): whisper-1 by the minute of audio, tts-1 by the character
    # read, the gpt-4o models by the token, audio tokens at `media_input`.
    "whisper-1": Price(0.0, 0.0, per_minute=0.006),
    "gpt-4o-transcribe": Price(2.50, 10.00, media_input=6.00),
    "gpt-4o-mini-transcribe": Price(1.25, 5.00, media_input=3.00),
    "tts-1": Price(0.0, 0.0, per_1m_characters=15.00),
    "tts-1-hd": Price(0.0, 0.0, per_1m_characters=30.00),
    "gpt-4o-mini-tts": Price(0.60, 12.00),  # its output is audio tokens
    # Images (`/v1/images/...`): dall-e by the image, of its size and quality; gpt-image-1
    # by the token, image input tokens at `media_input`, its output all image tokens.
    "dall-e-2": Price(
        0.0, 0.0, per_image=(("256x256", 0.016), ("512x512", 0.018), ("1024x1024", 0.02))
    ),
    "dall-e-3": Price(
        0.0,
        0.0,
        per_image=(
            ("1024x1024", 0.04),
            ("1024x1792", 0.08),
            ("1792x1024", 0.08),
            ("hd 1024x1024", 0.08),
            ("hd 1024x1792", 0.12),
            ("hd 1792x1024", 0.12),
        ),
    ),
    "gpt-image-1": Price(5.00, 40.00, media_input=10.00),
}


def price_for(model: str | None, prices: Mapping[str, Price] = PRICES) -> Price | None:
    """The price of `model` in `prices` (a dated snapshot takes its model's), or None."""
    # `model` may come from the upstream's answer: anything JSON allows.
    return known(prices, model) if isinstance(model, str) and model else None


def cost(
    model: str | None, usage: Mapping[str, Any] | None, prices: Mapping[str, Price] = PRICES
) -> float | None:
    """What `usage` (`{"prompt_tokens", "completion_tokens", ...}`) of `model` cost, in USD.

    None when the model has no price or the usage is missing.
    """
    price = price_for(model, prices)
    if price is None or not isinstance(usage, Mapping):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not (isinstance(prompt, int) and isinstance(completion, int)) or min(prompt, completion) < 0:
        return None
    return round((prompt * price.input + completion * price.output) / 1_000_000, 10)


def answer_cost(
    usage: Mapping[str, Any] | None,
    reported_model: str | None,
    asked_model: str,
    prices: Mapping[str, Price] = PRICES,
) -> float | None:
    """The cost of an answer: priced as the model the upstream reported, else the one asked for."""
    found = cost(reported_model, usage, prices)
    return found if found is not None else cost(asked_model, usage, prices)


def load_prices(path: Path | None) -> dict[str, Price]:
    """PRICES, with the prices of the JSON file `path` (CHATPROXY_PRICES_FILE) over them.

    The file holds `{"model": {"input": X, "output": Y}}`, USD per 1M tokens;
    `output` may be left out for a model billed on its input only (an
    embedding model), and is then 0. The models of `/v1/audio` and
    `/v1/images` may instead (or as well) give the units they are billed in
    (see `Price`): `media_input` (USD per 1M audio or image input tokens),
    `per_minute` (USD per minute of audio), `per_1m_characters` (USD per 1M
    characters read aloud), `per_image` (`{"1024x1024": USD, "hd 1024x1024":
    USD, ...}`); a model needs `input` or one of the last three.
    Raises ConfigError with one line naming CHATPROXY_PRICES_FILE when the file
    cannot be read or is malformed.
    """
    prices = dict(PRICES)
    if path is None:
        return prices
    setting = f"CHATPROXY_PRICES_FILE={str(path)!r}"
    example = '{"model": {"input": 0.15, "output": 0.6}}'
    try:
        data = read_json_file(path, MAX_PRICES_FILE_BYTES)
    except ConfigError as fault:
        raise ConfigError(f"{setting} {fault}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{setting} must hold a JSON object like {example}")
    for model, entry in data.items():
        if (
            not isinstance(entry, dict)
            or not entry.keys() <= _PRICE_FIELDS.keys()
            or not entry.keys() & _BILLED_BY
            or ("output" in entry and "input" not in entry)
        ):
            raise ConfigError(
                f"{setting}: {model!r} must be an object with exactly input and output "
                f"(or input alone, for an embedding model), like {example}, or with the units "
                f"an audio or image model is billed in ({_UNITS})"
            )
        for key, value in entry.items():
            if key == "per_image":
                if not isinstance(value, dict) or not value:
                    raise ConfigError(
                        f"{setting}: {model!r} per_image must be an object of USD by size, "
                        f'like {{"1024x1024": 0.04}}'
                    )
                for size, each in value.items():
                    _check_price(each, f"{setting}: {model!r} per_image {size!r}", "USD per image")
            else:
                _check_price(value, f"{setting}: {model!r} {key}", _PRICE_FIELDS[key])
        prices[model] = Price(
            float(entry.get("input", 0.0)),
            float(entry.get("output", 0.0)),
            _optional(entry.get("media_input")),
            _optional(entry.get("per_minute")),
            _optional(entry.get("per_1m_characters")),
            tuple((str(size), float(each)) for size, each in entry.get("per_image", {}).items()),
        )
    return prices


# The fields of a prices file's entry, and the unit each is in.
_PRICE_FIELDS = {
    "input": "USD per 1M tokens",
    "output": "USD per 1M tokens",
    "media_input": "USD per 1M tokens",
    "per_minute": "USD per minute",
    "per_1m_characters": "USD per 1M characters",
    "per_image": "",
}
_BILLED_BY = {"input", "per_minute", "per_1m_characters", "per_image"}
_UNITS = "media_input, per_minute, per_1m_characters, per_image"


def _check_price(value: Any, where: str, unit: str) -> None:
    """Raise ConfigError unless `value` is a finite number, 0 or more."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ConfigError(f"{where} must be a number of {unit}, 0 or more, not {value!r}")


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


def usage_in_chat_terms(usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """`usage` with chat's `prompt_tokens`, `completion_tokens` and `total_tokens`, as the ledger
    and `cost` read it, whatever endpoint reported it.

    A Responses API usage (`input_tokens`, `output_tokens`) is renamed; an
    embedding's (`prompt_tokens`, `total_tokens`) gets `completion_tokens` 0.
    None stays None; the other fields are kept.
    """
    if not isinstance(usage, Mapping):
        return None
    if isinstance(usage, dict) and "completion_tokens" in usage and "total_tokens" in usage:
        return usage  # chat's own (every chat answer): nothing to copy
    found = dict(usage)
    if "prompt_tokens" not in found and "input_tokens" in found:
        found["prompt_tokens"] = found["input_tokens"]
        found["completion_tokens"] = found.get("output_tokens", 0)
    if "prompt_tokens" in found and "completion_tokens" not in found:
        found["completion_tokens"] = 0
    if "total_tokens" not in found:
        prompt, completion = found.get("prompt_tokens"), found.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            found["total_tokens"] = prompt + completion
    return found


def known(table: Mapping[str, T], model: str) -> T | None:
    """`table[model]`, or the entry of the model a dated snapshot of it belongs to."""
    found = table.get(model)
    if found is None:
        found = table.get(_SNAPSHOT.sub("", model))
    return found
