"""Conversation branches through a real server: a question edited and sent again, an answer
regenerated, both versions kept; switching between them; what the upstream is sent; exports.

The store is the session's database (SQLite, or PostgreSQL with TEST_DATABASE_URL).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
from flask import Flask

from chatproxy.access.keys import issue_key
from chatproxy.simulator import Simulator
from tests.conftest import LiveServer, serve
from tests.sse_events import read_events


@pytest.fixture
def http(api_server: LiveServer) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=api_server.url, timeout=20) as client:
        yield client


def sent_messages(simulator: Simulator) -> list[dict[str, Any]]:
    """The `messages` of the last request the upstream received."""
    return simulator.requests[-1]["json"]["messages"]


def shown(http: httpx2.Client, conversation_id: str) -> dict[str, Any]:
    response = http.get(f"/api/conversations/{conversation_id}")
    assert response.status_code == 200, response.text
    return response.json()


def texts(conversation: dict[str, Any]) -> list[str]:
    return [m["content"] for m in conversation["messages"]]


def ask(http: httpx2.Client, text: str, **params: Any) -> httpx2.Response:
    response = http.post("/callChatGPT", json={"input": text, "format": "json", **params})
    assert response.status_code == 200, response.text
    return response


def dialogue(http: httpx2.Client, *questions: str) -> tuple[str, list[str]]:
    """A conversation of `questions`, each answered: (its id, the answers)."""
    conversation_id = None
    answers = []
    for question in questions:
        params = {"conversation_id": conversation_id} if conversation_id else {}
        answer = ask(http, question, **params).json()
        conversation_id = answer["conversation_id"]
        answers.append(answer["answer"])
    assert conversation_id is not None
    return conversation_id, answers


def switch(http: httpx2.Client, conversation_id: str, message_id: Any) -> httpx2.Response:
    return http.post(
        f"/api/conversations/{conversation_id}/current", json={"message_id": message_id}
    )


def test_an_edited_question_branches_and_both_versions_stay(
    http: httpx2.Client, simulator: Simulator
) -> None:
    conversation_id, answers = dialogue(http, "Name a colour", "And a fruit?", "And a city?")
    before = shown(http, conversation_id)["messages"]
    fruit = before[2]

    simulator.reset()
    edited = ask(http, "And a vegetable?", conversation_id=conversation_id, edit_of=fruit["id"])
    # The upstream got the branch down to the edited question, not what came after it.
    assert sent_messages(simulator) == [
        {"role": "user", "content": "Name a colour"},
        {"role": "assistant", "content": answers[0]},
        {"role": "user", "content": "And a vegetable?"},
    ]
    now = shown(http, conversation_id)
    assert texts(now) == [
        "Name a colour",
        answers[0],
        "And a vegetable?",
        edited.json()["answer"],
    ]
    vegetable = now["messages"][2]
    assert vegetable["parent_id"] == fruit["parent_id"] == before[1]["id"]
    assert (vegetable["siblings"], vegetable["sibling_index"]) == (
        [fruit["id"], vegetable["id"]],
        1,
    )
    assert [m["siblings"] for m in now["messages"][:2]] == [[m["id"]] for m in before[:2]]
    assert now["current_message_id"] == now["messages"][-1]["id"]

    # Back to the first version: the turns after it come back with it.
    back = switch(http, conversation_id, fruit["id"])
    assert back.status_code == 200, back.text
    assert [m["id"] for m in back.json()["messages"]] == [m["id"] for m in before]
    assert back.json()["messages"][2]["sibling_index"] == 0
    assert shown(http, conversation_id)["messages"] == back.json()["messages"]

    # The next question goes on from the branch shown.
    simulator.reset()
    ask(http, "And a river?", conversation_id=conversation_id)
    assert [m["content"] for m in sent_messages(simulator)] == [
        *[m["content"] for m in before],
        "And a river?",
    ]
    # Every version is still stored, and counted in the conversation's totals.
    listed = http.get("/api/conversations").json()["data"]
    (summary,) = [c for c in listed if c["id"] == conversation_id]
    assert (summary["message_count"], summary["answer_count"]) == (10, 5)


def test_editing_the_first_question_starts_a_second_first_version(
    http: httpx2.Client, simulator: Simulator
) -> None:
    conversation_id, _ = dialogue(http, "First try", "Second question")
    first = shown(http, conversation_id)["messages"][0]
    simulator.reset()
    ask(http, "First, better", conversation_id=conversation_id, edit_of=first["id"])
    assert sent_messages(simulator) == [{"role": "user", "content": "First, better"}]
    now = shown(http, conversation_id)["messages"]
    assert [m["role"] for m in now] == ["user", "assistant"]
    assert (now[0]["parent_id"], now[0]["siblings"]) == (None, [first["id"], now[0]["id"]])


def test_regenerate_keeps_the_old_answer_as_a_sibling(
    http: httpx2.Client, simulator: Simulator
) -> None:
    conversation_id, answers = dialogue(http, "Name a colour", "Another one")
    before = shown(http, conversation_id)["messages"]

    response = http.post(f"/api/conversations/{conversation_id}/regenerate", json={"stream": True})
    events = read_events(response)
    assert events[-1].name == "done"
    new_id = events[-1].data["message_id"]
    now = shown(http, conversation_id)["messages"]
    assert [m["id"] for m in now] == [*[m["id"] for m in before[:3]], new_id]
    assert (now[3]["siblings"], now[3]["sibling_index"]) == ([before[3]["id"], new_id], 1)

    # The old answer is one switch away, and the next question follows it.
    old = switch(http, conversation_id, before[3]["id"]).json()["messages"]
    assert old[3]["content"] == answers[1] and old[3]["sibling_index"] == 0
    simulator.reset()
    ask(http, "Why?", conversation_id=conversation_id)
    assert sent_messages(simulator)[3] == {"role": "assistant", "content": answers[1]}

    # Regenerating the last answer of that branch keeps both of its versions too, and the
    # new one is shown.
    regenerated = http.post(
        f"/api/conversations/{conversation_id}/regenerate", json={"format": "json"}
    ).json()
    last = shown(http, conversation_id)["messages"][-1]
    assert last["id"] == regenerated["message_id"]
    assert len(last["siblings"]) == 2


def test_regenerate_after_choosing_an_older_answer_asks_with_that_branch(
    http: httpx2.Client, simulator: Simulator
) -> None:
    conversation_id, _ = dialogue(http, "Question one", "Question two")
    one = shown(http, conversation_id)["messages"]
    ask(http, "Question two, edited", conversation_id=conversation_id, edit_of=one[2]["id"])
    switch(http, conversation_id, one[2]["id"])
    simulator.reset()
    regenerated = http.post(
        f"/api/conversations/{conversation_id}/regenerate", json={"format": "json"}
    )
    assert regenerated.status_code == 200
    assert sent_messages(simulator)[-1] == {"role": "user", "content": "Question two"}
    now = shown(http, conversation_id)["messages"]
    assert now[2]["id"] == one[2]["id"]
    assert now[3]["id"] == regenerated.json()["message_id"]
    assert now[3]["siblings"] == [one[3]["id"], now[3]["id"]]


def test_continue_goes_on_with_the_answer_of_the_current_branch(
    http: httpx2.Client, simulator: Simulator
) -> None:
    conversation_id, _ = dialogue(http, "Tell me a story")
    cut = ask(http, "Longer", conversation_id=conversation_id, max_tokens=5).json()
    assert cut["finish_reason"] == "length"
    first = shown(http, conversation_id)["messages"]
    ask(http, "Shorter", conversation_id=conversation_id, edit_of=first[2]["id"])
    # The cut-off answer is on the other branch: nothing to continue here ...
    refused = http.post(f"/api/conversations/{conversation_id}/continue", json={})
    assert refused.json()["error"]["code"] == "nothing_to_continue"
    # ... until that branch is chosen again.
    switch(http, conversation_id, first[2]["id"])
    simulator.reset()
    went_on = http.post(f"/api/conversations/{conversation_id}/continue", json={"format": "json"})
    assert went_on.status_code == 200, went_on.text
    assert sent_messages(simulator)[2:4] == [
        {"role": "user", "content": "Longer"},
        {"role": "assistant", "content": cut["answer"]},
    ]
    assert shown(http, conversation_id)["messages"][-1]["id"] == first[3]["id"]


@pytest.mark.parametrize(
    "body",
    [{}, {"message_id": "abc"}, {"message_id": -1}, {"message_id": True}, {"message_id": 2.5}],
)
def test_switching_refuses_bad_input(http: httpx2.Client, body: dict[str, Any]) -> None:
    conversation_id, _ = dialogue(http, "Hello")
    response = http.post(f"/api/conversations/{conversation_id}/current", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "message_id"
    not_json = http.post(f"/api/conversations/{conversation_id}/current", content=b"[1]")
    assert not_json.status_code == 400


def test_switching_to_a_message_elsewhere_is_not_found(http: httpx2.Client) -> None:
    mine, _ = dialogue(http, "Mine")
    other, _ = dialogue(http, "Another conversation")
    elsewhere = shown(http, other)["messages"][0]["id"]
    before = shown(http, mine)
    for message_id in (elsewhere, 2**62):
        response = switch(http, mine, message_id)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "message_not_found"
    assert switch(http, "0" * 32, elsewhere).status_code == 404
    assert shown(http, mine) == before


@pytest.mark.parametrize(
    ("edit_of", "status", "code"),
    [
        ("abc", 400, "invalid_message_id"),
        (0, 400, "invalid_message_id"),
        ("answer", 400, "not_a_question"),
        ("elsewhere", 404, "message_not_found"),
    ],
)
def test_a_wrong_edit_of_is_refused_and_nothing_is_stored(
    http: httpx2.Client, edit_of: Any, status: int, code: str
) -> None:
    conversation_id, _ = dialogue(http, "Keep me as I am")
    other, _ = dialogue(http, "Somewhere else")
    before = shown(http, conversation_id)
    named = {
        "answer": before["messages"][1]["id"],
        "elsewhere": shown(http, other)["messages"][0]["id"],
    }.get(edit_of, edit_of)
    response = http.post(
        "/callChatGPT",
        json={"input": "Edited", "conversation_id": conversation_id, "edit_of": named},
    )
    assert response.status_code == status, response.text
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == (
        code,
        "edit_of",
    )
    assert shown(http, conversation_id) == before


def test_edit_of_without_a_conversation_is_refused(http: httpx2.Client) -> None:
    response = http.get("/callChatGPT", params={"input": "Edited", "edit_of": "5"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "edit_of"


@pytest.fixture(scope="module")
def keys_server(make_app: Callable[..., Flask]) -> Iterator[LiveServer]:
    with serve(make_app(CHATPROXY_AUTH="keys")) as server:
        yield server


def test_another_keys_conversation_cannot_be_switched_or_edited(keys_server: LiveServer) -> None:
    with keys_server.app.app_context():
        mine = issue_key(f"test-{uuid.uuid4().hex[:10]}")
        theirs = issue_key(f"test-{uuid.uuid4().hex[:10]}")
    with httpx2.Client(
        base_url=keys_server.url, headers={"Authorization": f"Bearer {mine}"}, timeout=20
    ) as http:
        conversation_id, _ = dialogue(http, "Private")
        question = shown(http, conversation_id)["messages"][0]["id"]
    with httpx2.Client(
        base_url=keys_server.url, headers={"Authorization": f"Bearer {theirs}"}, timeout=20
    ) as other:
        switched = switch(other, conversation_id, question)
        edited = other.post(
            "/callChatGPT",
            json={"input": "Mine now", "conversation_id": conversation_id, "edit_of": question},
        )
    assert switched.status_code == edited.status_code == 404
    assert switched.json()["error"]["code"] == "conversation_not_found"


def test_exports_hold_the_current_branch_and_the_whole_tree(http: httpx2.Client) -> None:
    conversation_id, answers = dialogue(http, "Name a colour", "And a fruit?")
    before = shown(http, conversation_id)["messages"]
    edited = ask(
        http, "And a vegetable?", conversation_id=conversation_id, edit_of=before[2]["id"]
    ).json()
    switch(http, conversation_id, before[2]["id"])

    markdown = http.get(f"/api/conversations/{conversation_id}/export?format=md").text
    assert "And a fruit?" in markdown and answers[1] in markdown
    assert "And a vegetable?" not in markdown

    data = http.get(f"/api/conversations/{conversation_id}/export?format=json").json()
    assert [m["content"] for m in data["messages"]] == [m["content"] for m in before]
    tree = data["metadata"]["tree"]
    assert [m["content"] for m in tree] == [
        *[m["content"] for m in before],
        "And a vegetable?",
        edited["answer"],
    ]
    assert tree[4]["parent_id"] == tree[1]["id"] and tree[5]["parent_id"] == tree[4]["id"]

    # Imported back, it has both versions, on the same branch.
    copy = http.post("/api/conversations/import", json=data)
    assert copy.status_code == 201, copy.text
    messages = copy.json()["messages"]
    assert [m["content"] for m in messages] == [m["content"] for m in before]
    assert len(messages[2]["siblings"]) == 2 and messages[2]["sibling_index"] == 0
    other = switch(http, copy.json()["id"], messages[2]["siblings"][1]).json()
    assert [m["content"] for m in other["messages"]][2:] == ["And a vegetable?", edited["answer"]]

    # An export made before branches (no tree) comes in as one branch.
    del data["metadata"]["tree"], data["metadata"]["current_message_id"]
    old = http.post("/api/conversations/import", json=data).json()
    assert [m["content"] for m in old["messages"]] == [m["content"] for m in before]
    assert all(len(m["siblings"]) == 1 for m in old["messages"])
    assert [m["parent_id"] for m in old["messages"][1:]] == [m["id"] for m in old["messages"][:-1]]


@pytest.mark.parametrize(
    "tree",
    [
        [{"id": 1, "parent_id": 2, "role": "user", "content": "x"}],
        [{"id": "a", "parent_id": None, "role": "user", "content": "x"}],
        [
            {"id": 1, "parent_id": None, "role": "user", "content": "x"},
            {"id": 1, "parent_id": None, "role": "user", "content": "y"},
        ],
        [{"id": 1, "parent_id": None, "role": "wizard", "content": "x"}],
    ],
)
def test_import_refuses_a_broken_tree(http: httpx2.Client, tree: list[dict[str, Any]]) -> None:
    body = {"messages": [{"role": "user", "content": "x"}], "metadata": {"tree": tree}}
    response = http.post("/api/conversations/import", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["message"]


def test_an_edit_the_upstream_fails_is_kept_and_retried_on_its_branch(
    http: httpx2.Client, simulator: Simulator
) -> None:
    conversation_id, answers = dialogue(http, "Keep going", "Second")
    before = shown(http, conversation_id)["messages"]
    failed = http.post(
        "/callChatGPT",
        json={
            "input": "Second, edited [[sim: fault=server_error times=1]]",
            "conversation_id": conversation_id,
            "edit_of": before[2]["id"],
        },
    )
    assert failed.status_code == 502
    # Stored before the upstream was asked, as the current branch, the old version kept.
    now = shown(http, conversation_id)["messages"]
    assert [(m["content"], m["status"]) for m in now] == [
        ("Keep going", "ok"),
        (answers[0], "ok"),
        ("Second, edited [[sim: fault=server_error times=1]]", "error"),
    ]
    assert now[2]["siblings"] == [before[2]["id"], now[2]["id"]]

    # (No simulator.reset(): it would forget the fault was already served once.)
    retried = http.post(f"/api/conversations/{conversation_id}/regenerate", json={"format": "json"})
    assert retried.status_code == 200, retried.text
    assert [m["content"] for m in sent_messages(simulator)] == [
        "Keep going",
        answers[0],
        "Second, edited [[sim: fault=server_error times=1]]",
    ]
    after = shown(http, conversation_id)["messages"]
    assert [m["status"] for m in after] == ["ok"] * 4
    assert after[3]["id"] == retried.json()["message_id"]


def test_an_edit_sent_twice_with_one_idempotency_key_is_stored_once(
    http: httpx2.Client, simulator: Simulator
) -> None:
    conversation_id, _ = dialogue(http, "One", "Two")
    two = shown(http, conversation_id)["messages"][2]
    body = {"input": "Two, edited", "conversation_id": conversation_id, "edit_of": two["id"]}
    key = {"Idempotency-Key": f"edit-{uuid.uuid4().hex}"}
    first = http.post("/callChatGPT", json={**body, "format": "json"}, headers=key)
    asked = len(simulator.requests)
    again = http.post("/callChatGPT", json={**body, "format": "json"}, headers=key)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["answer"] == first.json()["answer"]
    assert len(simulator.requests) == asked
    assert shown(http, conversation_id)["messages"][2]["siblings"] == [
        two["id"],
        shown(http, conversation_id)["messages"][2]["id"],
    ]
