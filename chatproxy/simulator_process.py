"""The built-in simulator as a child process, for simulator mode (CHATPROXY_UPSTREAM=simulator).

gunicorn (gunicorn.conf.py), `flask run` and `flask chat` start it when no
OPENAI_BASE_URL names a server. It runs as `python -m chatproxy.simulator`, a
server of its own: nothing here imports it.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from chatproxy.config import ConfigError

READY_TIMEOUT = 15.0  # seconds for the simulator to say it listens
STOP_TIMEOUT = 10.0  # seconds for it to exit after SIGTERM before it is killed
SERVING_SETTINGS = ("SIMULATOR_MODELS", "SIMULATOR_STREAM_OPTIONS")


@dataclass
class SimulatorProcess:
    """A running simulator: its process and base URL (`http://127.0.0.1:PORT/v1`)."""

    process: subprocess.Popen[str]
    url: str

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after STOP_TIMEOUT s); nothing if it already ended."""
        _stop(self.process)


def start_simulator(port: int, api_key: str, options: Sequence[str] = ()) -> SimulatorProcess:
    """Start the simulator on 127.0.0.1:`port` (0: a free port) and wait until it listens.

    `options` are more of its command line's (`--models a,b`, `--no-stream-options`).

    It accepts `api_key`, keeps no requests (`--no-record`) and exits by itself
    when this process ends (`--exit-with-parent`), so a killed parent leaves no
    simulator behind. It runs in a session of its own: a Ctrl-C in the terminal
    (SIGINT to the whole foreground process group) reaches it only through its
    parent, so `flask chat` stops an answer and goes on, and a stopping gunicorn
    stops it in turn. Raises ConfigError with one line when it does not start
    within READY_TIMEOUT seconds (the port taken, say; the simulator's own
    line on stderr says why).
    """
    command = [sys.executable, "-m", "chatproxy.simulator", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--no-record", "--exit-with-parent", *options],
        env={**_own_environ(), "SIMULATOR_API_KEY": api_key},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    ready = ""
    if select.select([process.stdout], [], [], READY_TIMEOUT)[0]:
        ready = process.stdout.readline().strip()
    # Nothing more is read from the pipe: the simulator prints only this line.
    if not ready.startswith("simulator listening on "):
        _stop(process)
        where = f"on port {port} (SIMULATOR_PORT)" if port else f"within {READY_TIMEOUT:g} s"
        raise ConfigError(f"the built-in simulator did not start {where}")
    return SimulatorProcess(process, ready.rsplit(" ", 1)[-1])


def _own_environ() -> dict[str, str]:
    """This process's environment without the simulator's own settings of what it serves
    (`SIMULATOR_MODELS`, `SIMULATOR_STREAM_OPTIONS`): only `options` say that here."""
    return {k: v for k, v in os.environ.items() if k not in SERVING_SETTINGS}


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
