"""Tokens and cost: counting with tiktoken, fitting a prompt in a model's window, prices.

Counting follows OpenAI's published rule for chat messages (OpenAI cookbook,
"How to count tokens with tiktoken", section 6): each message costs 3 tokens
plus the tokens of its string values (role, content, name), a `name` 1 more,
and 3 more prime the reply. Encodings: o200k_base for gpt-4o, gpt-4.1, gpt-4.5,
gpt-5 and the o-series, and for models chatproxy does not know; cl100k_base
for gpt-4 and gpt-3.5. Their BPE files ship in `tiktoken_cache/` (see its
README), so counting works offline; tiktoken checks each file's SHA-256 when it
loads it.

tiktoken runs only near the limit: a byte-level BPE token covers at least one
byte, so the UTF-8 length of the text plus the per-message overheads bounds
the count from above, and a prompt whose bound fits is sent uncounted.

Images (`image_url` content parts) count by OpenAI's tile rule
(`chatproxy.images`): exactly from the pixel size a `data:` URL's header gives,
and in bounds as the most tiles an image of that `detail` takes.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatproxy.environment import ConfigError
from chatproxy.errors import BadRequest
from chatproxy.images import image_tokens, part_tokens
from chatproxy.prices import PRICES as PRICES
from chatproxy.prices import Price as Price
from chatproxy.prices import answer_cost as answer_cost
from chatproxy.prices import cost as cost
from chatproxy.prices import known
from chatproxy.prices import load_prices as load_prices
from chatproxy.prices import price_for as price_for
from chatproxy.prices import usage_in_chat_terms as usage_in_chat_terms

if TYPE_CHECKING:
    from tiktoken import Encoding

Message = Mapping[str, Any]
"""A chat message: `{"role": str, "content": str | [{"type": "text", "text": str}], "name"?}`."""

CACHE_DIR = Path(__file__).resolve().parent / "tiktoken_cache"
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3  # <|start|>assistant<|message|>

# gpt-4 names that use o200k_base, checked before the cl100k_base prefixes.
_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "chatgpt-4o")
_CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "gpt-35", "davinci-002", "babbage-002", "text-embedding")
# A dated snapshot of a model: gpt-4o-mini-2024-07-18, gpt-4-0613.
# Reasoning models (o1, o3, o4-mini, gpt-5, ...) refuse `max_tokens` and take
# `max_completion_tokens`; a provider prefix such as `openai/` may come first.
_REASONING = re.compile(r"(?:[\w.-]+/)?(?:o\d+|gpt-5)(?:[-.]|$)")

# Context windows in tokens (prompt and answer together), from OpenAI's model
# pages (https://platform.openai.com/docs/models). Dated snapshots take their
# model's figure; other models take CHATPROXY_CONTEXT_WINDOW.
CONTEXT_WINDOWS: dict[str, int] = {
    "gpt-3.5-turbo": 16_385,
    "gpt-4": 8_192,
    "gpt-4-32k": 32_768,
    "gpt-4-turbo": 128_000,
    "gpt-4-turbo-preview": 128_000,
    "gpt-4-1106-preview": 128_000,
    "gpt-4-0125-preview": 128_000,
    "gpt-4o": 128_000,
    "gpt-4o-mini": 128_000,
    "chatgpt-4o-latest": 128_000,
    "gpt-4.1": 1_047_576,
    "gpt-4.1-mini": 1_047_576,
    "gpt-4.1-nano": 1_047_576,
    "gpt-4.5-preview": 128_000,
    "o1": 200_000,
    "o1-mini": 128_000,
    "o3": 200_000,
    "o3-mini": 200_000,
    "o4-mini": 200_000,
    "gpt-5": 400_000,
    "gpt-5-mini": 400_000,
    "gpt-5-nano": 400_000,
}


# ---------- Counting ----------


def encoding_name(model: str) -> str:
    """The tiktoken encoding of `model`: `o200k_base` or `cl100k_base` (see the module doc)."""
    base = _base_model(model)
    if base.startswith(_O200K_PREFIXES):
        return "o200k_base"
    if base.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    return "o200k_base"


def encoding_for(model: str) -> Encoding:
    """The tiktoken `Encoding` of `model`, loaded once per process from the shipped BPE files."""
    return _encoding(encoding_name(model))


@functools.cache
def _encoding(name: str) -> Encoding:
    # Set here, not at import: nothing is read until tokens are needed. An
    # owner's own TIKTOKEN_CACHE_DIR wins.
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(CACHE_DIR))
    import tiktoken

    return tiktoken.get_encoding(name)


def count_text(text: str, model: str) -> int:
    """Tokens in `text` for `model`; special tokens' text (`<|endoftext|>`) counts as plain text."""
    return len(encoding_for(model).encode_ordinary(text))


def count_messages(messages: Sequence[Message], model: str) -> int:
    """Prompt tokens of a chat request's `messages`, as OpenAI counts them (the cookbook's rule).

    String values (role, content, name), the text parts of a list `content`
    and its images (`image_url` parts, by OpenAI's tile rule for `model`) are
    counted; other values (tool calls) are not.
    """
    encoding = encoding_for(model)
    return REPLY_PRIMING + sum(_message_tokens(message, encoding, model) for message in messages)


def count_prompt(body: Mapping[str, Any], model: str) -> int:
    """Prompt tokens of a `/v1` request body as a client sent it: chat `messages`, a legacy
    `prompt` or an embedding's `input` (a string, strings, or token arrays), or a response's
    `instructions` and `input` (a string, or items whose text counts as messages' does).
    Items of other shapes count nothing."""
    messages = body.get("messages")
    if isinstance(messages, list):
        return count_messages([m for m in messages if isinstance(m, dict)], model)
    if "instructions" in body or (
        isinstance(body.get("input"), list) and any(isinstance(i, dict) for i in body["input"])
    ):
        return _count_response_input(body, model)
    prompt = body.get("prompt", body.get("input"))
    prompts = prompt if isinstance(prompt, list) else [prompt]
    if prompts and all(isinstance(item, int) for item in prompts):
        return len(prompts)  # one prompt as token ids
    total = 0
    for item in prompts:
        if isinstance(item, str):
            total += count_text(item, model)
        elif isinstance(item, list):
            total += len(item)  # token ids
    return total


def _count_response_input(body: Mapping[str, Any], model: str) -> int:
    """Tokens of a Responses API request's `instructions` and `input` (OpenAI API reference,
    "Create a model response"): a string, or items (messages with text parts, tool outputs)."""
    items = body.get("input")
    messages: list[Message] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        messages.append({"role": "developer", "content": instructions})
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        content = item.get("content", item.get("output", item.get("arguments")))
        if isinstance(content, list):
            content = [
                {"type": "text", "text": part.get("text")}
                for part in content
                if isinstance(part, dict)
            ]
        messages.append({"role": str(item.get("role", "")), "content": content})
    return count_messages(messages, model)


def size_bound(value: Any) -> int:
    """An upper bound of the tokens in any JSON `value` (a request's `messages` or `prompt`).

    Its UTF-8 JSON length: a byte-level BPE token covers at least one byte, and
    the quotes, commas and braces outweigh the few tokens a message adds.
    """
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))


def counted_usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """A `usage` object (OpenAI's three fields) for tokens chatproxy counted itself."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def token_bound(
    messages: Sequence[Message], *, quick: bool = False, model: str = "gpt-4o-mini"
) -> int:
    """An upper bound of `count_messages(messages, model)`, without tiktoken.

    A byte-level BPE token covers at least one byte of UTF-8, so each text's
    byte length bounds its token count. With `quick`, a non-ASCII text counts
    4 per character (UTF-8's longest) instead: looser, but nothing is encoded.
    An image counts as the most tiles one of its `detail` takes for `model`
    (by default gpt-4o-mini's, the largest counts), its bytes unread.
    """
    return REPLY_PRIMING + sum(_message_bound(message, quick, model) for message in messages)


def _message_tokens(message: Message, encoding: Encoding, model: str) -> int:
    tokens = TOKENS_PER_MESSAGE
    for key, value in message.items():
        text = _text_of(value)
        if text:
            tokens += len(encoding.encode_ordinary(text))
        if key == "content" and isinstance(value, list):
            tokens += sum(part_tokens(part, model) for part in value)
        if key == "name":
            tokens += TOKENS_PER_NAME
    return tokens


def _image_bound(content: list[Any], model: str) -> int:
    """The most tokens the images of `content` may take for `model`, their sizes unread."""
    total = 0
    for part in content:
        if isinstance(part, dict) and part.get("type") == "image_url":
            image = part.get("image_url")
            detail = image.get("detail") if isinstance(image, dict) else None
            total += image_tokens(None, None, detail, model)
    return total


def _message_bound(message: Message, quick: bool, model: str) -> int:
    tokens = TOKENS_PER_MESSAGE
    for key, value in message.items():
        if key == "content" and isinstance(value, list):
            tokens += _image_bound(value, model)
        text = _text_of(value)
        if text.isascii():
            tokens += len(text)
        elif quick:
            tokens += 4 * len(text)
        else:
            # Lone surrogates (possible in JSON) become U+FFFD in tiktoken: 3 bytes either way.
            tokens += len(text.encode("utf-8", "surrogatepass"))
        if key == "name":
            tokens += TOKENS_PER_NAME
    return tokens


def _text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(
            part["text"]
            for part in value
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        )
    return ""


# ---------- Fitting a prompt in the window ----------


def context_window(model: str, default: int) -> int:
    """The context window of `model` in tokens (CONTEXT_WINDOWS), or `default` if unknown."""
    return known(CONTEXT_WINDOWS, _base_model(model)) or default


def limit_field(model: str) -> str:
    """The body field that caps the length of `model`'s answers.

    `max_tokens`, which every OpenAI-compatible server knows, or
    `max_completion_tokens` for OpenAI's reasoning models, which refuse `max_tokens`.
    """
    return "max_completion_tokens" if _REASONING.match(model) else "max_tokens"


def fit_messages(
    leading: Sequence[Message],
    history: Sequence[Message],
    question: Message,
    model: str,
    max_tokens: int,
    window: int,
) -> list[Message]:
    """The messages to send: `leading`, as much of `history` as fits, then `question`.

    `leading` (persona and system messages) and `question` are always kept;
    `history` turns (a user message and the answers that follow it) are
    dropped oldest first until the prompt plus `max_tokens` fits in `window`
    tokens. Raises BadRequest `context_length_exceeded` (param `input`) when
    even `leading`, `question` and `max_tokens` do not fit. tiktoken runs
    only when the bound (`token_bound`) does not already fit.
    """
    messages = [*leading, *history, question]
    room = window - max_tokens
    if (
        token_bound(messages, quick=True, model=model) <= room
        or token_bound(messages, model=model) <= room
    ):
        return messages
    encoding = encoding_for(model)
    fixed = REPLY_PRIMING + sum(_message_tokens(m, encoding, model) for m in (*leading, question))
    if fixed + max_tokens > window:
        along = " with its system and persona messages" if leading else ""
        raise BadRequest(
            f"The question is too long for {model}: it is {fixed:,} tokens{along}, and with "
            f"max_tokens {max_tokens:,} that is more than the model's context window of "
            f"{window:,} tokens. Shorten it, or ask for fewer max_tokens.",
            param="input",
            code="context_length_exceeded",
        )
    left = window - max_tokens - fixed
    turns = _turns(history)
    sizes = [sum(_message_tokens(m, encoding, model) for m in turn) for turn in turns]
    # Old images go before old text: an image is worth less to the answer than the words
    # around it, and takes far more room.
    for index, turn in enumerate(turns):
        if sum(sizes) <= left:
            break
        if any(_has_images(m) for m in turn):
            turns[index] = [without_images(m) for m in turn]
            sizes[index] = sum(_message_tokens(m, encoding, model) for m in turns[index])
    kept: list[list[Message]] = []
    for turn, size in reversed(list(zip(turns, sizes, strict=True))):
        if size > left:
            break
        left -= size
        kept.append(turn)
    return [*leading, *(message for turn in reversed(kept) for message in turn), question]


def image_count(messages: Sequence[Message]) -> int:
    """How many `image_url` parts `messages` hold."""
    return sum(
        1
        for message in messages
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if isinstance(part, dict) and part.get("type") == "image_url"
    )


def without_images(message: Message) -> Message:
    """`message` with its `image_url` parts left out (its text kept)."""
    if not _has_images(message):
        return message
    parts = [
        p for p in message["content"] if not (isinstance(p, dict) and p.get("type") == "image_url")
    ]
    return {**message, "content": parts or ""}


def _has_images(message: Message) -> bool:
    return image_count([message]) > 0


def _turns(history: Sequence[Message]) -> list[list[Message]]:
    """`history` cut before each user message, so a question and its answer stay together."""
    turns: list[list[Message]] = []
    for message in history:
        if message.get("role") == "user" or not turns:
            turns.append([])
        turns[-1].append(message)
    return turns


def check_max_tokens(models: Sequence[str], max_tokens: int, default_window: int) -> None:
    """Raise ConfigError if CHATPROXY_MAX_TOKENS leaves no room for a question in some window."""
    for model in models:
        window = context_window(model, default_window)
        if max_tokens >= window:
            where = (
                "" if known(CONTEXT_WINDOWS, _base_model(model)) else ", CHATPROXY_CONTEXT_WINDOW"
            )
            raise ConfigError(
                f"CHATPROXY_MAX_TOKENS={max_tokens} leaves no room for a question in the context "
                f"window of {model} ({window:,} tokens{where})"
            )


# ---------- Model names ----------


def _base_model(model: str) -> str:
    """`model`, or a fine-tuned model's base (`ft:gpt-4o-mini-2024-07-18:org::id`)."""
    if model.startswith("ft:"):
        return model[3:].split(":", 1)[0]
    return model
