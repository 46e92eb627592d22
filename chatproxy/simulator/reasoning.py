"""A model's reasoning as OpenAI-compatible servers send it, for the simulator to send.

`[[sim: reasoning=DIALECT]]` (and `thought=N`, about N words of it) answers
with reasoning before the answer, in one of the dialects servers use today:

- `reasoning_content`: DeepSeek's API, vLLM and SGLang with a reasoning parser:
  `message.reasoning_content` in a whole answer; in a stream, chunks whose
  delta is `{"content": null, "reasoning_content": "..."}`, then the answer's.
- `reasoning`: OpenRouter, Ollama, newer vLLM: the same in a `reasoning` field.
- `think`: llama.cpp's server and Ollama without a reasoning parser, and many
  distilled models: a leading `<think>\\n...\\n</think>\\n\\n` block inside
  `content`, streamed as content pieces like the rest.
- `think_split`: as `think`, with each tag cut in two across chunks
  (`<th` + `ink>`), as a tokenizer may send it.

The model `deepseek-reasoner` always thinks (`reasoning_content`), as on
DeepSeek's API. Usage counts the reasoning in `completion_tokens`; with the
field dialects `completion_tokens_details.reasoning_tokens` says how many, as
DeepSeek and OpenAI report it (the `think` servers do not tell them apart).
"""

from __future__ import annotations

from dataclasses import dataclass

from chatproxy.simulator import answers

DIALECTS = ("reasoning_content", "reasoning", "think", "think_split")
FIELD_DIALECTS = ("reasoning_content", "reasoning")
THINK_DIALECTS = ("think", "think_split")
# Models that always answer with reasoning, and in which dialect.
ALWAYS = {"deepseek-reasoner": "reasoning_content"}
# Models that take `reasoning_effort` (others answer 400, as OpenAI does).
EFFORT_MODELS = ("o4-mini", "deepseek-reasoner", "gpt-oss-20b")
EFFORTS = ("minimal", "low", "medium", "high")
OPEN, CLOSE = "<think>\n", "\n</think>\n\n"


@dataclass(frozen=True)
class Thinking:
    """The reasoning of one answer in one dialect (`dialect` None: an answer without any)."""

    dialect: str | None = None
    text: str = ""
    tokens: int = 0  # in the model's encoding, tags included

    @property
    def reported_tokens(self) -> int:
        """`completion_tokens_details.reasoning_tokens`: 0 where the server does not tell."""
        return self.tokens if self.dialect in FIELD_DIALECTS else 0

    def fields(self) -> dict[str, str]:
        """What a whole answer's `message` carries besides its content: `{FIELD: text}`."""
        return {self.dialect: self.text} if self.dialect in FIELD_DIALECTS else {}  # type: ignore[dict-item]

    def content(self, answer: str) -> str:
        """A whole answer's `content`: the answer, after the `<think>` block in those dialects."""
        return f"{OPEN}{self.text}{CLOSE}{answer}" if self.dialect in THINK_DIALECTS else answer

    def stream(self, pieces: list[str]) -> tuple[tuple[str, list[str]] | None, list[str]]:
        """A stream's (reasoning field and its pieces, or None; content pieces), from the
        answer's `pieces`. `think_split` cuts each tag across two pieces (`<th`, `ink>`)."""
        if self.dialect in FIELD_DIALECTS:
            return (self.dialect, answers.split_pieces(self.text)), pieces  # type: ignore[return-value]
        if self.dialect == "think_split":
            thought = answers.split_pieces(self.text)
            return None, ["<th", "ink>\n", *thought, "\n</th", "ink>\n\n", *pieces]
        if self.dialect == "think":
            return None, [OPEN, *answers.split_pieces(self.text), CLOSE, *pieces]
        return None, pieces


def think(model: str, asked: str | None, question: str, words: int | None) -> Thinking:
    """How `model` thinks before answering `question`: in the directive's dialect (`asked`),
    else the model's own (ALWAYS), else not at all. `words`: about that many words of it."""
    dialect = asked or ALWAYS.get(model)
    if dialect is None:
        return Thinking()
    text = thought(question, words)
    tags = OPEN + CLOSE if dialect in THINK_DIALECTS else ""
    return Thinking(dialect, text, answers.count_tokens(tags + text, model))


def thought(question: str, words: int | None) -> str:
    """The reasoning before the answer to `question`: deterministic, so tests can predict it.

    Markdown, as models write it (a list, bold text); `words` asks for about
    that many words of prose instead.
    """
    if words is not None:
        return answers.filler_words(words)
    shown = " ".join(question.split())[:80] or "(an empty question)"
    return (
        f"The user asks: *{shown}*. Let me think about what they need.\n\n"
        "- First, what the question is really about.\n"
        "- Then, what a **short** and correct answer would say.\n\n"
        "That should do; now the answer."
    )


def effort_fault(model: str, effort: object) -> tuple[str, str] | None:
    """What OpenAI says of a request's `reasoning_effort` for `model`: (message, code), or None.

    `unsupported_parameter` for a model that does not reason, `invalid_value`
    for an effort it does not know.
    """
    if effort is None:
        return None
    if model not in EFFORT_MODELS:
        return (
            "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
            "unsupported_parameter",
        )
    if effort not in EFFORTS:
        allowed = ", ".join(f"'{e}'" for e in EFFORTS)
        return f"Invalid value: '{effort}'. Supported values are: {allowed}.", "invalid_value"
    return None
