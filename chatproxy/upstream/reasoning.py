"""A model's reasoning, told apart from its answer in each dialect OpenAI-compatible servers use.

- `reasoning_content`: DeepSeek's API, vLLM and SGLang with a reasoning parser
  (`message.reasoning_content`, `delta.reasoning_content`).
- `reasoning`: OpenRouter, Ollama, newer vLLM (`message.reasoning`,
  `delta.reasoning`). A server that sends both (vLLM while it renames the
  field) sends the same text twice: the first found is taken.
- A leading `<think>…</think>` block inside `content`: llama.cpp's server,
  Ollama without a reasoning parser, many distilled models (DeepSeek-R1's
  distills, QwQ, Qwen3). Only a block that opens the content counts; its tags
  may come split across chunks (`<th`, `ink>`).

OpenAI's own models (o-series, gpt-5) send no reasoning text on chat
completions, only `usage.completion_tokens_details.reasoning_tokens`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OPEN = "<think>"
CLOSE = "</think>"
_BEFORE, _INSIDE, _AFTER = range(3)


class Reasoning(str):
    """A piece of the model's reasoning, as `ChatStream` yields it beside the answer's `str`."""

    __slots__ = ()


def reasoning_of(message: Mapping[str, Any]) -> str | None:
    """The reasoning field of a whole answer's `message` or a chunk's `delta`, or None."""
    for name in ("reasoning_content", "reasoning"):
        value = message.get(name)
        if value and isinstance(value, str):
            return value
    return None


def split_think(content: str) -> tuple[str | None, str]:
    """A whole answer's `content` as (reasoning of its leading `<think>` block or None, answer).

    A block never closed (the answer was cut by `max_tokens`) is all reasoning.
    """
    start = content.lstrip()
    if not start.startswith(OPEN):
        return None, content
    inside = start[len(OPEN) :]
    end = inside.find(CLOSE)
    if end < 0:
        return inside.strip() or None, ""
    return inside[:end].strip() or None, inside[end + len(CLOSE) :].lstrip()


class LeadingThink:
    """Reads a stream's content pieces while they may still be a leading `<think>` block.

    `feed(piece)` returns what can be told so far: `Reasoning` pieces inside
    the block, `str` pieces of the answer. Text that may be a tag not yet
    whole, and whitespace that may end the block, is held back until the
    next piece (`end()` gives it when the stream ends). The whitespace around
    the block is dropped. Once the answer has started, `done` is True and the
    caller passes content on without asking (the per-piece cost of a stream
    without a block is one look at its first piece).
    """

    def __init__(self) -> None:
        self.done = False
        self._state = _BEFORE
        self._held = ""
        self._trim = True  # at the start of the reasoning: drop its leading whitespace

    def feed(self, text: str) -> list[str]:
        """The pieces `text` (a `delta.content`) makes, held text before it included."""
        if self._held:
            text, self._held = self._held + text, ""
        pieces: list[str] = []
        if self._state == _BEFORE:
            start = text.lstrip()
            if not start or (len(start) < len(OPEN) and OPEN.startswith(start)):
                self._held = text  # whitespace, or perhaps `<think>` not yet whole
                return pieces
            if not start.startswith(OPEN):
                self.done = True
                return [text]
            self._state, text = _INSIDE, start[len(OPEN) :]
        if self._state == _INSIDE:
            end = text.find(CLOSE)
            thought = text if end < 0 else text[:end]
            if end < 0:
                # A tag perhaps cut, and the whitespace before it (the block's last, perhaps).
                thought = text[: _partial_close(text)].rstrip()
                self._held = text[len(thought) :]
            if self._trim:
                thought = thought.lstrip()
                self._trim = not thought
            if end >= 0:
                thought = thought.rstrip()
            if thought:
                pieces.append(Reasoning(thought))
            if end < 0:
                return pieces
            self._state, text = _AFTER, text[end + len(CLOSE) :]
        answer = text.lstrip()
        if answer:
            self.done = True
            pieces.append(answer)
        return pieces

    def end(self) -> list[str]:
        """What was held back when the stream ends: reasoning inside the block, else answer."""
        held, self._held = self._held, ""
        if self._state == _INSIDE:
            held = held.rstrip()
        if not held or self._state == _AFTER:
            return []
        return [Reasoning(held) if self._state == _INSIDE else held]


def _partial_close(text: str) -> int:
    """Where a `</think>` that may go on in the next piece starts at the end of `text`, or its
    length."""
    at = text.find("<", max(0, len(text) - len(CLOSE) + 1))
    while at >= 0:
        if CLOSE.startswith(text[at:]):
            return at
        at = text.find("<", at + 1)
    return len(text)
