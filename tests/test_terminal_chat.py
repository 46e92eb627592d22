"""`flask chat` and `flask conversations` driven through a pseudo-terminal (pexpect).

The terminal client uses the session's store and the simulator; what it stores
shows up in the page's API of a server on the same store.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator

import httpx2
import pytest

from chatproxy.simulator import Simulator
from tests.conftest import LiveServer
from tests.servers import ROOT, server_env, upstream_settings

pexpect = pytest.importorskip("pexpect", reason="pexpect is missing: make install-dev")

FLASK = [sys.executable, "-m", "flask", "--app", "app"]
TIMEOUT = 30  # seconds for one answer to appear in the terminal


@pytest.fixture
def cli_env(simulator: Simulator, database_url: str) -> dict[str, str]:
    return server_env(**upstream_settings(simulator), DATABASE_URL=database_url, NO_COLOR="1")


@pytest.fixture
def terminal(cli_env: dict[str, str]) -> Iterator[pexpect.spawn]:
    """`flask chat` in a pseudo-terminal; killed after the test if still running."""
    child = pexpect.spawn(
        FLASK[0],
        [*FLASK[1:], "chat"],
        cwd=str(ROOT),
        env=cli_env,
        encoding="utf-8",
        timeout=TIMEOUT,
        dimensions=(40, 200),
    )
    child.expect_exact("You: ")
    yield child
    if child.isalive():
        child.terminate(force=True)


def ask(child: pexpect.spawn, text: str) -> str:
    """Type `text` and Enter at the prompt; the answer, printed up to the next prompt."""
    child.sendline(text)
    child.expect_exact("AI: ")
    child.expect_exact("You: ")
    return child.before


def test_two_turns_with_context_then_结束_and_the_page_has_it(
    terminal: pexpect.spawn, api_server: LiveServer, simulator: Simulator
) -> None:
    simulator.reset()
    first = ask(terminal, "谁赢了2022年世界杯?")
    assert "阿根廷" in first
    second = ask(terminal, "在哪里举办的?")
    assert "卡塔尔" in second  # only answerable with the first turn sent along
    assert len(simulator.requests[-1]["json"]["messages"]) == 3

    terminal.sendline("结束")
    terminal.expect(r"Saved as conversation ([0-9a-f]{32})")
    conversation_id = terminal.match.group(1)
    terminal.expect(pexpect.EOF)
    terminal.close()
    assert terminal.exitstatus == 0

    listed = httpx2.get(f"{api_server.url}/api/conversations", params={"limit": 5}).json()
    assert conversation_id in [c["id"] for c in listed["data"]]
    stored = httpx2.get(f"{api_server.url}/api/conversations/{conversation_id}").json()
    assert [m["content"] for m in stored["messages"] if m["role"] == "user"] == [
        "谁赢了2022年世界杯?",
        "在哪里举办的?",
    ]
    assert "卡塔尔" in stored["messages"][3]["content"]


def test_multi_line_question_and_exit(terminal: pexpect.spawn, simulator: Simulator) -> None:
    terminal.sendline('"""')
    terminal.sendline("first line [[sim: answer=echo]]")
    terminal.sendline("second line")
    terminal.sendline('"""')
    terminal.expect_exact("AI: ")
    terminal.expect_exact("You: ")
    assert simulator.requests[-1]["json"]["messages"][-1]["content"] == (
        "first line [[sim: answer=echo]]\nsecond line"
    )
    terminal.sendline("exit")
    terminal.expect(pexpect.EOF)


def test_going_on_with_a_conversation_and_exporting_it(
    cli_env: dict[str, str], api_server: LiveServer, simulator: Simulator
) -> None:
    made = httpx2.get(f"{api_server.url}/callChatGPT", params={"input": "谁赢了2022年世界杯?"})
    conversation_id = made.headers["X-Conversation-Id"]
    child = pexpect.spawn(
        FLASK[0],
        [*FLASK[1:], "chat", "--conversation", conversation_id],
        cwd=str(ROOT),
        env=cli_env,
        encoding="utf-8",
        timeout=TIMEOUT,
    )
    try:
        child.expect_exact("You: ")
        assert "7个球" in ask(child, "梅西打进了多少个球?")
        child.sendline("quit")
        child.expect(pexpect.EOF)
    finally:
        child.terminate(force=True)

    listing = run_flask(cli_env, "conversations", "list", "--limit", "5")
    assert re.search(rf"^{conversation_id} .* 4  -  谁赢了2022年世界杯\?$", listing, re.MULTILINE)
    markdown = run_flask(cli_env, "conversations", "export", conversation_id)
    assert markdown.startswith("# 谁赢了2022年世界杯?")
    assert "7个球" in markdown
    exported = json.loads(
        run_flask(cli_env, "conversations", "export", conversation_id, "--format", "json")
    )
    assert [m["role"] for m in exported["messages"]] == ["user", "assistant"] * 2


def run_flask(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [*FLASK, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_reasoning_is_shown_marked_before_the_answer_and_stored_apart(
    terminal: pexpect.spawn, api_server: LiveServer
) -> None:
    shown = ask(terminal, "Why is the sky blue? [[sim: reasoning=think]]")
    terminal.sendline("exit")
    terminal.expect(r"Saved as conversation ([0-9a-f]{32})")
    conversation_id = terminal.match.group(1)

    text = re.sub(r"\x1b\[[0-9;]*m", "", shown).replace("\r\n", "\n")  # styles off
    assert text.startswith("[thinking] The user asks: *Why is the sky blue?*.")
    thought, _, answer = text.partition(" [/thinking]\n\n")  # a blank line between
    assert "That should do; now the answer." in thought
    assert answer.startswith("**Simulated answer**")
    assert "<think>" not in text
    stored = httpx2.get(f"{api_server.url}/api/conversations/{conversation_id}").json()
    last = stored["messages"][-1]
    assert last["content"].startswith("**Simulated answer**")
    assert last["reasoning"].endswith("That should do; now the answer.")


def test_edit_and_retry_keep_the_old_versions(
    terminal: pexpect.spawn, api_server: LiveServer, simulator: Simulator
) -> None:
    ask(terminal, "谁赢了2022年世界杯?")
    ask(terminal, "在哪里举办的?")

    # /edit shows the last question, ready to change; the new one goes beside it.
    terminal.sendline("/edit")
    terminal.expect_exact("Editing: 在哪里举办的?")
    terminal.expect_exact("Edit: ")
    terminal.send("\x15")  # Ctrl-U: the line readline filled in, cleared
    edited = ask(terminal, "梅西打进了多少个球?")
    assert "7个球" in edited
    assert [m["content"] for m in simulator.requests[-1]["json"]["messages"]][::2] == [
        "谁赢了2022年世界杯?",
        "梅西打进了多少个球?",
    ]

    # /retry answers that question again, the first answer kept.
    requests = len(simulator.requests)
    again = ask(terminal, "/retry")
    assert "7个球" in again
    assert simulator.requests[-1]["json"]["messages"][-1]["content"] == "梅西打进了多少个球?"
    assert len(simulator.requests) == requests + 1

    terminal.sendline("exit")
    terminal.expect(r"Saved as conversation ([0-9a-f]{32})")
    conversation_id = terminal.match.group(1)
    stored = httpx2.get(f"{api_server.url}/api/conversations/{conversation_id}").json()
    messages = stored["messages"]
    assert [m["content"] for m in messages][::2] == ["谁赢了2022年世界杯?", "梅西打进了多少个球?"]
    assert len(messages[2]["siblings"]) == 2  # 在哪里举办的? kept, a version away
    assert len(messages[3]["siblings"]) == 2  # the first answer to the edit, kept too
    first_version = httpx2.get(
        f"{api_server.url}/api/conversations/{conversation_id}/export", params={"format": "json"}
    ).json()["metadata"]["tree"]
    assert "在哪里举办的?" in [m["content"] for m in first_version]


def test_edit_before_any_question_says_so(terminal: pexpect.spawn) -> None:
    terminal.sendline("/retry")
    terminal.expect_exact("Nothing asked yet")
    terminal.expect_exact("You: ")
    terminal.sendline("/edit")
    terminal.expect_exact("Nothing asked yet")
    terminal.expect_exact("You: ")
    terminal.sendline("exit")
    terminal.expect(pexpect.EOF)


def test_attach_adds_an_image_and_a_file_to_the_next_question(
    terminal: pexpect.spawn, tmp_path, simulator: Simulator
) -> None:
    from tests.sample_files import png

    (tmp_path / "chart.png").write_bytes(png(30, 20))
    (tmp_path / "notes.txt").write_text("Sales doubled in March.\n")

    terminal.sendline(f"/attach {tmp_path / 'missing.png'}")
    terminal.expect_exact("Cannot attach")
    terminal.expect_exact("You: ")
    terminal.sendline(f"/attach {tmp_path / 'chart.png'}")
    terminal.expect_exact("Attached image chart.png")
    terminal.expect_exact("You: ")
    terminal.sendline(f"/attach {tmp_path / 'notes.txt'}")
    terminal.expect_exact("2 for the next question.")
    terminal.expect_exact("You: ")
    answer = ask(terminal, "What do they show?")
    later = ask(terminal, "Anything else?")

    assert "Image 1: PNG, 30×20 px" in answer
    assert "File notes.txt: 24 characters." in answer
    assert "Image 1" not in later  # sent with the one question only (its history keeps them)
    assert simulator.requests[-1]["json"]["messages"][0]["content"][2]["type"] == "image_url"
