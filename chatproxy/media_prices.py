"""What an audio or image request costs: its worst case before it is sent, its bill once answered.

Each model is billed in the units OpenAI bills it in (`Price`, OpenAI's pricing
page, see `chatproxy.prices`): whisper-1 by the minute of audio, tts-1 and
tts-1-hd by the character read aloud, dall-e-2 and dall-e-3 by the image (of
its size and quality), the gpt-4o transcribe and speech models and gpt-image-1
by the token (their audio and image input tokens at `media_input`). The
ledger keeps tokens and USD: a request billed in other units is charged their
price, with the tokens of its texts counted by chatproxy (a transcript, the
text read aloud, an image's prompt) so that a key's token quotas see it too.

Worst cases (the quota reservation) bound what the request can cost before
anything is known of the answer; the figures below say where each comes from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chatproxy.tokens import Price, count_text, counted_usage, price_for, usage_in_chat_terms

# The longest an upload can play: audio compressed to 32 kbit/s (speech as a low-rate MP3,
# or Opus), 4,000 bytes a second; a 25 MB file then holds 109 minutes.
AUDIO_BYTES_PER_SECOND = 4000
# gpt-4o-transcribe costs about $0.006 a minute at $6 per 1M audio tokens: ~17 a second.
AUDIO_TOKENS_PER_SECOND = 17
# Speech runs about 150 words (200 tokens) a minute; a transcript's tokens a second, with room.
TRANSCRIPT_TOKENS_PER_SECOND = 5
WORDS_PER_MINUTE = 150
# gpt-4o-mini-tts costs about $0.015 a minute at $12 per 1M audio tokens (1,250 a minute),
# for about 900 characters read a minute at speed 1.
SPEECH_TOKENS_PER_CHARACTER = 1.4
SLOWEST_SPEECH = 0.25  # OpenAI's lowest `speed`: four times the audio
# gpt-image-1's output tokens by quality and size (OpenAI's image generation guide).
GPT_IMAGE_TOKENS = {
    ("low", "1024x1024"): 272,
    ("low", "1024x1536"): 408,
    ("low", "1536x1024"): 400,
    ("medium", "1024x1024"): 1056,
    ("medium", "1024x1536"): 1584,
    ("medium", "1536x1024"): 1568,
    ("high", "1024x1024"): 4160,
    ("high", "1024x1536"): 6240,
    ("high", "1536x1024"): 6208,
}
GPT_IMAGE_MOST_TOKENS = max(GPT_IMAGE_TOKENS.values())  # `auto` quality or size
DEFAULT_IMAGE_SIZE = "1024x1024"  # dall-e's default size
# A cue's start or end in SRT (`00:01:02,500`) or WebVTT (`00:01:02.500`).
_CUE_TIME = re.compile(rb"(\d{2,}):(\d{2}):(\d{2})[,.](\d{3})")


@dataclass(frozen=True)
class Bill:
    """What one answer is charged: `usage` in chat's terms (`prompt_tokens`,
    `completion_tokens`, `total_tokens`), its `cost` in USD (None without a price), and
    whether chatproxy `counted` the tokens itself."""

    usage: dict[str, Any]
    cost: float | None
    counted: bool


@dataclass(frozen=True)
class Worst:
    """A request's worst case, to reserve: `tokens` and `cost` in USD."""

    tokens: int
    cost: float


def token_cost(price: Price | None, usage: Mapping[str, Any]) -> float | None:
    """USD of a usage in chat's terms: input tokens at `input`, their audio and image tokens
    (`input_token(s)_details`) at `media_input` when set, output tokens at `output`."""
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if price is None or not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    details = usage.get("input_token_details") or usage.get("input_tokens_details") or {}
    media = 0
    if isinstance(details, Mapping):
        media = sum(
            value
            for name in ("audio_tokens", "image_tokens")
            if isinstance(value := details.get(name), int) and value > 0
        )
    media = min(media, max(prompt, 0))
    media_price = price.input if price.media_input is None else price.media_input
    total = (prompt - media) * price.input + media * media_price + completion * price.output
    return round(max(total, 0) / 1_000_000, 10)


def per_minute_cost(price: Price | None, seconds: float) -> float | None:
    """USD of `seconds` of audio at `price.per_minute`; None without one."""
    if price is None or price.per_minute is None:
        return None
    return round(seconds / 60 * price.per_minute, 10)


def image_price(price: Price, size: str | None, quality: str | None) -> float:
    """USD of one image of `size` (default 1024x1024) and `quality` (`hd` or not) at
    `price.per_image`; a size it does not list costs its dearest (0 without any)."""
    table = dict(price.per_image)
    key = size or DEFAULT_IMAGE_SIZE
    found = table.get(f"hd {key}" if quality == "hd" else key)
    return found if found is not None else max(table.values(), default=0.0)


def gpt_image_tokens(size: str | None, quality: str | None) -> int:
    """gpt-image-1's output tokens for one image of `size` and `quality` (`auto` or unknown:
    the most)."""
    return GPT_IMAGE_TOKENS.get((quality or "", size or ""), GPT_IMAGE_MOST_TOKENS)


# ---------- Transcriptions and translations ----------


def worst_transcription(model: str, file_bytes: int, prices: Mapping[str, Price]) -> Worst:
    """The worst case of transcribing (or translating) a file of `file_bytes`: as long as it
    can play (AUDIO_BYTES_PER_SECOND), its audio tokens, a transcript as long as speech."""
    seconds = file_bytes / AUDIO_BYTES_PER_SECOND
    transcript = math.ceil(seconds * TRANSCRIPT_TOKENS_PER_SECOND)
    price = price_for(model, prices)
    if price is not None and price.per_minute is not None:
        return Worst(transcript, per_minute_cost(price, seconds) or 0.0)
    usage: dict[str, Any] = counted_usage(math.ceil(seconds * AUDIO_TOKENS_PER_SECOND), transcript)
    usage["input_token_details"] = {"audio_tokens": usage["prompt_tokens"]}
    return Worst(usage["total_tokens"], token_cost(price, usage) or 0.0)


def transcription_bill(
    model: str, body: bytes, data: Mapping[str, Any] | None, usage: Any, prices: Mapping[str, Price]
) -> Bill:
    """The bill of a transcription (or translation) answered with `body` (`data` when JSON),
    or of a stream whose last event gave `usage` (`body`: its text).

    Token usage (`{"type": "tokens", "input_tokens", ...}`) is priced as it is.
    Otherwise the audio's seconds (`usage.seconds` of a `duration` usage, a
    verbose answer's `duration`, else the last cue of SRT or WebVTT, else the
    transcript's words at WORDS_PER_MINUTE) are priced per minute, or for a
    model billed by the token as its audio tokens; the transcript's tokens are
    counted.
    """
    price = price_for(model, prices)
    if isinstance(usage, Mapping) and "input_tokens" in usage:
        reported = usage_in_chat_terms(usage) or {}
        return Bill(reported, token_cost(price, reported), False)
    text = _transcript(body, data)
    seconds = _seconds(body, data, usage, text)
    written = count_text(text, model)
    if price is not None and price.per_minute is not None:
        return Bill(counted_usage(0, written), per_minute_cost(price, seconds), True)
    found: dict[str, Any] = counted_usage(math.ceil(seconds * AUDIO_TOKENS_PER_SECOND), written)
    found["input_token_details"] = {"audio_tokens": found["prompt_tokens"]}
    return Bill(found, token_cost(price, found), True)


def _transcript(body: bytes, data: Mapping[str, Any] | None) -> str:
    if data is not None:
        text = data.get("text")
        return text if isinstance(text, str) else ""
    return body.decode("utf-8", "replace")


def _seconds(body: bytes, data: Mapping[str, Any] | None, usage: Any, text: str) -> float:
    """How long the audio played, by the best measure the answer gives (see transcription_bill)."""
    if isinstance(usage, Mapping) and _number(usage.get("seconds")):
        return float(usage["seconds"])
    if data is not None and _number(data.get("duration")):
        return float(data["duration"])
    cues = _CUE_TIME.findall(body) if data is None else []
    if cues:
        return max(int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000 for h, m, s, ms in cues)
    return len(text.split()) / WORDS_PER_MINUTE * 60


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


# ---------- Speech ----------


def worst_speech(model: str, text: str, prices: Mapping[str, Price]) -> Worst:
    """The worst case of reading `text` aloud: its characters, or its tokens and the audio
    tokens of reading it at the slowest speed."""
    price = price_for(model, prices)
    prompt = len(text.encode("utf-8"))  # bounds its tokens
    if price is not None and price.per_1m_characters is not None:
        return Worst(prompt, len(text) * price.per_1m_characters / 1e6)
    audio = math.ceil(len(text) * SPEECH_TOKENS_PER_CHARACTER / SLOWEST_SPEECH)
    usage = counted_usage(prompt, audio)
    return Worst(usage["total_tokens"], token_cost(price, usage) or 0.0)


def speech_bill(
    model: str, text: str, speed: float, usage: Any, prices: Mapping[str, Price]
) -> Bill:
    """The bill of reading `text` aloud at `speed`: by its characters, or by the usage a
    stream of events reported, else by its tokens counted and the audio tokens of reading
    it (SPEECH_TOKENS_PER_CHARACTER, slower speech longer)."""
    price = price_for(model, prices)
    if price is not None and price.per_1m_characters is not None:
        cost = round(len(text) * price.per_1m_characters / 1e6, 10)
        return Bill(counted_usage(count_text(text, model), 0), cost, True)
    if isinstance(usage, Mapping) and "input_tokens" in usage:
        found = usage_in_chat_terms(usage) or {}
        return Bill(found, token_cost(price, found), False)
    audio = math.ceil(len(text) * SPEECH_TOKENS_PER_CHARACTER / max(speed, SLOWEST_SPEECH))
    found = counted_usage(count_text(text, model), audio)
    return Bill(found, token_cost(price, found), True)


# ---------- Images ----------


def worst_images(
    model: str,
    prompt: str,
    n: int,
    size: str | None,
    quality: str | None,
    input_images: int,
    prices: Mapping[str, Price],
) -> Worst:
    """The worst case of making `n` images of `size` and `quality` from `prompt` (and
    `input_images` images to edit): `n` at their price, or their tokens (an input image
    counted as the largest output image)."""
    price = price_for(model, prices)
    prompt_tokens = len(prompt.encode("utf-8"))  # bounds its tokens
    if price is not None and price.per_image:
        return Worst(prompt_tokens, n * image_price(price, size, quality))
    media = input_images * GPT_IMAGE_MOST_TOKENS
    usage: dict[str, Any] = counted_usage(
        prompt_tokens + media, n * gpt_image_tokens(size, quality)
    )
    usage["input_tokens_details"] = {"image_tokens": media}
    return Worst(usage["total_tokens"], token_cost(price, usage) or 0.0)


def images_bill(
    model: str,
    prompt: str,
    made: int,
    size: str | None,
    quality: str | None,
    usage: Any,
    prices: Mapping[str, Price],
) -> Bill:
    """The bill of `made` images: at their price by size and quality (dall-e), or by the
    usage reported (gpt-image-1), else by the prompt's tokens and the images' output tokens."""
    price = price_for(model, prices)
    if price is not None and price.per_image:
        cost = round(made * image_price(price, size, quality), 10)
        return Bill(counted_usage(count_text(prompt, model), 0), cost, True)
    if isinstance(usage, Mapping) and "input_tokens" in usage:
        found = usage_in_chat_terms(usage) or {}
        return Bill(found, token_cost(price, found), False)
    found = counted_usage(count_text(prompt, model), made * gpt_image_tokens(size, quality))
    return Bill(found, token_cost(price, found), True)
