"""`make test`: the suite on SQLite and on PostgreSQL, both runs whatever the first gives.

Run with a stand-in for pytest (through the Makefile's BIN) that records each
run and exits with the status a test asks for, so the Makefile's own logic is
what is tested, in seconds.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need
from tests.servers import ROOT, server_env

FAKE_PYTEST = """#!/bin/sh
echo "${TEST_DATABASE_URL:-sqlite}" >> "$RUNS"
if [ -n "$TEST_DATABASE_URL" ]; then exit "$POSTGRESQL_STATUS"; fi
exit "$SQLITE_STATUS"
"""


@pytest.mark.parametrize(
    ("sqlite", "postgresql"),
    [(0, 0), (1, 0), (0, 1), (1, 1)],
    ids=["both-pass", "sqlite-fails", "postgresql-fails", "both-fail"],
)
def test_make_test_runs_both_stores_reports_each_and_fails_if_either_failed(
    tmp_path: Path, sqlite: int, postgresql: int
) -> None:
    if shutil.which("make") is None:
        need("make", "apt-get install make")
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "pytest").write_text(FAKE_PYTEST)
    (tools / "pytest").chmod(0o755)
    runs = tmp_path / "runs"
    env = server_env(RUNS=str(runs), SQLITE_STATUS=str(sqlite), POSTGRESQL_STATUS=str(postgresql))

    # The tools are installed as far as make knows (-o): it runs only the test recipe.
    command = ["make", "--no-print-directory", "test", f"BIN={tools}"]
    command += ["TEST_POSTGRESQL=postgresql://pg/t", "-o", f"{tools}/.installed"]
    done = subprocess.run(
        [*command, "-o", f"{tools}/.installed-dev"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert runs.read_text().split() == ["sqlite", "postgresql://pg/t"]
    lines = done.stdout.splitlines()[-2:]
    assert lines[0].split() == ["make", "test", "on", "SQLite:", *verdict(sqlite)]
    assert lines[1].split() == ["make", "test", "on", "PostgreSQL:", *verdict(postgresql)]
    assert (done.returncode == 0) == (sqlite == postgresql == 0), done.stderr


def verdict(status: int) -> list[str]:
    return ["passed"] if status == 0 else ["FAILED", "(pytest", "status", f"{status})"]
