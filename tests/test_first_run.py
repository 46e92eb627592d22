"""The `flask` commands the README shows, run as a new user runs them from a fresh clone.

Each runs in a subprocess with a clean environment (no OPENAI_API_KEY, no
chatproxy setting but those a test names) on a database no server migrated.
Commands that never ask the upstream need no key; `flask chat` and
`flask run` in simulator mode start the simulator themselves, as gunicorn
does, and without any upstream say in one line what to set; a wrong setting
stops any of them with one line naming it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import httpx2
import pytest

from chatproxy.config import database_url as database_url_setting
from tests.conftest import ACCESS_KEY, TEST_DATABASE_URL, _fresh_postgresql_schema
from tests.servers import ROOT, WORLD_CUP, free_port, server_env

FLASK = [sys.executable, "-m", "flask", "--app", "app"]
COMMAND_TIMEOUT = 60  # seconds for one command, the simulator's start included
START_TIMEOUT = 60.0  # seconds for `flask run` to answer /healthz
STOP_TIMEOUT = 30.0  # seconds for a process and its simulator to be gone
NO_KEY = "OPENAI_API_KEY is not set"


@pytest.fixture
def fresh_database_url(tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or with TEST_DATABASE_URL a new PostgreSQL schema."""
    if not TEST_DATABASE_URL:
        yield f"sqlite:///{tmp_path / 'chatproxy.db'}"
        return
    import sqlalchemy

    schema = f"first_run_{uuid.uuid4().hex[:12]}"
    yield _fresh_postgresql_schema(TEST_DATABASE_URL, schema)
    engine = sqlalchemy.create_engine(database_url_setting(TEST_DATABASE_URL))
    with engine.begin() as connection:
        connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    engine.dispose()


@pytest.fixture
def clean_env(fresh_database_url: str) -> dict[str, str]:
    """No OPENAI_API_KEY, no chatproxy setting; a fresh database; a mark on every process."""
    return server_env(DATABASE_URL=fresh_database_url, NO_COLOR="1", TEST_RUN=uuid.uuid4().hex)


def flask(
    args: list[str], env: dict[str, str], stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run `flask --app app ARGS` in the project folder, as the README shows it."""
    return subprocess.run(
        [*FLASK, *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )


def marked_processes(env: dict[str, str]) -> list[int]:
    """The processes (a simulator, say) started with this test's TEST_RUN mark, still there."""
    mark = f"TEST_RUN={env['TEST_RUN']}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError):
                if mark in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
    return found


def wait_until_gone(env: dict[str, str]) -> None:
    """Wait until no process of this test is left; fail naming them after STOP_TIMEOUT s."""
    deadline = time.monotonic() + STOP_TIMEOUT
    while left := marked_processes(env):
        if time.monotonic() > deadline:
            for pid in left:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            pytest.fail(f"processes {left} outlived the command")
        time.sleep(0.05)


def one_line(stderr: str) -> str:
    """The only non-empty line of `stderr`; fails when there are several, or a traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["keys", "create", "--name", "me"], ACCESS_KEY.pattern, id="keys-create"),
        pytest.param(["keys", "list"], "name\tprefix", id="keys-list"),
        pytest.param(["usage"], "day\tkey\tmodel", id="usage"),
        pytest.param(["conversations", "list"], "", id="conversations-list"),
    ],
)
def test_owner_commands_need_no_upstream_key_and_no_server_run_before(
    clean_env: dict[str, str], args: list[str], expected: str
) -> None:
    done = flask(args, clean_env)

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert NO_KEY not in done.stderr
    assert re.search(expected, done.stdout), done.stdout


def test_a_key_made_on_a_fresh_clone_is_listed(clean_env: dict[str, str]) -> None:
    made = flask(["keys", "create", "--name", "me"], clean_env)
    listed = flask(["keys", "list"], clean_env)

    assert made.returncode == 0, made.stderr
    assert listed.returncode == 0, listed.stderr
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()[1:]] == ["me"]


@pytest.mark.parametrize("command", [["chat"], ["run", "--port", "0"]], ids=["chat", "run"])
def test_without_an_upstream_chat_and_run_say_in_one_line_what_to_set(
    clean_env: dict[str, str], command: list[str]
) -> None:
    done = flask(command, clean_env)

    assert done.returncode != 0
    line = one_line(done.stderr)
    assert NO_KEY in line
    assert "CHATPROXY_UPSTREAM=simulator" in line


def test_chat_in_simulator_mode_starts_its_own_simulator_and_stops_it(
    clean_env: dict[str, str],
) -> None:
    env = {**clean_env, "CHATPROXY_UPSTREAM": "simulator"}
    done = flask(["chat"], env, stdin=f"{WORLD_CUP}\n结束\n")

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "built-in simulator" in done.stdout
    assert "阿根廷" in done.stdout  # the simulator's answer to the question
    assert "Saved as conversation" in done.stdout
    wait_until_gone(env)


def test_flask_run_in_simulator_mode_serves_the_demo_and_ctrl_c_ends_it(
    clean_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    env = {**clean_env, "CHATPROXY_UPSTREAM": "simulator", "CHATPROXY_AUTH": "open"}
    output = tmp_path / "flask-run.out"
    with open(output, "wb") as out:
        process = subprocess.Popen(
            [*FLASK, "run", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_health(url, process, output)
        with httpx2.Client(base_url=url, timeout=30) as client:
            page = client.get("/")
            answer = client.get("/callChatGPT", params={"input": WORLD_CUP})
        # A terminal's Ctrl-C: SIGINT to the whole foreground process group.
        os.killpg(process.pid, signal.SIGINT)
        status = process.wait(timeout=STOP_TIMEOUT)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    assert page.status_code == 200
    assert "banner-demo" in page.text
    assert answer.status_code == 200
    assert "阿根廷" in answer.text
    assert status == 0, output.read_text()
    assert "Traceback" not in output.read_text()
    wait_until_gone(env)


def wait_for_health(url: str, process: subprocess.Popen[bytes], output: Path) -> None:
    """Poll `/healthz` until it answers 200; fail with the output if the server ends first."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"flask run exited with {process.returncode}:\n{output.read_text()}")
        with suppress(httpx2.TransportError):
            if httpx2.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    pytest.fail(f"flask run did not answer within {START_TIMEOUT:g} s:\n{output.read_text()}")


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["run", "--port", "0"], id="run"),
        pytest.param(["chat"], id="chat"),
        pytest.param(["keys", "list"], id="keys-list"),
        pytest.param(["keys", "create", "--name", "me"], id="keys-create"),
        pytest.param(["usage"], id="usage"),
        pytest.param(["conversations", "list"], id="conversations-list"),
        pytest.param(["db", "upgrade"], id="db-upgrade"),
    ],
)
def test_a_wrong_setting_stops_every_command_with_one_line_naming_it(
    clean_env: dict[str, str], command: list[str]
) -> None:
    env = {**clean_env, "CHATPROXY_UPSTREAM": "simulator", "CHATPROXY_MAX_TOKENS": "abc"}
    done = flask(command, env)

    assert done.returncode != 0
    assert one_line(done.stderr) == "chatproxy: CHATPROXY_MAX_TOKENS must be an integer, got 'abc'"


@pytest.mark.parametrize("command", [["run", "--port", "0"], ["keys", "list"]], ids=["run", "keys"])
def test_a_wrong_persona_folder_stops_a_command_with_one_line_naming_it(
    clean_env: dict[str, str], command: list[str]
) -> None:
    env = {**clean_env, "CHATPROXY_UPSTREAM": "simulator", "CHATPROXY_PERSONAS_DIR": "nowhere"}
    done = flask(command, env)

    assert done.returncode != 0
    assert "CHATPROXY_PERSONAS_DIR" in one_line(done.stderr)
