"""A model's reasoning through `/callChatGPT`: in each dialect, streamed and whole, stored apart
from the answer and never sent back upstream; `reasoning_effort`; exports.

The upstream is the simulator over real HTTP, answering with reasoning as
`[[sim: reasoning=DIALECT]]` asks (docs/simulator.md).
"""

from __future__ import annotations

import re

import httpx2
import openai
import pytest

from chatproxy.upstream.reasoning import LeadingThink, Reasoning, split_think
from tests.conftest import UPSTREAM_KEY
from tests.sse_events import read_events

DIALECTS = ["reasoning_content", "reasoning", "think", "think_split"]
QUESTION = "Why is the sky blue?"


def upstream_says(simulator, question: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """(reasoning, answer) the upstream itself gives `question`, asked with the openai SDK in
    DeepSeek's dialect (the text is the same in every dialect)."""
    client = openai.OpenAI(api_key=UPSTREAM_KEY, base_url=simulator.base_url, max_retries=0)
    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": f"{question} [[sim: reasoning=reasoning_content]]"}],
    )
    message = completion.choices[0].message
    return (message.model_extra or {})["reasoning_content"], message.content or ""


def conversation(server, conversation_id: str) -> dict:  # type: ignore[no-untyped-def]
    response = httpx2.get(f"{server.url}/api/conversations/{conversation_id}")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_reasoning_streams_before_the_answer(api_server, simulator, dialect):
    thought, answer = upstream_says(simulator, QUESTION)
    asked = f"{QUESTION} [[sim: reasoning={dialect}]]"

    with httpx2.stream(
        "GET", f"{api_server.url}/callChatGPT", params={"input": asked, "stream": "1"}
    ) as response:
        events = read_events(response)

    names = [event.name for event in events]
    assert names[-1] == "done"
    assert set(names[:-1]) == {"reasoning", "delta"}
    assert names.index("delta") > max(i for i, name in enumerate(names) if name == "reasoning")
    reasoning = "".join(e.data["content"] for e in events if e.name == "reasoning")
    said = "".join(e.data["content"] for e in events if e.name == "delta")
    assert reasoning.strip() == thought
    assert said == answer  # no tag, no reasoning in the answer
    done = events[-1].data
    assert done["reasoning_seconds"] >= 0
    details = done["usage"]["completion_tokens_details"]
    if dialect in ("reasoning_content", "reasoning"):  # the think servers do not count them apart
        assert 0 < details["reasoning_tokens"] < done["usage"]["completion_tokens"]

    stored = conversation(api_server, response.headers["X-Conversation-Id"])["messages"][-1]
    assert (stored["content"], stored["reasoning"]) == (answer, thought)
    assert stored["status"] == "ok"
    assert stored["reasoning_seconds"] == done["reasoning_seconds"]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_whole_answer_carries_reasoning_in_json_and_text_stays_the_answer(
    api_server, simulator, dialect
):
    thought, answer = upstream_says(simulator, QUESTION)
    asked = f"{QUESTION} [[sim: reasoning={dialect}]]"

    as_json = httpx2.get(f"{api_server.url}/callChatGPT", params={"input": asked, "format": "json"})
    as_text = httpx2.get(f"{api_server.url}/callChatGPT", params={"input": asked})

    assert as_json.status_code == as_text.status_code == 200
    assert (as_json.json()["reasoning"], as_json.json()["answer"]) == (thought, answer)
    assert as_text.text == answer
    stored = conversation(api_server, as_json.headers["X-Conversation-Id"])["messages"][-1]
    assert (stored["content"], stored["reasoning"]) == (answer, thought)


def test_an_answer_without_reasoning_has_none(api_server):
    as_json = httpx2.get(f"{api_server.url}/callChatGPT", params={"input": "hi", "format": "json"})
    with httpx2.stream(
        "GET", f"{api_server.url}/callChatGPT", params={"input": "hi", "stream": "1"}
    ) as response:
        events = read_events(response)

    assert as_json.json()["reasoning"] is None
    assert "reasoning" not in [event.name for event in events]
    assert "reasoning_seconds" not in events[-1].data
    stored = conversation(api_server, response.headers["X-Conversation-Id"])["messages"][-1]
    assert stored["reasoning"] is None


def test_an_answer_that_starts_like_a_tag_is_not_taken_for_reasoning(api_server):
    asked = "<thin air> and <think twice [[sim: answer=echo]]"

    with httpx2.stream(
        "GET", f"{api_server.url}/callChatGPT", params={"input": asked, "stream": "1"}
    ) as response:
        events = read_events(response)

    said = "".join(e.data["content"] for e in events if e.name == "delta")
    assert said == "<thin air> and <think twice"
    assert "reasoning" not in [event.name for event in events]


@pytest.mark.parametrize("dialect", ["reasoning_content", "think"])
def test_reasoning_is_never_sent_back_upstream(api_server, simulator, dialect):
    thought, answer = upstream_says(simulator, QUESTION)
    first = httpx2.get(
        f"{api_server.url}/callChatGPT",
        params={"input": f"{QUESTION} [[sim: reasoning={dialect}]]", "stream": "1"},
    )
    simulator.reset()

    second = httpx2.get(
        f"{api_server.url}/callChatGPT",
        params={"input": "And at sunset?", "conversation_id": first.headers["X-Conversation-Id"]},
    )

    assert second.status_code == 200
    history = simulator.requests[-1]["json"]["messages"]
    assert history[-2] == {"role": "assistant", "content": answer}
    for message in history:
        assert set(message) == {"role", "content"}
        assert "<think>" not in message["content"]
        assert thought not in message["content"]


def test_upstream_breaking_off_mid_reasoning_keeps_what_came(api_server, simulator):
    whole = upstream_says(simulator, "[[sim: thought=80]] Tell me")[0]
    asked = "Tell me [[sim: reasoning=reasoning_content thought=80 fault=reset_mid_stream]]"

    with httpx2.stream(
        "GET", f"{api_server.url}/callChatGPT", params={"input": asked, "stream": "1"}
    ) as response:
        events = read_events(response)

    names = [event.name for event in events]
    assert names[-1] == "error"
    assert events[-1].data["error"]["code"] == "upstream_interrupted"
    assert "delta" not in names and "reasoning" in names
    partial = "".join(e.data["content"] for e in events if e.name == "reasoning")
    assert 0 < len(partial) < len(whole) and whole.startswith(partial)
    stored = conversation(api_server, response.headers["X-Conversation-Id"])["messages"][-1]
    assert stored["status"] == "interrupted"
    assert (stored["content"], stored["reasoning"]) == ("", partial.strip())

    simulator.reset()
    httpx2.get(
        f"{api_server.url}/callChatGPT",
        params={"input": "Again?", "conversation_id": response.headers["X-Conversation-Id"]},
    )
    # A turn with no answer yet is no history: the question alone was never answered.
    assert simulator.requests[-1]["json"]["messages"] == [{"role": "user", "content": "Again?"}]


def test_reasoning_effort_goes_to_a_model_that_takes_it(make_server_with, simulator):
    server = make_server_with(CHATPROXY_MODELS="gpt-4o-mini,o4-mini,deepseek-reasoner")
    simulator.reset()

    for model in ("o4-mini", "deepseek-reasoner"):
        response = httpx2.post(
            f"{server.url}/callChatGPT",
            json={"input": "hi", "model": model, "reasoning_effort": "high", "format": "json"},
        )
        assert response.status_code == 200, response.text
        assert simulator.requests[-1]["json"]["reasoning_effort"] == "high"


@pytest.mark.parametrize(
    ("values", "code"),
    [
        ({"model": "gpt-4o-mini", "reasoning_effort": "low"}, "unsupported_parameter"),
        ({"model": "o4-mini", "reasoning_effort": "extreme"}, "invalid_value"),
        ({"model": "o4-mini", "reasoning_effort": 3}, "invalid_value"),
    ],
    ids=["model-without-reasoning", "unknown-effort", "not-a-string"],
)
def test_reasoning_effort_refused_before_the_upstream(make_server_with, simulator, values, code):
    server = make_server_with(CHATPROXY_MODELS="gpt-4o-mini,o4-mini")
    simulator.reset()

    response = httpx2.post(f"{server.url}/callChatGPT", json={"input": "hi", **values})

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        "reasoning_effort",
        code,
    )
    assert simulator.requests == []


def test_reasoning_models_setting_names_the_models_that_take_it(make_server_with, simulator):
    server = make_server_with(
        CHATPROXY_MODELS="gpt-4o-mini,llama3.1:8b", CHATPROXY_REASONING_MODELS="llama3*"
    )
    simulator.reset()

    taken = httpx2.get(
        f"{server.url}/callChatGPT",
        params={"input": "hi", "model": "llama3.1:8b", "reasoning_effort": "minimal"},
    )
    refused = httpx2.get(
        f"{server.url}/callChatGPT",
        params={"input": "hi", "model": "gpt-4o-mini", "reasoning_effort": "minimal"},
    )

    # The simulator's llama takes no effort either, as OpenAI says: the owner's setting is believed.
    assert taken.status_code == 400
    assert simulator.requests[-1]["json"]["reasoning_effort"] == "minimal"
    assert refused.status_code == 400
    assert "CHATPROXY_REASONING_MODELS" in refused.json()["error"]["message"]
    assert len(simulator.requests) == 1


def test_a_retry_with_the_same_idempotency_key_gets_the_reasoning_too(api_server, simulator):
    thought, answer = upstream_says(simulator, QUESTION)
    asked = {"input": f"{QUESTION} [[sim: reasoning=reasoning]]"}
    key = {"Idempotency-Key": "reasoning-replay-1"}
    first = httpx2.get(
        f"{api_server.url}/callChatGPT", params={**asked, "stream": "1"}, headers=key
    )
    simulator.reset()

    as_json = httpx2.get(
        f"{api_server.url}/callChatGPT", params={**asked, "format": "json"}, headers=key
    )
    with httpx2.stream(
        "GET", f"{api_server.url}/callChatGPT", params={**asked, "stream": "1"}, headers=key
    ) as response:
        events = read_events(response)

    assert first.status_code == 200 and simulator.requests == []
    assert as_json.headers["Idempotent-Replayed"] == "true"
    assert (as_json.json()["reasoning"], as_json.json()["answer"]) == (thought, answer)
    assert [(e.name, e.data.get("content")) for e in events[:-1]] == [
        ("reasoning", thought),
        ("delta", answer),
    ]
    assert events[-1].name == "done" and "reasoning" not in events[-1].data


def test_exports_keep_reasoning_and_import_reads_it_back(api_server, simulator):
    thought, answer = upstream_says(simulator, QUESTION)
    asked = httpx2.get(
        f"{api_server.url}/callChatGPT",
        params={"input": f"{QUESTION} [[sim: reasoning=think]]", "stream": "1"},
    )
    conversation_id = asked.headers["X-Conversation-Id"]
    export = f"{api_server.url}/api/conversations/{conversation_id}/export"

    markdown = httpx2.get(export, params={"format": "md"}).text
    exported = httpx2.get(export, params={"format": "json"}).json()
    imported = httpx2.post(f"{api_server.url}/api/conversations/import", json=exported)

    section = f"<details>\n<summary>Reasoning</summary>\n\n{thought}\n\n</details>\n\n{answer}"
    assert section in markdown
    assert exported["messages"][-1] == {"role": "assistant", "content": answer}
    assert exported["metadata"]["messages"][-1]["reasoning_content"] == thought
    assert imported.status_code == 201, imported.text
    back = conversation(api_server, imported.json()["id"])["messages"][-1]
    assert (back["content"], back["reasoning"]) == (answer, thought)


def test_import_reads_reasoning_content_on_a_message(api_server):
    body = {
        "messages": [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4", "reasoning_content": "Two and two make four."},
        ]
    }

    imported = httpx2.post(f"{api_server.url}/api/conversations/import", json=body)

    assert imported.status_code == 201, imported.text
    back = conversation(api_server, imported.json()["id"])["messages"][-1]
    assert (back["content"], back["reasoning"]) == ("4", "Two and two make four.")


# ---------- /v1 passes reasoning on untouched ----------


def without_ids(body: bytes) -> bytes:
    """`body` with the ids and timestamps, which differ between any two requests, blanked."""
    body = re.sub(rb'"id":"chatcmpl-[^"]*"', b'"id":""', body)
    return re.sub(rb'"created":\d+', b'"created":0', body)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("dialect", DIALECTS)
def test_v1_passes_reasoning_on_as_the_upstream_sent_it(api_server, simulator, dialect, stream):
    asked = [{"role": "user", "content": f"{QUESTION} [[sim: reasoning={dialect}]]"}]
    body = {"model": "gpt-4o-mini", "messages": asked, "stream": stream}
    auth = {"Authorization": f"Bearer {UPSTREAM_KEY}"}

    ours = httpx2.post(f"{api_server.url}/v1/chat/completions", json=body, timeout=30)
    # A stream goes upstream asking for its usage; the chunk with the usage alone is not passed on.
    sent = {**body, "stream_options": {"include_usage": True}} if stream else body
    theirs = httpx2.post(
        f"{simulator.base_url}/chat/completions", json=sent, headers=auth, timeout=30
    )
    expected = theirs.content
    if stream:
        events = expected.split(b"\n\n")
        expected = b"\n\n".join(events[:-3] + events[-2:])

    assert ours.status_code == 200
    assert without_ids(ours.content) == without_ids(expected)
    marker = b"<think>" if dialect.startswith("think") else f'"{dialect}":"'.encode()
    if dialect == "think_split" and stream:
        marker = b'"<th"'  # the tag cut across chunks, as it came
    assert marker in ours.content


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_v1_reasoning_reaches_the_sdk(api_server, simulator, field):
    thought, answer = upstream_says(simulator, QUESTION)
    client = openai.OpenAI(base_url=f"{api_server.url}/v1", api_key="unused", max_retries=0)
    asked = [{"role": "user", "content": f"{QUESTION} [[sim: reasoning={field}]]"}]

    whole = client.chat.completions.create(model="gpt-4o-mini", messages=asked)
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=asked, stream=True))

    message = whole.choices[0].message
    assert ((message.model_extra or {})[field], message.content) == (thought, answer)
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    assert "".join((d.model_extra or {}).get(field) or "" for d in deltas) == thought
    assert "".join(d.content or "" for d in deltas) == answer


# ---------- The leading <think> block, piece by piece (pure logic) ----------

THINKING = "<think>\nFirst 2 < 3, and </thin ice> is no tag.\n</think>\n\nThe answer."


def told_apart(pieces: list[str]) -> tuple[str, str]:
    """(reasoning, answer) as LeadingThink tells them apart from `pieces` of content."""
    think, thought, answer = LeadingThink(), [], []
    for piece in pieces:
        for part in think.feed(piece) if not think.done else [piece]:
            (thought if isinstance(part, Reasoning) else answer).append(part)
    for part in think.end():
        (thought if isinstance(part, Reasoning) else answer).append(part)
    return "".join(thought), "".join(answer)


@pytest.mark.parametrize("cut", range(1, len(THINKING)))
def test_a_think_block_cut_anywhere_is_told_apart(cut):
    assert told_apart([THINKING[:cut], THINKING[cut:]]) == (
        "First 2 < 3, and </thin ice> is no tag.",
        "The answer.",
    )


def test_a_think_block_one_character_at_a_time():
    assert told_apart(list(THINKING)) == ("First 2 < 3, and </thin ice> is no tag.", "The answer.")


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (["Plain ", "answer"], ("", "Plain answer")),
        (["\n\n", "Hello"], ("", "\n\nHello")),
        (["<", "div>hi</div>"], ("", "<div>hi</div>")),
        (["<think>", "cut off by max_tokens"], ("cut off by max_tokens", "")),
        (["<think>never closed </th"], ("never closed </th", "")),
        (["<think>a</think>"], ("a", "")),
        (["<th"], ("", "<th")),
        (
            ["Answer first <think>not reasoning</think>"],
            ("", "Answer first <think>not reasoning</think>"),
        ),
    ],
    ids=[
        "none",
        "whitespace-first",
        "html-first",
        "unclosed",
        "unclosed-partial-tag",
        "reasoning-only",
        "a-lone-tag-start",
        "think-later-is-content",
    ],
)
def test_only_a_leading_think_block_is_reasoning(pieces, expected):
    assert told_apart(pieces) == expected


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (THINKING, ("First 2 < 3, and </thin ice> is no tag.", "The answer.")),
        ("  <think>unclosed", ("unclosed", "")),
        ("No block <think>x</think>", (None, "No block <think>x</think>")),
        ("<think>\n\n</think>\n\nOnly answer", (None, "Only answer")),
    ],
)
def test_a_whole_answer_think_block(content, expected):
    assert split_think(content) == expected
