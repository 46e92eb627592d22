"""Canned answers and token arithmetic for the OpenAI-compatible simulator.

Everything here is pure and deterministic, so a test can predict an answer, its
token count and how a stream splits it. Tokens are counted with tiktoken in the
model's encoding (`chatproxy.tokens`), prompts by OpenAI's rule for chat
messages, so the usage reported matches what the gateway counts. Streams are
split by words: one per CJK character, one per run of other non-space characters.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from typing import Any

from chatproxy import tokens
from chatproxy.images import NotAnImage, decode_data_url, sniff_image

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_CJK_RE = re.compile(f"[{_CJK}]")
_TOKEN_RE = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")
DIRECTIVE_RE = re.compile(r"\s*\[\[sim:([^\]]*)\]\]")
# A question asking a model to go on with its answer before it ("Continue", "go on", "继续").
CONTINUE_RE = re.compile(r"^\s*(?:continue\b|go on\b|继续)", re.IGNORECASE)
ANSWERS = ("markdown", "chinese", "code", "math", "long", "xss", "echo")  # names for `answer=`

# Piece sizes (in tokens) for the default split, cycled so chunks look uneven
# the way a real model's deltas do: 1-3 words, or 2-4 CJK characters.
_WORD_SIZES = (1, 2, 3, 2)
_CJK_SIZES = (2, 3, 4, 3)

_PROSE = (
    "the gateway keeps the key on the server and forwards each question to "
    "an upstream model which streams its answer back piece by piece while the "
    "page renders markdown safely for every reader who asks something useful "
    "about proxies caching tokens latency limits retries and careful logging"
)


def has_cjk(text: str) -> bool:
    """True if `text` contains any Chinese, Japanese or Korean character."""
    return _CJK_RE.search(text) is not None


def count_words(text: str) -> int:
    """Words as the stream splitter sees them: CJK characters plus runs of other non-space ones."""
    return len(_TOKEN_RE.findall(text))


def count_tokens(text: str, model: str) -> int:
    """Tokens of `text` in `model`'s encoding (tiktoken)."""
    return tokens.count_text(text, model)


def truncate_tokens(text: str, limit: int, model: str) -> tuple[str, bool]:
    """Cut `text` after `limit` tokens of `model`'s encoding; returns (text, whether it was cut).

    A character split by the cut (a token may hold part of one) is left out.
    """
    encoding = tokens.encoding_for(model)
    ids = encoding.encode_ordinary(text)
    if len(ids) <= limit:
        return text, False
    return encoding.decode_bytes(ids[:limit]).decode("utf-8", "ignore"), True


def split_pieces(text: str, chunks: int | None = None) -> list[str]:
    """Split `text` into stream deltas whose concatenation is `text`.

    With `chunks`, exactly that many non-empty pieces (fewer only if `text` is
    shorter than that in characters); otherwise 1-3 words or 2-4 CJK
    characters per piece. Whitespace leads a piece, as in OpenAI's deltas.
    """
    ends = [match.end() for match in _TOKEN_RE.finditer(text)]
    if not text:
        return []
    if chunks is not None:
        chunks = max(1, chunks)
        if len(ends) >= chunks:
            cuts = [ends[(i * len(ends)) // chunks - 1] for i in range(1, chunks)]
        else:
            cuts = [(i * len(text)) // chunks for i in range(1, chunks)]
    else:
        cuts, index, turn = [], 0, 0
        while index < len(ends):
            sizes = _CJK_SIZES if has_cjk(text[ends[index] - 1]) else _WORD_SIZES
            index += sizes[turn % len(sizes)]
            turn += 1
            if index < len(ends):
                cuts.append(ends[index - 1])
    bounds = [0, *cuts, len(text)]
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
    return [piece for piece in pieces if piece]


def message_text(content: Any) -> str:
    """The text of a message `content`: a string or a list of `{"type": "text", "text"}` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def prompt_tokens(messages: Sequence[dict[str, Any]], model: str) -> int:
    """Prompt tokens for a chat request, by OpenAI's rule for chat messages (`count_messages`)."""
    return tokens.count_messages(messages, model)


def asked(messages: Sequence[dict[str, Any]]) -> tuple[str, Sequence[dict[str, Any]], str]:
    """What a chat request asks: (question, history, answer so far).

    Usually the question is the last user message (its directive still in
    it), the history all `messages`, and there is no answer so far (""). When
    the last message asks to go on ("Continue...", CONTINUE_RE) right after an
    answer, as chatproxy's Continue does: the question is the one before that
    answer, the history ends with it, and the answer so far is that answer's
    text, so the simulator answers with the rest (`compose_answer`).
    """
    texts = [(m.get("role"), message_text(m.get("content"))) for m in messages]
    if (
        len(texts) >= 3
        and texts[-1][0] == "user"
        and CONTINUE_RE.match(parse_directive(texts[-1][1])[1])
        and texts[-2][0] == "assistant"
        and texts[-3][0] == "user"
    ):
        return texts[-3][1], messages[:-2], texts[-2][1]
    users = [text for role, text in texts if role == "user"]
    return (users[-1] if users else ""), messages, ""


def parse_directive(text: str) -> tuple[dict[str, str], str]:
    """Find `[[sim: key=value ...]]` in `text`; returns (options, text without the directive)."""
    options: dict[str, str] = {}
    for match in DIRECTIVE_RE.finditer(text):
        for pair in re.split(r"[\s,]+", match.group(1).strip()):
            key, sep, value = pair.partition("=")
            if sep:
                options[key.strip()] = value.strip()
    return options, DIRECTIVE_RE.sub("", text).strip()


def filler_words(count: int) -> str:
    """About `count` words of deterministic English prose, in paragraphs of 60 words."""
    vocabulary = _PROSE.split()
    words = [vocabulary[i % len(vocabulary)] for i in range(max(1, count))]
    sentences = [" ".join(words[i : i + 12]).capitalize() + "." for i in range(0, len(words), 12)]
    paragraphs = [" ".join(sentences[i : i + 5]) for i in range(0, len(sentences), 5)]
    return "\n\n".join(paragraphs)


def _markdown(question: str, count: int) -> str:
    shown = " ".join(question.split())[:80] or "(empty question)"
    return (
        "**Simulated answer**\n\n"
        f"You asked: {shown}\n\n"
        "- This reply comes from the chatproxy simulator, not from a real model.\n"
        "- It is deterministic, so tests can compare it word for word.\n"
        "- Lists, **bold** text and code blocks exercise the Markdown renderer.\n\n"
        "```python\n"
        "def greet(name: str) -> str:\n"
        '    return f"Hello, {name}!"\n\n'
        'print(greet("chatproxy"))\n'
        "```\n\n"
        f"I received {count} message{'' if count == 1 else 's'} in this conversation."
    )


def _chinese(count: int) -> str:
    return (
        "**模拟回答**\n\n"
        "- 这是 chatproxy 模拟器生成的回答，不是真实模型。\n"
        "- 回答内容是确定的，方便测试逐字比较。\n"
        "- 列表、**粗体**和代码块可以检验 Markdown 渲染。\n\n"
        "```python\n"
        "def greet(name: str) -> str:\n"
        '    return f"你好，{name}！"\n'
        "```\n\n"
        f"本次对话共收到 {count} 条消息。"
    )


_CODE = (
    "## Reading a file line by line\n\n"
    "Use a context manager so the file is closed even if an error occurs:\n\n"
    "```python\n"
    "from pathlib import Path\n\n\n"
    "def count_lines(path: str) -> int:\n"
    '    with Path(path).open(encoding="utf-8") as handle:\n'
    "        return sum(1 for _ in handle)\n"
    "```\n\n"
    "The same from a shell:\n\n"
    "```bash\n"
    "wc -l notes.txt\n"
    "```\n\n"
    "`count_lines` reads one line at a time, so memory use stays flat."
)

# Formulas (inline and displayed), dollar amounts that are money, `$` in code.
_MATH = (
    "To solve $x^2 - 5x + 6 = 0$, use the quadratic formula with $a = 1$, $b = -5$, $c = 6$:\n\n"
    "$$x = \\frac{-b \\pm \\sqrt{b^2 - 4ac}}{2a} = \\frac{5 \\pm \\sqrt{25 - 24}}{2}$$\n\n"
    "so $x = 3$ or $x = 2$. Check: \\(3^2 - 5 \\cdot 3 + 6 = 0\\).\n\n"
    "A calculator app for this costs $5 and a textbook $10, but a few lines of Python will do:\n\n"
    "```python\n"
    "import math\n\n\n"
    "def roots(a: float, b: float, c: float) -> tuple[float, float]:\n"
    "    d = math.sqrt(b * b - 4 * a * c)\n"
    "    return (-b + d) / (2 * a), (-b - d) / (2 * a)\n\n\n"
    "print(roots(1, -5, 6))  # (3.0, 2.0)\n"
    "```\n\n"
    "In a shell, `echo $((3 * 2))` prints the product of the roots, $x_1 x_2 = c / a = 6$."
)

# Untrusted HTML inside Markdown: a page that renders answers without a
# sanitizer sets window.__xss, which the browser tests look for.
_XSS = (
    "**Rendering test**\n\n"
    'An image that should not run code: <img src=x onerror="window.__xss=1">\n\n'
    "<script>window.__xss=2</script>\n\n"
    "- a link that should be neutralised: [click](javascript:window.__xss=3)\n"
    "- plain text after the payloads stays visible\n"
)

_WORLD_CUP = "世界杯"
_WINNER = (
    "**阿根廷队**赢得了冠军：阿根廷队在2022年卡塔尔世界杯决赛中点球击败法国队夺冠。"
    "双方在常规时间和加时赛中战成3比3，阿根廷在点球大战中以4比2获胜。"
)
# question -> (answer when earlier turns mention the World Cup, answer otherwise)
_DIALOGUE = {
    "How do I solve x² − 5x + 6 = 0": (_MATH, _MATH),  # the demo's formulas (docs/math.png)
    "谁赢了2022年世界杯": (_WINNER, _WINNER),
    "在哪里举办的": (
        "2022年世界杯在**卡塔尔**举办，比赛时间是2022年11月20日至12月18日，决赛在卢赛尔体育场进行。",
        "抱歉，我不知道“它”指的是什么。请告诉我你想问的是哪一场活动或比赛。",
    ),
    "梅西打进了多少个球": (
        "梅西在2022年卡塔尔世界杯上打进了**7个球**，另有3次助攻，并获得了金球奖（赛事最佳球员）。",
        "梅西职业生涯的进球非常多。你想问的是哪一项赛事或哪一个赛季？请说得具体一些。",
    ),
}


def _dialogue(question: str, history: Iterable[dict[str, Any]]) -> str | None:
    """The World Cup demo: an answer that depends on whether earlier turns mention it."""
    key = question.strip().rstrip("?？ ")
    if key not in _DIALOGUE:
        return None
    in_context, without = _DIALOGUE[key]
    mentioned = any(_WORLD_CUP in message_text(m.get("content")) for m in history)
    return in_context if mentioned else without


_FILE_RE = re.compile(r'<file name="([^"]*)">\n(.*)\n</file>', re.DOTALL)


def describe_attachments(messages: Sequence[dict[str, Any]]) -> str:
    """What the last user message carried, a Markdown list item each, then a blank line ("" if
    nothing).

    An image: `- Image 1: PNG, 64×48 px, sha256 0123456789abcdef.` (the first 16
    hex digits of its bytes' SHA-256, so a test sees they arrived intact), or
    `- Image 1: https URL, not fetched.`; a file (a text part `<file name=...>`
    as chatproxy sends it): `- File notes.txt: 120 characters.`
    """
    import hashlib

    users = [m for m in messages if m.get("role") == "user"]
    content = users[-1].get("content") if users else None
    if not isinstance(content, list):
        return ""
    lines: list[str] = []
    images = 0
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            for name, text in _FILE_RE.findall(str(part.get("text", ""))):
                lines.append(f"- File {name}: {len(text)} characters.")
        elif part.get("type") == "image_url":
            images += 1
            url = str((part.get("image_url") or {}).get("url", ""))
            if not url.startswith("data:"):
                lines.append(f"- Image {images}: {url.split(':', 1)[0]} URL, not fetched.")
                continue
            try:
                data = decode_data_url(url)[1]
                info = sniff_image(data)
            except (ValueError, NotAnImage):
                lines.append(f"- Image {images}: not an image I can read.")
                continue
            digest = hashlib.sha256(data).hexdigest()[:16]
            lines.append(
                f"- Image {images}: {info.format.upper()}, {info.width}×{info.height} px, "
                f"sha256 {digest}."
            )
    return "\n".join(lines) + "\n\n" if lines else ""


def compose_answer(
    messages: Sequence[dict[str, Any]],
    question: str,
    name: str | None,
    words: int | None,
    so_far: str = "",
) -> str:
    """The answer to `question` (the last user message, directive removed) given the whole history.

    `name` picks a canned answer (markdown, chinese, code, math, long, xss, echo);
    `words` asks for about that many words of prose instead. With `so_far`
    (an answer cut off, to go on with: `asked`), only what follows it in that
    answer; the whole answer when `so_far` is not how it begins.
    """
    answer = describe_attachments(messages) + _compose(messages, question, name, words)
    return answer[len(so_far) :] if so_far and answer.startswith(so_far) else answer


def _compose(
    messages: Sequence[dict[str, Any]], question: str, name: str | None, words: int | None
) -> str:
    if words is not None:
        return filler_words(words)
    if name == "echo":
        return question
    if name in ("code", "xss", "math"):
        return {"code": _CODE, "xss": _XSS, "math": _MATH}[name]
    if name == "long":
        parts = [f"## Part {i}\n\n{filler_words(60 + 7 * i)}" for i in range(1, 11)]
        return "\n\n".join(parts)
    if name == "chinese":
        return _chinese(len(messages))
    if name is None:
        answer = _dialogue(question, messages)
        if answer is not None:
            return answer
        if has_cjk(question):
            return _chinese(len(messages))
    return _markdown(question, len(messages))
