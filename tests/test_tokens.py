"""Tokens and cost: counting with tiktoken offline, fitting the context window, prices."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx2
import pytest
import tiktoken

from chatproxy import create_app, tokens
from chatproxy.config import ConfigError
from chatproxy.errors import BadRequest
from chatproxy.tokens import (
    CACHE_DIR,
    Price,
    answer_cost,
    context_window,
    cost,
    count_messages,
    count_text,
    encoding_for,
    encoding_name,
    fit_messages,
    load_prices,
    token_bound,
)
from tests.test_ask import read_events

ROOT = Path(__file__).resolve().parent.parent

# ---------- The shipped BPE files ----------

# tiktoken_ext/openai_public.py (tiktoken 0.14.0): where each file is downloaded
# from, and the SHA-256 tiktoken expects of it.
BPE_FILES = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}


@pytest.mark.parametrize(("name", "sha256"), BPE_FILES.items())
def test_bpe_file_is_shipped_under_tiktokens_cache_name(name: str, sha256: str) -> None:
    url = f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
    shipped = CACHE_DIR / hashlib.sha1(url.encode()).hexdigest()

    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == sha256


# Runs in a fresh interpreter whose sockets cannot connect: counting must not
# need the network. Prints the cache folder used and the tokens.
OFFLINE = textwrap.dedent(
    """
    import json, os, socket, sys

    def refuse(*args, **kwargs):
        raise OSError("network disabled for this test")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.getaddrinfo = refuse
    sys.path.insert(0, sys.argv[1])
    from chatproxy import tokens

    counted = {
        "gpt-4o": tokens.encoding_for("gpt-4o").encode("2 + 2 = 4"),
        "gpt-3.5-turbo": tokens.encoding_for("gpt-3.5-turbo").encode("hello world"),
        "messages": tokens.count_messages([{"role": "user", "content": "hi"}], "gpt-4o"),
    }
    print(json.dumps({**counted, "cache": os.environ.get("TIKTOKEN_CACHE_DIR")}))
    """
)


@pytest.mark.parametrize("own_cache", [False, True], ids=["shipped-cache", "owners-cache"])
def test_counting_works_with_no_network(tmp_path: Path, own_cache: bool) -> None:
    env = {
        k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")
    }
    if own_cache:
        for path in CACHE_DIR.iterdir():
            (tmp_path / path.name).write_bytes(path.read_bytes())
        env["TIKTOKEN_CACHE_DIR"] = str(tmp_path)

    result = subprocess.run(
        [sys.executable, "-c", OFFLINE, str(ROOT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    counted = json.loads(result.stdout)
    assert counted["cache"] == str(tmp_path if own_cache else CACHE_DIR)
    assert counted["gpt-4o"] == [17, 659, 220, 17, 314, 220, 19]
    assert counted["gpt-3.5-turbo"] == [15339, 1917]
    assert counted["messages"] == 3 + 1 + 1 + 3


# ---------- Counting ----------


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("gpt-4.1", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-4.5-preview", "o200k_base"),
        ("gpt-5-mini", "o200k_base"),
        ("o1", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-4-32k", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("gpt-3.5-turbo-0125", "cl100k_base"),
        ("gpt-35-turbo", "cl100k_base"),
        ("ft:gpt-3.5-turbo-0125:acme::abc123", "cl100k_base"),
        ("llama3.2", "o200k_base"),
        ("qwen2.5:7b", "o200k_base"),
    ],
)
def test_encoding_for_model(model: str, encoding: str) -> None:
    assert encoding_name(model) == encoding
    assert encoding_for(model).name == encoding


@pytest.mark.parametrize(
    "model", ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "o4-mini", "gpt-4", "gpt-3.5-turbo"]
)
def test_encoding_agrees_with_tiktokens_own_model_table(model: str) -> None:
    assert encoding_name(model) == tiktoken.encoding_name_for_model(model)


# Published token ids: tiktoken's README ("hello world") and the OpenAI cookbook,
# "How to count tokens with tiktoken", sections 4 and 5.
@pytest.mark.parametrize(
    ("model", "text", "ids"),
    [
        ("gpt-3.5-turbo", "hello world", [15339, 1917]),
        ("gpt-4", "tiktoken is great!", [83, 1609, 5963, 374, 2294, 0]),
        ("gpt-4", "2 + 2 = 4", [17, 489, 220, 17, 284, 220, 19]),
        ("gpt-4o", "2 + 2 = 4", [17, 659, 220, 17, 314, 220, 19]),
        (
            "gpt-4",
            "お誕生日おめでとう",
            [33334, 45918, 243, 21990, 9080, 33334, 62004, 16556, 78699],
        ),
        ("gpt-4o", "お誕生日おめでとう", [8930, 9697, 243, 128225, 8930, 17693, 4344, 48669]),
    ],
)
def test_published_token_ids(model: str, text: str, ids: list[int]) -> None:
    assert encoding_for(model).encode(text) == ids
    assert count_text(text, model) == len(ids)


TEXTS = [
    "",
    "hello world",
    "谁赢了2022年世界杯?",
    "人生苦短，我用 Python。",
    "Привет, мир! Ελληνικά. עברית. العربية. हिन्दी.",
    "emoji 👩‍👩‍👧‍👦 🇨🇳 🤖🤖🤖 and a combining e\u0301",
    "def f(x):\n    return x ** 2  # comment\n\n\n",
    "1234567890" * 20,
    "<|endoftext|> is plain text here",
    "a" * 3000,
    " " * 500 + "\n" * 500 + "\t" * 100,
]


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-3.5-turbo"])
@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_count_equals_tiktokens_own(model: str, text: str) -> None:
    own = tiktoken.encoding_for_model(model)
    assert count_text(text, model) == len(own.encode(text, disallowed_special=()))


# The cookbook's example conversation ("How to count tokens with tiktoken",
# section 6): the OpenAI API counted 129 prompt tokens for gpt-3.5-turbo and
# gpt-4, 124 for gpt-4o and gpt-4o-mini.
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on "
        "opportunities for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the "
        "client deliverable.",
    },
]


@pytest.mark.parametrize(
    ("model", "published"),
    [("gpt-3.5-turbo", 129), ("gpt-4", 129), ("gpt-4o", 124), ("gpt-4o-mini", 124)],
)
def test_count_messages_matches_the_cookbook(model: str, published: int) -> None:
    assert count_messages(COOKBOOK_MESSAGES, model) == published


def test_text_parts_are_counted_like_a_string() -> None:
    parts = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "world"}],
        }
    ]
    whole = [{"role": "user", "content": "hello world"}]

    assert count_messages(parts, "gpt-4o") == count_messages(whole, "gpt-4o")


def _random_texts(count: int) -> list[str]:
    """Strings from many scripts, emoji, digits, whitespace and lone surrogates (seeded)."""
    ranges = [
        (0x20, 0x7E),
        (0x0400, 0x04FF),
        (0x0600, 0x06FF),
        (0x0900, 0x097F),
        (0x3040, 0x30FF),
        (0x4E00, 0x9FFF),
        (0xAC00, 0xD7A3),
        (0xD800, 0xDFFF),
        (0x1F300, 0x1FAFF),
        (0x20000, 0x2A6DF),
    ]
    rng = random.Random(20261121)
    texts = []
    for _ in range(count):
        pieces = []
        for _ in range(rng.randint(1, 12)):
            low, high = rng.choice(ranges)
            pieces.append("".join(chr(rng.randint(low, high)) for _ in range(rng.randint(1, 40))))
            pieces.append(rng.choice(["", " ", "\n", "  ", "\t", "0123", "..."]))
        texts.append("".join(pieces))
    return texts


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-3.5-turbo"])
def test_byte_bound_never_undercounts(model: str) -> None:
    for text in [*TEXTS, *_random_texts(300)]:
        messages = [
            {"role": "user", "content": text, "name": "ann"},
            {"role": "assistant", "content": text},
        ]
        exact = count_messages(messages, model)
        assert token_bound(messages) >= exact, text
        assert token_bound(messages, quick=True) >= token_bound(messages), text


# ---------- Fitting the context window ----------


def turn(number: int, words: int = 40) -> list[dict[str, str]]:
    """A question and its answer, numbered so their order can be checked."""
    return [
        {"role": "user", "content": f"Question {number}: " + "why " * words},
        {"role": "assistant", "content": f"Answer {number}: " + "because " * words},
    ]


LEADING = [{"role": "system", "content": "You are a helpful assistant."}]
QUESTION = {"role": "user", "content": "And what about now?"}
MODEL = "gpt-4o-mini"


def test_everything_kept_when_it_fits() -> None:
    history = [m for n in range(3) for m in turn(n)]

    assert fit_messages(LEADING, history, QUESTION, MODEL, 100, 128_000) == [
        *LEADING,
        *history,
        QUESTION,
    ]


@pytest.mark.parametrize("window", [300, 600, 1000, 1500, 2345])
def test_history_cut_oldest_first_in_pairs(window: int) -> None:
    history = [m for n in range(40) for m in turn(n)]
    max_tokens = 200

    fitted = fit_messages(LEADING, history, QUESTION, MODEL, max_tokens, window)

    kept = fitted[len(LEADING) : -1]
    assert len(kept) < len(history)
    assert fitted[: len(LEADING)] == LEADING and fitted[-1] == QUESTION
    assert count_messages(fitted, MODEL) + max_tokens <= window
    # What is kept is the newest turns, whole: one more (older) turn would not fit.
    assert kept == history[len(history) - len(kept) :]
    assert len(kept) % 2 == 0 and (not kept or kept[0]["role"] == "user")
    one_more = history[len(history) - len(kept) - 2 :]
    assert count_messages([*LEADING, *one_more, QUESTION], MODEL) + max_tokens > window


def test_a_long_answer_goes_with_its_question() -> None:
    history = [*turn(0), *turn(1, words=600), *turn(2)]
    needed = count_messages([*LEADING, *turn(2), QUESTION], MODEL) + 100

    fitted = fit_messages(LEADING, history, QUESTION, MODEL, 100, needed + 50)

    assert fitted == [*LEADING, *turn(2), QUESTION]


def test_answer_before_any_question_is_dropped_first() -> None:
    history = [{"role": "assistant", "content": "Hello! " * 100}, *turn(0)]
    window = count_messages([*LEADING, *turn(0), QUESTION], MODEL) + 100

    assert fit_messages(LEADING, history, QUESTION, MODEL, 100, window) == [
        *LEADING,
        *turn(0),
        QUESTION,
    ]


def test_exactly_full_window_fits() -> None:
    prompt = count_messages([*LEADING, QUESTION], MODEL)

    assert fit_messages(LEADING, [], QUESTION, MODEL, 50, prompt + 50) == [*LEADING, QUESTION]
    with pytest.raises(BadRequest):
        fit_messages(LEADING, [], QUESTION, MODEL, 51, prompt + 50)


def test_question_too_long_alone_is_refused() -> None:
    history = [*turn(0)]
    question = {"role": "user", "content": "why " * 9000}

    with pytest.raises(BadRequest) as raised:
        fit_messages(LEADING, history, question, "gpt-4", 1000, 8192)

    error = raised.value
    assert (error.status, error.code, error.param) == (400, "context_length_exceeded", "input")
    assert "8,192" in error.message and "gpt-4" in error.message


@pytest.mark.parametrize(
    ("model", "window"),
    [
        ("gpt-4o", 128_000),
        ("gpt-4o-mini", 128_000),
        ("gpt-4o-mini-2024-07-18", 128_000),
        ("gpt-4.1", 1_047_576),
        ("gpt-4.1-mini", 1_047_576),
        ("gpt-4.1-nano-2025-04-14", 1_047_576),
        ("gpt-3.5-turbo", 16_385),
        ("gpt-3.5-turbo-0125", 16_385),
        ("gpt-4", 8_192),
        ("gpt-4-0613", 8_192),
        ("gpt-4-turbo-2024-04-09", 128_000),
        ("o3", 200_000),
        ("o4-mini", 200_000),
        ("gpt-5", 400_000),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", 128_000),
        ("llama3.2", 4_321),
        ("gpt-4o-realtime-preview", 4_321),
    ],
)
def test_context_window(model: str, window: int) -> None:
    assert context_window(model, 4_321) == window


def test_max_tokens_without_room_stops_start_up(app_env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as raised:
        create_app(
            {
                **app_env,
                "CHATPROXY_MODELS": "gpt-4",
                "CHATPROXY_MODEL": "gpt-4",
                "CHATPROXY_MAX_TOKENS": "8192",
            }
        )

    message = str(raised.value)
    assert message.startswith("CHATPROXY_MAX_TOKENS=8192") and "gpt-4" in message
    assert "\n" not in message


# ---------- Through a real server ----------


def long_question(tokens_wanted: int) -> str:
    return "The quick brown fox jumps over the lazy dog. " * (tokens_wanted // 10 + 1)


@pytest.mark.parametrize(
    "how",
    [{}, {"format": "json"}, {"stream": "1"}],
    ids=["text", "json", "stream"],
)
def test_question_too_long_for_the_model_is_400_and_never_sent(make_server_with, simulator, how):
    server = make_server_with(
        CHATPROXY_MODELS="gpt-4",
        CHATPROXY_MODEL="gpt-4",
        CHATPROXY_MAX_TOKENS="1000",
        CHATPROXY_MAX_INPUT_CHARS="100000",
    )
    simulator.reset()

    response = httpx2.post(
        f"{server.url}/callChatGPT", data={"input": long_question(8000), **how}, timeout=10
    )

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == (
        "context_length_exceeded",
        "input",
        "invalid_request_error",
    )
    assert simulator.requests == []


def test_window_boundary_through_the_server(make_server_with, simulator):
    # gpt-3.5-turbo (16,385 tokens) is a model the simulator answers.
    server = make_server_with(
        CHATPROXY_MODELS="gpt-3.5-turbo",
        CHATPROXY_MODEL="gpt-3.5-turbo",
        CHATPROXY_MAX_TOKENS="16000",
        CHATPROXY_MAX_INPUT_CHARS="100000",
    )
    question = long_question(4000)
    prompt = count_messages([{"role": "user", "content": question}], "gpt-3.5-turbo")
    room = 16_385 - prompt
    simulator.reset()

    fits = httpx2.post(f"{server.url}/callChatGPT", json={"input": question, "max_tokens": room})
    too_many = httpx2.post(
        f"{server.url}/callChatGPT", json={"input": question, "max_tokens": room + 1}
    )

    assert fits.status_code == 200
    assert too_many.status_code == 400
    assert too_many.json()["error"]["code"] == "context_length_exceeded"
    assert len(simulator.requests) == 1
    assert simulator.requests[0]["json"]["max_tokens"] == room


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-3.5-turbo"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_gateway_count_equals_upstream_usage(make_server_with, simulator, model, stream):
    server = make_server_with(CHATPROXY_MODELS=model, CHATPROXY_MODEL=model)
    simulator.reset()
    body = {
        "input": "谁赢了2022年世界杯? Answer in one line 👍",
        "persona": "translator",
        "system": "Be brief.",
        "format": "json",
    }

    if stream:
        with httpx2.stream(
            "POST", f"{server.url}/callChatGPT", json={**body, "stream": True}
        ) as response:
            usage = read_events(response)[-1][1]["usage"]
    else:
        usage = httpx2.post(f"{server.url}/callChatGPT", json=body).json()["usage"]

    sent = simulator.requests[-1]["json"]["messages"]
    assert len(sent) >= 3
    assert count_messages(sent, model) == usage["prompt_tokens"]


# ---------- Cost ----------


@pytest.mark.parametrize(
    ("model", "usage", "expected"),
    [
        (
            "gpt-4o-mini",
            {"prompt_tokens": 18, "completion_tokens": 66},
            (18 * 0.15 + 66 * 0.60) / 1e6,
        ),
        ("gpt-4o", {"prompt_tokens": 1_000_000, "completion_tokens": 0}, 2.50),
        ("gpt-4o-2024-08-06", {"prompt_tokens": 0, "completion_tokens": 1_000_000}, 10.00),
        ("gpt-4o-2024-05-13", {"prompt_tokens": 1_000, "completion_tokens": 1_000}, (5 + 15) / 1e3),
        ("gpt-4.1", {"prompt_tokens": 1_000, "completion_tokens": 500}, 0.006),
        ("gpt-3.5-turbo-0125", {"prompt_tokens": 2_000, "completion_tokens": 1_000}, 0.0025),
        ("llama3.2", {"prompt_tokens": 10, "completion_tokens": 10}, None),
        ("o3-pro", {"prompt_tokens": 10, "completion_tokens": 10}, None),
        ("gpt-4o-mini", None, None),
        ("gpt-4o-mini", {"prompt_tokens": 10}, None),
        (None, {"prompt_tokens": 10, "completion_tokens": 10}, None),
    ],
)
def test_cost(model: str | None, usage: dict[str, Any] | None, expected: float | None) -> None:
    assert cost(model, usage) == (pytest.approx(expected) if expected is not None else None)


def test_cost_priced_as_the_model_asked_when_the_reported_one_has_no_price() -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 100}

    assert answer_cost(usage, "gpt-4o-2024-08-06", "my-azure-deployment") == cost("gpt-4o", usage)
    assert answer_cost(usage, "vendor/gpt-4o-mini", "gpt-4o-mini") == cost("gpt-4o-mini", usage)
    assert answer_cost(usage, 42, "gpt-4o-mini") == cost("gpt-4o-mini", usage)  # type: ignore[arg-type]
    assert answer_cost(usage, None, "llama3.2") is None


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_answer_carries_its_cost(api_server, stream):
    params = {"input": "hello", "format": "json"}
    if stream:
        with httpx2.stream(
            "GET", f"{api_server.url}/callChatGPT", params={**params, "stream": "1"}
        ) as response:
            answer = read_events(response)[-1][1]
    else:
        answer = httpx2.get(f"{api_server.url}/callChatGPT", params=params).json()

    usage = answer["usage"]
    expected = (usage["prompt_tokens"] * 0.15 + usage["completion_tokens"] * 0.60) / 1e6
    assert answer["cost"] == pytest.approx(expected)


def test_prices_file_overrides_and_adds(make_server_with, simulator, tmp_path):
    prices = tmp_path / "prices.json"
    prices.write_text(
        json.dumps(
            {"gpt-4o-mini": {"input": 1, "output": 2}, "my-model": {"input": 0, "output": 0}}
        )
    )
    server = make_server_with(CHATPROXY_PRICES_FILE=str(prices))

    answer = httpx2.get(
        f"{server.url}/callChatGPT", params={"input": "hello", "format": "json"}
    ).json()

    usage = answer["usage"]
    assert answer["cost"] == pytest.approx(
        (usage["prompt_tokens"] * 1 + usage["completion_tokens"] * 2) / 1e6
    )
    loaded = load_prices(prices)
    assert loaded["my-model"] == Price(0.0, 0.0)
    assert loaded["gpt-4o"] == tokens.PRICES["gpt-4o"]


@pytest.mark.parametrize(
    ("content", "fault"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"gpt-4o": 2.5}', "exactly input and output"),
        ('{"gpt-4o": {"output": 10}}', "exactly input and output"),
        ('{"gpt-4o": {"input": 2.5, "output": 10, "cached": 1.25}}', "exactly input and output"),
        ('{"gpt-4o": {"input": -1, "output": 10}}', "input must be a number"),
        ('{"gpt-4o": {"input": "2.5", "output": 10}}', "input must be a number"),
        ('{"gpt-4o": {"input": 2.5, "output": true}}', "output must be a number"),
        ('{"gpt-4o": {"input": NaN, "output": 10}}', "input must be a number"),
        (b"\xff\xfe{}", "is not UTF-8"),
        (None, "cannot be read"),
    ],
)
def test_malformed_prices_file_stops_start_up(app_env, tmp_path, content, fault):
    path = tmp_path / "prices.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)

    with pytest.raises(ConfigError) as raised:
        create_app({**app_env, "CHATPROXY_PRICES_FILE": str(path)})

    message = str(raised.value)
    assert message.startswith("CHATPROXY_PRICES_FILE=")
    assert fault in message
    assert "\n" not in message
