"""The OpenAI-compatible simulator, seen through the real `openai` SDK over real sockets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest

from chatproxy.simulator import Simulator, answers, dialects

MODEL, INSTRUCT = "gpt-4o-mini", "gpt-3.5-turbo-instruct"
CHAT, LEGACY = "/chat/completions", "/completions"
ROOT = Path(__file__).resolve().parent.parent
WORLD_CUP = [
    ("谁赢了2022年世界杯?", "阿根廷队在2022年卡塔尔世界杯决赛中点球击败法国队夺冠"),
    ("在哪里举办的?", "卡塔尔"),
    ("梅西打进了多少个球?", "7个球"),
]


@pytest.fixture
def client(simulator: Simulator) -> openai.OpenAI:
    """The SDK pointed at the session simulator, without retries so faults show."""
    return openai.OpenAI(
        api_key=simulator.api_key,
        base_url=simulator.base_url,
        max_retries=0,
        timeout=10,
    )


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def answer(client: openai.OpenAI, question: str | list[dict[str, str]], **params: Any) -> str:
    """The content of a non-streamed chat answer to `question` (text or messages)."""
    messages = ask(question) if isinstance(question, str) else question
    result = client.chat.completions.create(model=MODEL, messages=messages, **params)
    return result.choices[0].message.content or ""


def chat_body(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": ask("Hi"), **fields}


def http(
    simulator: Simulator,
    method: str,
    path: str,
    body: bytes | None = None,
    key: str | None = "",
) -> tuple[int, dict[str, Any]]:
    """A raw request (for what the SDK will not send); returns (status, JSON body)."""
    request = urllib.request.Request(simulator.base_url + path, body, method=method)
    request.add_header("Content-Type", "application/json")
    if key is not None:
        request.add_header("Authorization", f"Bearer {key or simulator.api_key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def collect(stream: Any) -> tuple[list[Any], str]:
    """All chunks of a chat stream and the content they carry."""
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return chunks, text


@pytest.mark.parametrize(
    "question",
    [
        "How do I read a file in Python?",
        "用Python怎么读取文件?",
        "Show me code [[sim: answer=code]]",
        "Tell me everything [[sim: answer=long]]",
        "Go on [[sim: words=300]]",
    ],
)
def test_stream_carries_the_same_answer_as_non_stream(client: openai.OpenAI, question: str) -> None:
    whole = client.chat.completions.create(model=MODEL, messages=ask(question))
    chunks, text = collect(
        client.chat.completions.create(
            model=MODEL,
            messages=ask(question),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].delta.content is None
    assert finish[0].choices[0].finish_reason == whole.choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-sim")


def test_non_stream_completion_has_openai_shape(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=ask("Hi"))
    body = json.loads(raw.http_response.text)
    assert raw.headers["x-request-id"].startswith("req_")
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    assert body["system_fingerprint"] and isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["refusal"] is None
    assert choice["logprobs"] is None and choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] == answers.count_tokens(choice["message"]["content"], MODEL)
    assert "cached_tokens" in usage["prompt_tokens_details"]
    assert "reasoning_tokens" in usage["completion_tokens_details"]


@pytest.mark.parametrize(
    ("stream_options", "usage_key", "obfuscation"),
    [
        (None, False, True),
        ({"include_usage": True}, True, True),
        ({"include_usage": True, "include_obfuscation": False}, True, False),
    ],
)
def test_raw_stream_is_openai_sse(
    client: openai.OpenAI,
    stream_options: dict[str, bool] | None,
    usage_key: bool,
    obfuscation: bool,
) -> None:
    extra = {"stream_options": stream_options} if stream_options else {}
    with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=ask("Hi"), stream=True, **extra
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = list(response.iter_lines())
    events = [line for line in lines if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["service_tier"] for c in chunks)
    assert all(("usage" in c) is usage_key for c in chunks)
    assert all(("obfuscation" in c) is obfuscation for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"} in [
        c["choices"][0] for c in chunks if c["choices"]
    ]


@pytest.mark.parametrize("count", [1, 5, 20])
def test_chunks_directive_sets_the_number_of_content_chunks(
    client: openai.OpenAI, count: int
) -> None:
    chunks, text = collect(
        client.chat.completions.create(
            model=MODEL, messages=ask(f"Hi [[sim: chunks={count}]]"), stream=True
        )
    )
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) == count
    assert "[[sim" not in text


def test_default_stream_splits_into_short_pieces(client: openai.OpenAI) -> None:
    chunks, _ = collect(
        client.chat.completions.create(model=MODEL, messages=ask("Hi"), stream=True)
    )
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 15
    assert all(1 <= answers.count_words(piece) <= 4 for piece in pieces)


@pytest.mark.parametrize("stream", [False, True])
def test_max_tokens_cuts_the_answer_with_finish_reason_length(
    client: openai.OpenAI, stream: bool
) -> None:
    params: dict[str, Any] = {"model": MODEL, "messages": ask("Hi"), "max_tokens": 5}
    if stream:
        chunks, text = collect(
            client.chat.completions.create(
                **params, stream=True, stream_options={"include_usage": True}
            )
        )
        reason = next(
            c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
        )
        usage = chunks[-1].usage
    else:
        result = client.chat.completions.create(**params)
        text, reason, usage = (
            result.choices[0].message.content,
            result.choices[0].finish_reason,
            result.usage,
        )
    assert reason == "length"
    assert usage.completion_tokens == answers.count_tokens(text, MODEL) == 5


@pytest.mark.parametrize("limit", range(1, 12))
def test_a_cut_answer_never_ends_in_half_a_character(limit: int) -> None:
    # Tokens may hold part of a CJK character or emoji; the cut leaves it out.
    full = "谁赢了2022年世界杯? 🇦🇷 阿根廷"
    text, cut = answers.truncate_tokens(full, limit, MODEL)
    assert cut and full.startswith(text) and "\ufffd" not in text


@pytest.mark.parametrize("go_on", ["Continue.", "continue exactly where you stopped", "继续"])
def test_an_answer_cut_off_goes_on_when_asked_to_continue(
    client: openai.OpenAI, go_on: str
) -> None:
    question = "Everything [[sim: answer=long]]"
    whole = answer(client, question)
    parts: list[str] = []
    reason = "length"
    while reason == "length":  # as chatproxy's Continue asks, until the answer ends
        so_far = [{"role": "assistant", "content": "".join(parts)}] if parts else []
        messages = [*ask(question), *so_far, *(ask(go_on) if parts else [])]
        result = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=200)
        parts.append(result.choices[0].message.content)
        reason = result.choices[0].finish_reason
        assert result.usage.completion_tokens == answers.count_tokens(parts[-1], MODEL)
    assert len(parts) > 2 and "".join(parts) == whole
    # Not a request to go on: an ordinary question after the answer.
    other = [*ask(question), {"role": "assistant", "content": parts[0]}, *ask("Thanks")]
    assert answer(client, other) != whole[len(parts[0]) :]


def test_max_completion_tokens_is_honoured_too(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model=MODEL, messages=ask("Hi"), max_completion_tokens=3
    )
    assert result.choices[0].finish_reason == "length"
    assert result.usage.completion_tokens == 3


def test_n_answers_come_as_choices_and_are_billed_n_times(client: openai.OpenAI) -> None:
    one = client.chat.completions.create(model=MODEL, messages=ask("Hi"))
    three = client.chat.completions.create(model=MODEL, messages=ask("Hi"), n=3)
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert {c.message.content for c in three.choices} == {one.choices[0].message.content}
    assert three.usage.completion_tokens == 3 * one.usage.completion_tokens  # type: ignore[union-attr]
    texts: dict[int, str] = {}
    for chunk in client.chat.completions.create(model=MODEL, messages=ask("Hi"), n=2, stream=True):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    assert texts == {0: one.choices[0].message.content, 1: one.choices[0].message.content}
    with pytest.raises(openai.BadRequestError) as too_many:
        client.chat.completions.create(model=MODEL, messages=ask("Hi"), n=129)
    assert too_many.value.code == "integer_above_max_value"


def test_stop_string_cuts_before_it(client: openai.OpenAI) -> None:
    full = answer(client, "Hi")
    result = client.chat.completions.create(model=MODEL, messages=ask("Hi"), stop=["```"])
    assert result.choices[0].message.content == full[: full.index("```")]
    assert result.choices[0].finish_reason == "stop"


def test_default_answer_is_markdown_and_counts_the_messages(client: openai.OpenAI) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": "First answer"},
        {"role": "user", "content": "Second question"},
    ]
    text = answer(client, messages)
    assert text.startswith("**") and "\n- " in text and "```python\n" in text
    assert "I received 4 messages" in text


def test_cjk_question_gets_a_chinese_markdown_answer(client: openai.OpenAI) -> None:
    text = answer(client, "你好，介绍一下你自己")
    assert "模拟" in text and "```python\n" in text and "共收到 1 条消息" in text


@pytest.mark.parametrize(
    ("turn", "expected"), [(0, WORLD_CUP[0][1]), (1, WORLD_CUP[1][1]), (2, WORLD_CUP[2][1])]
)
def test_world_cup_dialogue_answers_from_the_history(
    client: openai.OpenAI, turn: int, expected: str
) -> None:
    messages: list[dict[str, str]] = []
    for question, reply in WORLD_CUP[:turn]:
        messages += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": reply},
        ]
    messages.append({"role": "user", "content": WORLD_CUP[turn][0]})
    assert expected in answer(client, messages)


@pytest.mark.parametrize(
    ("question", "expected", "unexpected"),
    [
        ("在哪里举办的?", "不知道", "卡塔尔"),
        ("梅西打进了多少个球?", "具体", "7个球"),
    ],
)
def test_world_cup_follow_ups_without_history_lack_context(
    client: openai.OpenAI, question: str, expected: str, unexpected: str
) -> None:
    text = answer(client, question)
    assert expected in text and unexpected not in text


@pytest.mark.parametrize(
    ("directive", "check"),
    [
        (
            "answer=xss",
            lambda t: (
                '<img src=x onerror="window.__xss=1">' in t
                and "<script>window.__xss=2</script>" in t
            ),
        ),
        ("answer=code", lambda t: "```python\n" in t and "```bash\n" in t),
        ("answer=math", lambda t: "$$x = \\frac{-b" in t and "costs $5 and a textbook $10" in t),
        ("answer=long", lambda t: t.count("\n\n") >= 15 and answers.count_words(t) > 800),
        ("answer=chinese", lambda t: "模拟回答" in t),
        ("words=500", lambda t: 450 <= answers.count_words(t) <= 550),
    ],
)
def test_canned_answers(client: openai.OpenAI, directive: str, check: Any) -> None:
    assert check(answer(client, f"Hi [[sim: {directive}]]"))


def test_echo_answers_the_question_without_the_directive(client: openai.OpenAI) -> None:
    question = "Repeat *this*, please [[sim: answer=echo, chunks=2]]"
    assert answer(client, question) == "Repeat *this*, please"


def test_legacy_completion_and_its_stream(client: openai.OpenAI) -> None:
    whole = client.completions.create(model=INSTRUCT, prompt="Say hi")
    assert whole.object == "text_completion" and whole.choices[0].finish_reason == "stop"
    assert whole.usage.completion_tokens == answers.count_tokens(whole.choices[0].text, INSTRUCT)
    chunks = list(client.completions.create(model=INSTRUCT, prompt="Say hi", stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_legacy_completion_per_prompt_and_max_tokens(client: openai.OpenAI) -> None:
    result = client.completions.create(model=INSTRUCT, prompt=["One", "Two"], max_tokens=4)
    assert [c.index for c in result.choices] == [0, 1]
    assert all(c.finish_reason == "length" for c in result.choices)
    assert result.usage.completion_tokens == 8


def test_models_list(client: openai.OpenAI) -> None:
    ids = {model.id for model in client.models.list()}
    required = {
        "gpt-4o-mini",
        "gpt-4o",
        "gpt-4.1-mini",
        "gpt-4.1",
        "gpt-3.5-turbo",
        "gpt-3.5-turbo-instruct",
        "o4-mini",
    }
    assert required <= ids
    assert client.models.retrieve("gpt-4o").owned_by


def test_wrong_key_is_rejected_as_openai_does(simulator: Simulator) -> None:
    wrong = "sk-test-wrong-key-abcdefghijklmnopqrstuvwxyz"
    bad = openai.OpenAI(api_key=wrong, base_url=simulator.base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.chat.completions.create(model=MODEL, messages=ask("Hi"))
    assert caught.value.code == "invalid_api_key" and caught.value.type == "invalid_request_error"
    assert "Incorrect API key provided: sk-test-*" in caught.value.message
    assert wrong not in caught.value.message and wrong[-4:] in caught.value.message


def test_missing_key_is_rejected(simulator: Simulator) -> None:
    status, body = http(simulator, "GET", "/models", key=None)
    assert status == 401 and "You didn't provide an API key" in body["error"]["message"]


@pytest.mark.parametrize(
    ("path", "body", "status", "param", "code"),
    [
        (CHAT, {"model": MODEL}, 400, "messages", "missing_required_parameter"),
        (CHAT, chat_body(messages=[]), 400, "messages", "empty_array"),
        (CHAT, {"messages": ask("Hi")}, 400, "model", "missing_required_parameter"),
        (CHAT, chat_body(model="gpt-9"), 404, None, "model_not_found"),
        (CHAT, chat_body(messages=[{"role": "robot"}]), 400, "messages[0].role", "invalid_value"),
        (CHAT, chat_body(temperature=3), 400, "temperature", "decimal_above_max_value"),
        (CHAT, chat_body(max_tokens=0), 400, "max_tokens", "integer_below_min_value"),
        (CHAT, chat_body(stream_options={"include_usage": True}), 400, "stream_options", None),
        (CHAT, chat_body(model="gpt-3.5-turbo-instruct"), 404, "model", None),
        (LEGACY, {"model": MODEL, "prompt": "Hi"}, 404, "model", None),
        (LEGACY, {"model": "gpt-3.5-turbo-instruct"}, 400, "prompt", "missing_required_parameter"),
    ],
)
def test_invalid_requests_get_openai_errors(
    simulator: Simulator,
    path: str,
    body: dict[str, Any],
    status: int,
    param: str | None,
    code: str | None,
) -> None:
    got_status, got = http(simulator, "POST", path, json.dumps(body).encode())
    assert got_status == status
    assert set(got["error"]) == {"message", "type", "param", "code"}
    assert (got["error"]["param"], got["error"]["code"]) == (param, code)


@pytest.mark.parametrize(
    "directive",
    ["fault=nope", "answer=nope", "chunks=many", "delay=slow", "colour=blue", "reasoning=nope"],
)
def test_invalid_directive_is_a_400(client: openai.OpenAI, directive: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=ask(f"Hi [[sim: {directive}]]"))
    assert "Invalid simulator directive" in caught.value.message


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_in_a_field_comes_before_the_answer_and_is_counted(
    client: openai.OpenAI, field: str
) -> None:
    question = ask(f"Why? [[sim: reasoning={field} answer=echo]]")
    whole = client.chat.completions.create(model=MODEL, messages=question)
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=question, stream=True, stream_options={"include_usage": True}
        )
    )

    thought = (whole.choices[0].message.model_extra or {})[field]
    assert (
        thought.startswith("The user asks: *Why?*.") and whole.choices[0].message.content == "Why?"
    )
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    kinds = ["r" if (d.model_extra or {}).get(field) else "c" if d.content else "" for d in deltas]
    assert "".join(kinds).strip() == "r" * kinds.count("r") + "c" * kinds.count("c")
    assert "".join((d.model_extra or {}).get(field) or "" for d in deltas) == thought
    usage = whole.usage
    assert usage is not None and usage.completion_tokens_details is not None
    reasoning_tokens = usage.completion_tokens_details.reasoning_tokens
    assert reasoning_tokens == answers.count_tokens(thought, MODEL)
    assert usage.completion_tokens == reasoning_tokens + answers.count_tokens("Why?", MODEL)
    assert chunks[-1].usage == usage


@pytest.mark.parametrize(
    ("dialect", "opening"), [("think", ["<think>\n"]), ("think_split", ["<th", "ink>\n"])]
)
def test_reasoning_in_think_tags_opens_the_content(
    client: openai.OpenAI, dialect: str, opening: list[str]
) -> None:
    question = ask(f"Why? [[sim: reasoning={dialect} answer=echo]]")
    whole = client.chat.completions.create(model=MODEL, messages=question).choices[0].message
    stream = client.chat.completions.create(model=MODEL, messages=question, stream=True)
    pieces = [
        c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content
    ]

    assert whole.content is not None
    assert whole.content.startswith("<think>\nThe user asks: *Why?*.")
    assert whole.content.endswith("now the answer.\n</think>\n\nWhy?")
    assert pieces[: len(opening)] == opening
    assert "".join(pieces) == whole.content


def test_deepseek_reasoner_always_thinks_and_takes_reasoning_effort(client: openai.OpenAI) -> None:
    message = (
        client.chat.completions.create(
            model="deepseek-reasoner", messages=ask("Hi"), reasoning_effort="low"
        )
        .choices[0]
        .message
    )
    assert (message.model_extra or {})["reasoning_content"].startswith("The user asks")
    assert message.content and "Simulated answer" in message.content


def test_reasoning_effort_is_refused_by_a_model_that_does_not_reason(
    client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=ask("Hi"), reasoning_effort="low")
    assert caught.value.code == "unsupported_parameter"
    assert caught.value.param == "reasoning_effort"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", "/chat/completions", b"{not json", 400, "could not parse the JSON body"),
        ("GET", "/nowhere", None, 404, "Invalid URL (GET /v1/nowhere)"),
    ],
)
def test_bad_json_and_unknown_paths(
    simulator: Simulator, method: str, path: str, body: bytes | None, status: int, message: str
) -> None:
    got_status, got = http(simulator, method, path, body)
    assert got_status == status and message in got["error"]["message"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("fault", "error", "status", "code"),
    [
        ("rate_limit", openai.RateLimitError, 429, "rate_limit_exceeded"),
        ("server_error", openai.InternalServerError, 500, None),
        ("unavailable", openai.InternalServerError, 503, None),
        ("context_length", openai.BadRequestError, 400, "context_length_exceeded"),
    ],
)
def test_error_faults(
    client: openai.OpenAI,
    fault: str,
    error: type[openai.APIStatusError],
    status: int,
    code: str | None,
    stream: bool,
) -> None:
    with pytest.raises(error) as caught:
        client.chat.completions.create(
            model=MODEL, messages=ask(f"Hi [[sim: fault={fault}]]"), stream=stream
        )
    assert caught.value.status_code == status and caught.value.code == code
    if fault == "rate_limit":
        assert caught.value.response.headers["retry-after"] == "1"
    if fault == "context_length":
        assert (
            caught.value.param == "messages"
            and "maximum context length is 128000" in caught.value.message
        )


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fault", sorted(dialects.CONTEXT_FAULTS))
def test_context_faults_answer_as_each_server_does(
    simulator: Simulator, fault: str, stream: bool
) -> None:
    """vLLM, Ollama, llama.cpp and LiteLLM each word a prompt too long their own way."""
    status, error = dialects.CONTEXT_FAULTS[fault]
    body = chat_body(messages=ask(f"Hi [[sim: fault={fault}]]"), stream=stream)

    got_status, got = http(simulator, "POST", CHAT, json.dumps(body).encode())

    assert (got_status, got) == (status, {"error": error})
    assert got_status >= 400 and got["error"]["message"]


def test_litellm_dialect_sends_its_usage_chunk_with_an_empty_choice(simulator: Simulator) -> None:
    def chunks(dialect: str) -> list[dict[str, Any]]:
        body = chat_body(
            messages=ask(f"Hi [[sim: dialect={dialect}]]"),
            stream=True,
            stream_options={"include_usage": True},
        )
        request = urllib.request.Request(
            simulator.base_url + CHAT,
            json.dumps(body).encode(),
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {simulator.api_key}",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            events = response.read().decode().split("\n\n")
        assert events[-2:] == ["data: [DONE]", ""]
        return [json.loads(event.removeprefix("data: ")) for event in events[:-2]]

    litellm, openai_shaped = chunks("litellm"), chunks("openai")

    assert litellm[-1]["choices"] == [{"index": 0, "delta": {}}]
    assert openai_shaped[-1]["choices"] == []
    usage = litellm[-1]["usage"]
    assert usage["completion_tokens"] == openai_shaped[-1]["usage"]["completion_tokens"] > 0
    assert litellm[-2]["choices"][0]["finish_reason"] == "stop"  # the finish comes before
    content = [
        [c["choices"][0]["delta"].get("content") for c in s[:-1]] for s in (litellm, openai_shaped)
    ]
    assert content[0] == content[1]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fault", ["reset", "hang"])
def test_connection_faults(client: openai.OpenAI, fault: str, stream: bool) -> None:
    started = time.monotonic()
    with pytest.raises(openai.APIConnectionError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=ask(f"Hi [[sim: fault={fault}]]"), stream=stream, timeout=0.5
        )
    timed_out = isinstance(caught.value, openai.APITimeoutError)
    assert timed_out is (fault == "hang")
    assert (time.monotonic() - started >= 0.5) is (fault == "hang")


def test_reset_mid_stream_breaks_the_stream_after_some_content(client: openai.OpenAI) -> None:
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(
            model=MODEL, messages=ask("Hi [[sim: fault=reset_mid_stream, chunks=10]]"), stream=True
        ):
            received.append(chunk)
    assert 1 <= len([c for c in received if c.choices and c.choices[0].delta.content]) <= 5
    assert not any(c.choices and c.choices[0].finish_reason for c in received)


def test_reset_mid_stream_without_stream_is_a_reset(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(
            model=MODEL, messages=ask("Hi [[sim: fault=reset_mid_stream]]")
        )


@pytest.mark.parametrize("stream", [False, True])
def test_malformed_chunk_is_a_json_error(client: openai.OpenAI, stream: bool) -> None:
    received = []
    with pytest.raises(json.JSONDecodeError):
        result = client.chat.completions.create(
            model=MODEL, messages=ask("Hi [[sim: fault=malformed_chunk]]"), stream=stream
        )
        received.extend(result if stream else [])
    assert len(received) == (4 if stream else 0)  # the role chunk and three content chunks


def test_latency_and_chunk_delay_pace_the_stream(client: openai.OpenAI) -> None:
    started = time.monotonic()
    arrivals = []
    for _chunk in client.chat.completions.create(
        model=MODEL, messages=ask("Hi [[sim: latency=0.2 chunks=4 delay=0.1]]"), stream=True
    ):
        arrivals.append(time.monotonic() - started)
    assert arrivals[0] >= 0.2
    assert arrivals[-1] - arrivals[0] >= 0.35


def test_requests_are_recorded_without_the_key(client: openai.OpenAI, simulator: Simulator) -> None:
    simulator.reset()
    client.chat.completions.create(
        model=MODEL, messages=ask("Hi"), extra_headers={"X-Trace": "t-1"}
    )
    [recorded] = simulator.requests
    assert (recorded["method"], recorded["path"]) == ("POST", "/v1/chat/completions")
    assert recorded["json"]["messages"] == ask("Hi")
    assert recorded["headers"]["x-trace"] == "t-1"
    assert "authorization" not in recorded["headers"]
    simulator.reset()
    assert simulator.requests == []


def test_async_client_runs_concurrent_streams(simulator: Simulator) -> None:
    async def run() -> list[str]:
        client = openai.AsyncOpenAI(
            api_key=simulator.api_key, base_url=simulator.base_url, max_retries=0
        )

        async def one(n: int) -> str:
            stream = await client.chat.completions.create(
                model=MODEL,
                messages=ask(f"Question {n} [[sim: answer=echo delay=0.01]]"),
                stream=True,
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        try:
            return await asyncio.gather(*(one(n) for n in range(20)))
        finally:
            await client.close()

    assert asyncio.run(run()) == [f"Question {n}" for n in range(20)]


def test_fault_rate_is_a_repeatable_fraction() -> None:
    simulator = Simulator(api_key="sk-rate", fault="server_error", fault_rate=0.5)
    client = openai.OpenAI(api_key="sk-rate", base_url=simulator.start_in_thread(), max_retries=0)

    def outcomes() -> list[bool]:
        results = []
        for _ in range(20):
            try:
                client.chat.completions.create(model=MODEL, messages=ask("Hi"))
                results.append(True)
            except openai.InternalServerError:
                results.append(False)
        return results

    try:
        first = outcomes()
        simulator.reset()
        assert outcomes() == first
    finally:
        simulator.stop()
    assert 4 <= first.count(False) <= 16


def test_stop_ends_hung_requests() -> None:
    simulator = Simulator(api_key="sk-stop", fault="hang")
    client = openai.OpenAI(
        api_key="sk-stop", base_url=simulator.start_in_thread(), max_retries=0, timeout=30
    )
    errors: list[Exception] = []

    def hang() -> None:
        try:
            client.chat.completions.create(model=MODEL, messages=ask("Hi"))
        except openai.APIConnectionError as exc:
            errors.append(exc)

    thread = threading.Thread(target=hang)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    simulator.stop()
    thread.join(timeout=5)
    assert time.monotonic() - started < 2
    assert len(errors) == 1


def test_command_line_serves_until_sigterm() -> None:
    env = {**os.environ, "SIMULATOR_API_KEY": "sk-from-env"}
    process = subprocess.Popen(
        [sys.executable, "-m", "chatproxy.simulator", "--port", "0", "--chunks", "3"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline().strip() if process.stdout else ""
        assert line.startswith("simulator listening on http://127.0.0.1:")
        client = openai.OpenAI(
            api_key="sk-from-env", base_url=line.rsplit(" ", 1)[1], max_retries=0
        )
        chunks, _ = collect(
            client.chat.completions.create(model=MODEL, messages=ask("Hi"), stream=True)
        )
        assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 3
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def _running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (an orphan may wait to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_exit_with_parent_stops_an_orphaned_simulator() -> None:
    # A parent that starts the simulator, reports its pid and exits without stopping it.
    parent = (
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-m', 'chatproxy.simulator', '--port', '0',"
        " '--exit-with-parent'], stdout=subprocess.PIPE, text=True)\n"
        "print(child.stdout.readline().strip(), child.pid, flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", parent], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.stdout.startswith("simulator listening on ")
    pid = int(done.stdout.split()[-1])
    deadline = time.monotonic() + 5
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _running(pid):
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the simulator outlived its parent")


@pytest.mark.parametrize("chunks", [None, 1, 3, 7, 500])
@pytest.mark.parametrize(
    "text",
    ["", "one", "Hello there, world!\n\n```python\nx = 1\n```", "谁赢了2022年世界杯? 阿根廷。"],
)
def test_split_pieces_reassemble_the_text(text: str, chunks: int | None) -> None:
    pieces = answers.split_pieces(text, chunks)
    assert "".join(pieces) == text
    assert all(pieces)
    if chunks is not None and text:
        assert len(pieces) == min(chunks, len(text))
