"""Streaming benchmark: chatproxy under gunicorn against the simulator straight, in one run.

Starts the simulator (`chatproxy.simulator`, 20 chunks 50 ms apart) and gunicorn
(`gunicorn.conf.py`, gevent) pointing at it. From this process (asyncio + aiohttp)
it first times non-streamed questions one at a time (the added latency), then, for
each concurrency C, holds exactly C streams open at all times, straight at the
simulator and then through the gateway, and prints throughput, time to first
token, errors, the peak resident memory of the gunicorn processes, CPU use per
process and the ratios to direct, next to the targets. A script that prints
figures, not a test:

    .venv/bin/python bench/stream_bench.py [--concurrency 200,1000] [--duration 20]
        [--workers 2] [--gateway-route callChatGPT|v1|responses] [--quick]

With `--gateway-route responses` both sides ask OpenAI's Responses API
(`POST /v1/responses`, its named events up to `response.completed`) instead of
chat completions: the simulator straight, and the gateway's `/v1/responses`.

See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import quote

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk-sim-local"
MODEL = "gpt-4o-mini"
MAX_TOKENS = 4096  # what the gateway sends by default (CHATPROXY_MAX_TOKENS)
CHUNKS = 20
CHUNK_DELAY = 0.05
QUESTION = "How do server-sent events work?"
INSTANT = " [[sim: chunks=1 delay=0]]"  # simulator directive: answer at once
RAMP = 1.0  # seconds over which the first C streams are started (about one answer)
SAMPLE_EVERY = 0.5  # seconds between two RSS samples
TICKS = os.sysconf("SC_CLK_TCK")
# A content piece with a non-empty string value; matches OpenAI chunks
# (`"delta":{"content":"..."}`) and chatproxy's `data: {"content":"..."}` alike.
# A quote inside a JSON string is escaped, so text cannot fake the key.
CONTENT = re.compile(rb'"content":\s*"(?!")')

# Targets of the issue (2-core machine, answers of about 1 s).
RATIO_AT_200 = 95.0  # % of direct throughput, up to 200 streams
RATIO_AT_1000 = 70.0  # % of direct throughput, above 200 streams
TTFT_P50_MS = 300.0
RSS_MB = 250.0
ADDED_P50_MS = 1.5
NOISE = 15.0  # % of a core used by other processes above which a run is flagged
# Seconds between two checks of gevent's monitor thread (GEVENT_MAX_BLOCKING_TIME). A
# greenlet running through a whole interval is reported, so a worker whose loop is
# held for twice this (the issue's "no worker silent for more than 1 s") always is.
BLOCKED_SECONDS = 0.5
BLOCKED_REPORT = "appears to be blocked"  # gevent/_monitor.py's report
# The gateway's routes the load can go to (--gateway-route), as the report names them.
ROUTES = {
    "callChatGPT": "GET /callChatGPT",
    "v1": "POST /v1/chat/completions",
    "responses": "POST /v1/responses",
}
# A piece of a Responses stream: an output text delta event.
RESPONSES_PIECE = re.compile(rb'"type":\s*"response\.output_text\.delta"')


# One target check: (where, what, figure, target, met).
Check = tuple[str, str, str, str, bool]


@dataclass
class Target:
    """Where the load goes: the simulator straight, or the gateway in front of it."""

    name: str
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None
    end_marker: bytes  # a stream is whole only if it contains this
    error_marker: bytes  # an error event in the stream
    piece: re.Pattern[bytes] = CONTENT  # one content piece of the stream


@dataclass
class StreamResult:
    """One stream: when it started and ended (perf_counter s), its TTFT, and what went wrong."""

    started: float
    ended: float
    ttft: float | None
    error: str | None


@dataclass
class LoadRun:
    """The figures of one closed-loop run at one concurrency against one target."""

    target: str
    concurrency: int
    window: float
    completed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    ttfts: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core, per process group
    rss_peak_mb: float = 0.0
    pss_peak_mb: float = 0.0
    blocked: int = 0  # gevent's reports of a worker's event loop held (BLOCKED_SECONDS)

    @property
    def rate(self) -> float:
        """Completed streams per second over the measuring window."""
        return self.completed / self.window

    @property
    def error_count(self) -> int:
        """Failed streams over the whole run, warm-up included."""
        return sum(self.errors.values())


@dataclass
class LatencyRun:
    """Non-streamed latencies in s, failures and gunicorn's CPU time in s, per target name."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    gunicorn_cpu: Counter[str] = field(default_factory=Counter)  # s, summed per target
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core, as in LoadRun


@dataclass
class Servers:
    """The running simulator and gunicorn: their processes, URLs and log files."""

    simulator: subprocess.Popen[str]
    simulator_url: str
    gunicorn: subprocess.Popen[bytes]
    gateway_url: str
    logs: Path
    gateway_headers: dict[str, str] = field(default_factory=dict)  # the access key, if any


# --- processes ---------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def has_uvloop() -> bool:
    """True when uvloop can be imported (simulator and load generator then use it)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def start_simulator(logs: Path) -> tuple[subprocess.Popen[str], str]:
    """Start the simulator (20 chunks, 50 ms apart); returns it and its base URL once it listens."""
    command = [sys.executable, "-m", "chatproxy.simulator", "--port", str(free_port())]
    command += ["--api-key", API_KEY, "--no-record", "--exit-with-parent"]
    command += ["--chunks", str(CHUNKS), "--chunk-delay", str(CHUNK_DELAY)]
    if has_uvloop():
        command.append("--uvloop")
    with (logs / "simulator.log").open("w") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,  # Ctrl-C reaches only this script, which stops it in order
        )
    assert process.stdout is not None
    line = read_line(process.stdout, timeout=20)
    if not line.startswith("simulator listening on "):
        kill(process)
        raise RuntimeError(f"the simulator did not start; see {logs / 'simulator.log'}")
    return process, line.rsplit(" ", 1)[-1].strip()


def read_line(stream: IO[str], timeout: float) -> str:
    """One line from a child's stdout, or "" after `timeout` seconds."""
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return line[0] if line else ""


def gateway_settings(args: argparse.Namespace, logs: Path) -> dict[str, str]:
    """The store, access and limit settings of the gateway under test.

    A fresh SQLite file in the log folder unless --database names another;
    CHATPROXY_AUTH from --auth; REDIS_URL from --redis.
    """
    settings = {
        "DATABASE_URL": args.database or f"sqlite:///{logs / 'bench.db'}",
        "CHATPROXY_AUTH": args.auth,
    }
    if args.redis:
        settings["REDIS_URL"] = args.redis
    return settings


def make_access_key(settings: dict[str, str], simulator_url: str) -> str:
    """Migrate the gateway's database and make an access key with limits that never bite.

    The limits are set so that every check runs (per-key requests per minute,
    tokens per minute, tokens and USD per day) without refusing anything.
    """
    sys.path.insert(0, str(ROOT))  # run as `python bench/stream_bench.py`
    from chatproxy import create_app
    from chatproxy.access.keys import issue_key
    from chatproxy.store.schema import upgrade_database

    env = {**settings, "OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": simulator_url}
    upgrade_database(env)
    with create_app(env).app_context():
        return issue_key(
            f"bench-{os.getpid()}-{time.time_ns()}",
            rpm=10**9,
            tpm=10**12,
            tokens_per_day=10**15,
            usd_per_day=10.0**9,
        )


def start_gunicorn(
    simulator_url: str, workers: int, logs: Path, settings: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    """Start gunicorn (the repo's gunicorn.conf.py) on the simulator; wait until it answers."""
    env = {
        **settings,
        "WORKERS": str(workers),
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": simulator_url,
        "CHATPROXY_UPSTREAM": "openai",
        "CHATPROXY_MAX_RETRIES": "0",
        "LOG_LEVEL": "warning",
        "ACCESS_LOG": "",
        # gevent's monitor thread reports, in the log, a greenlet that held its worker's
        # event loop through one of its checks (BLOCKED_SECONDS apart): then the worker
        # served none of its other streams.
        "GEVENT_MONITOR_THREAD_ENABLE": "true",
        "GEVENT_MAX_BLOCKING_TIME": str(BLOCKED_SECONDS),
    }
    return launch_gunicorn(env, workers, logs)


def blocked_reports(logs: Path) -> int:
    """How many times gevent's monitor reported a worker's event loop blocked, so far."""
    try:
        return (logs / "gunicorn.log").read_text(errors="replace").count(BLOCKED_REPORT)
    except FileNotFoundError:
        return 0


def launch_gunicorn(
    settings: dict[str, str], workers: int, logs: Path, attempts: int = 1
) -> tuple[subprocess.Popen[bytes], str]:
    """Start gunicorn (gunicorn.conf.py) with `settings`; wait until every worker answers.

    A free port is picked, then bound by gunicorn: should another program take
    it in between, the next of `attempts` picks another. Its log goes to
    `logs/gunicorn.log`. Raises RuntimeError when it never answers.
    """
    for _ in range(attempts):
        port = free_port()
        env = {**os.environ, **settings, "BIND": f"127.0.0.1:{port}"}
        command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
        with (logs / "gunicorn.log").open("ab") as log:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            # Each worker loads the app after the fork: ask a few times so that all have.
            booted = len(worker_pids(process.pid)) == workers
            if booted and all(answers(f"{url}/healthz") for _ in range(2 * workers)):
                return process, url
            time.sleep(0.2)
        kill(process)
    raise RuntimeError(f"gunicorn did not start; see {logs / 'gunicorn.log'}")


def worker_pids(master: int) -> list[int]:
    """gunicorn's workers: the master's children, leaving out a simulator it may have started."""
    workers = []
    for pid in process_tree(master)[1:]:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"chatproxy.simulator" not in command:
            workers.append(pid)
    return workers


def answers(url: str) -> bool:
    """True when GET `url` answers 200 within a second."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def stop(process: subprocess.Popen[str] | subprocess.Popen[bytes] | None) -> None:
    """Stop a child started here (SIGTERM, then SIGKILL to its process group after 10 s)."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        kill(process)


def kill(process: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    """SIGKILL a child started here and its process group (its own session: only its children)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=5)


@contextlib.contextmanager
def servers(args: argparse.Namespace) -> Iterator[Servers]:
    """Run the simulator and gunicorn for the duration of the block, and stop both after it."""
    logs = Path(tempfile.mkdtemp(prefix="chatproxy-bench-"))
    simulator: subprocess.Popen[str] | None = None
    gunicorn: subprocess.Popen[bytes] | None = None
    try:
        simulator, simulator_url = start_simulator(logs)
        settings = gateway_settings(args, logs)
        headers = {}
        if args.auth == "keys":
            headers["Authorization"] = f"Bearer {make_access_key(settings, simulator_url)}"
        gunicorn, gateway_url = start_gunicorn(simulator_url, args.workers, logs, settings)
        yield Servers(simulator, simulator_url, gunicorn, gateway_url, logs, headers)
    finally:
        stop(gunicorn)
        stop(simulator)


# --- /proc -------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """`pid` and its children (gunicorn's master and workers)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [pid, *map(int, children)]


def memory_mb(pid: int, path: str, key: str) -> float:
    """One `key: N kB` figure of /proc/PID/`path`, in MB; 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def rss_mb(pid: int) -> float:
    """Resident memory of one process (VmRSS in /proc/PID/status), in MB."""
    return memory_mb(pid, "status", "VmRSS:")


def pss_mb(pid: int) -> float:
    """Proportional set size of one process (shared pages split among their users), in MB."""
    return memory_mb(pid, "smaps_rollup", "Pss:")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process so far, in seconds; 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # the name may hold spaces; skip past it
    return (int(fields[11]) + int(fields[12])) / TICKS


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores summed."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # without guest time, which is counted in user already
    return (total - idle) / TICKS, total / TICKS


def cpu_snapshot(groups: dict[str, Callable[[], list[int]]]) -> dict[str, float]:
    """CPU seconds used so far by each named group of processes, per pid too, and the machine."""
    snapshot: dict[str, float] = {}
    for name, pids in groups.items():
        total = 0.0
        for pid in pids():
            seconds = cpu_seconds(pid)
            snapshot[f"{name}[{pid}]"] = seconds
            total += seconds
        snapshot[name] = total
    snapshot["machine"], snapshot["machine total"] = machine_cpu_seconds()
    return snapshot


def cpu_percent(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
    """CPU between two snapshots in % of one core, per key; `other`: the rest of the machine."""
    used = {key: 100 * (after[key] - before.get(key, 0.0)) / wall for key in after}
    total = 100 * (after["machine total"] - before["machine total"]) / wall
    used["cores"] = total / 100
    del used["machine total"]
    ours = sum(v for k, v in used.items() if "[" not in k and k not in ("machine", "cores"))
    used["other"] = max(0.0, used["machine"] - ours)
    return used


# --- load generator ----------------------------------------------------------------------


def stream_targets(found: Servers, route: str) -> tuple[Target, Target]:
    """The direct and gateway stream requests: the same question, as the gateway would send it.

    `route` is the gateway's: `callChatGPT` (chatproxy's own events) or `v1` (the
    OpenAI-compatible pass-through, sent the very body that goes direct).
    """
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": MAX_TOKENS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    direct = Target(
        name="direct",
        method="POST",
        url=f"{found.simulator_url}/chat/completions",
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        body=json.dumps(body).encode(),
        end_marker=b"data: [DONE]",
        error_marker=b'"error":',
    )
    gateway = Target(
        name="gateway",
        method="GET",
        url=f"{found.gateway_url}/callChatGPT?stream=1&input={quote(QUESTION)}",
        headers=found.gateway_headers,
        body=None,
        end_marker=b"event: done",
        error_marker=b"event: error",
    )
    if route == "v1":
        gateway = v1_target(direct, found)
    if route == "responses":
        return responses_targets(found, QUESTION, stream=True)
    return direct, gateway


def responses_targets(found: Servers, question: str, stream: bool) -> tuple[Target, Target]:
    """The same Responses API request (`POST /responses`) straight at the simulator and
    through the gateway's `/v1/responses`; a stream ends with `response.completed`."""
    body: dict[str, object] = {"model": MODEL, "input": question, "max_output_tokens": MAX_TOKENS}
    if stream:
        body["stream"] = True
    end = b"event: response.completed" if stream else b'"status":"completed"'
    error = b"event: error" if stream else b'"error":{'
    direct = Target(
        name="direct",
        method="POST",
        url=f"{found.simulator_url}/responses",
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        body=json.dumps(body).encode(),
        end_marker=end,
        error_marker=error,
        piece=RESPONSES_PIECE,
    )
    headers = {**found.gateway_headers, "Content-Type": "application/json"}
    url = f"{found.gateway_url}/v1/responses"
    gateway = Target("gateway", "POST", url, headers, direct.body, end, error, RESPONSES_PIECE)
    return direct, gateway


def v1_target(direct: Target, found: Servers) -> Target:
    """`direct`'s request sent to the gateway's `POST /v1/chat/completions` instead."""
    url = f"{found.gateway_url}/v1/chat/completions"
    headers = {**found.gateway_headers, "Content-Type": "application/json"}
    return Target("gateway", "POST", url, headers, direct.body, direct.end_marker, b'"error":')


def instant_targets(found: Servers, route: str) -> tuple[Target, Target, Target]:
    """Direct and gateway non-streamed requests (the simulator answers at once), and the floor.

    The floor is `GET /healthz`: gunicorn and Flask without the upstream call.
    `route` is the gateway's, as for `stream_targets`.
    """
    question = QUESTION + INSTANT
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": MAX_TOKENS,
    }
    direct = Target(
        name="direct",
        method="POST",
        url=f"{found.simulator_url}/chat/completions",
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        body=json.dumps(body).encode(),
        end_marker=b'"finish_reason":"stop"',
        error_marker=b'"error":',
    )
    gateway = Target(
        name="gateway",
        method="GET",
        url=f"{found.gateway_url}/callChatGPT?input={quote(question)}",
        headers=found.gateway_headers,
        body=None,
        end_marker=b"Simulated answer",
        error_marker=b'"error":',
    )
    if route == "v1":
        gateway = v1_target(direct, found)
    if route == "responses":
        direct, gateway = responses_targets(found, question, stream=False)
    floor = Target("floor", "GET", f"{found.gateway_url}/healthz", {}, None, b"ok", b'"error":')
    return direct, gateway, floor


def session(limit: int) -> aiohttp.ClientSession:
    """A keep-alive client session with `limit` connections and generous timeouts."""
    connector = aiohttp.TCPConnector(
        limit=limit,
        keepalive_timeout=4,  # under gunicorn's KEEPALIVE (5 s): never reuse a closing connection
    )
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=30)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)


def process_groups(found: Servers) -> dict[str, Callable[[], list[int]]]:
    """The processes whose CPU is counted, by name: this script, the simulator, gunicorn."""
    return {
        "load generator": lambda: [os.getpid()],
        "simulator": lambda: [found.simulator.pid],
        "gunicorn": lambda: process_tree(found.gunicorn.pid),
    }


async def stream_once(client: aiohttp.ClientSession, target: Target) -> StreamResult:
    """Ask one streamed question; OK only with all CHUNKS content pieces and the end event."""
    started = time.perf_counter()
    first: float | None = None
    error: str | None = None
    received = bytearray()
    try:
        async with client.request(
            target.method, target.url, headers=target.headers, data=target.body
        ) as response:
            if response.status != 200:
                await response.read()
                error = f"HTTP {response.status}"
            else:
                async for data in response.content.iter_any():
                    received += data
                    if first is None and target.piece.search(received):
                        first = time.perf_counter()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        error = type(exc).__name__
    if error is None:
        pieces = len(target.piece.findall(received))
        if target.error_marker in received:
            error = "error event"
        elif target.end_marker not in received:
            error = "no end event"
        elif pieces != CHUNKS:
            error = f"{pieces} pieces"
    ttft = first - started if first is not None else None
    return StreamResult(started, time.perf_counter(), ttft, error)


async def closed_loop(target: Target, concurrency: int, until: float) -> list[StreamResult]:
    """Hold `concurrency` streams open until `until` (perf_counter s); as one ends, one starts."""
    results: list[StreamResult] = []

    async def user(index: int, client: aiohttp.ClientSession) -> None:
        await asyncio.sleep(RAMP * index / concurrency)  # spread the first wave over one answer
        while time.perf_counter() < until:
            results.append(await stream_once(client, target))

    async with session(concurrency) as client:
        await asyncio.gather(*(user(i, client) for i in range(concurrency)))
    return results


async def sample_memory(pid: int, peak: list[float]) -> None:
    """Every SAMPLE_EVERY s, raise `peak` to the sums of RSS and PSS over gunicorn's processes."""
    while True:
        pids = process_tree(pid)
        peak[0] = max(peak[0], sum(rss_mb(p) for p in pids))
        peak[1] = max(peak[1], sum(pss_mb(p) for p in pids))
        await asyncio.sleep(SAMPLE_EVERY)


async def measure_cpu(
    groups: dict[str, Callable[[], list[int]]], start: float, end: float, into: dict[str, float]
) -> None:
    """Fill `into` with the CPU use of each group between `start` and `end` (perf_counter s)."""
    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    before, began = cpu_snapshot(groups), time.perf_counter()
    await asyncio.sleep(max(0.0, end - time.perf_counter()))
    after = cpu_snapshot(groups)
    into.update(cpu_percent(before, after, time.perf_counter() - began))


async def load_run(
    target: Target, concurrency: int, warmup: float, duration: float, found: Servers
) -> LoadRun:
    """One closed-loop run: warm-up, then `duration` s measured; CPU and gunicorn RSS alongside."""
    began = time.perf_counter()
    window_start, window_end = began + warmup, began + warmup + duration
    groups = process_groups(found)
    peak = [0.0, 0.0]  # RSS, PSS
    cpu: dict[str, float] = {}
    blocked_before = blocked_reports(found.logs)
    sampler = asyncio.create_task(sample_memory(found.gunicorn.pid, peak))
    meter = asyncio.create_task(measure_cpu(groups, window_start, window_end, cpu))
    try:
        results = await closed_loop(target, concurrency, window_end)
        await meter
    finally:
        sampler.cancel()
        meter.cancel()
    run = LoadRun(target.name, concurrency, duration, cpu=cpu, rss_peak_mb=peak[0])
    run.pss_peak_mb = peak[1]
    run.blocked = blocked_reports(found.logs) - blocked_before
    for result in results:
        if result.error is not None:
            run.errors[result.error] += 1
        elif window_start <= result.ended <= window_end:
            run.completed += 1
            assert result.ttft is not None
            run.ttfts.append(result.ttft)
    return run


async def request_once(client: aiohttp.ClientSession, target: Target) -> tuple[float, bool]:
    """One non-streamed question: (seconds from sending to the whole answer, whether it was OK)."""
    started = time.perf_counter()
    try:
        async with client.request(
            target.method, target.url, headers=target.headers, data=target.body
        ) as response:
            body = await response.read()
            ok = response.status == 200 and target.end_marker in body
    except (aiohttp.ClientError, TimeoutError, OSError):
        ok = False
    return time.perf_counter() - started, ok


async def added_latency(found: Servers, count: int, route: str) -> LatencyRun:
    """`count` sequential non-streamed requests to each target, interleaved, one at a time.

    Interleaving makes a change in the machine's background load touch all
    targets alike. A short warm-up is left out. Each target has its own
    keep-alive connection.
    """
    targets = instant_targets(found, route)
    run = LatencyRun()
    if count <= 0:
        return run
    warmup = min(100, count // 10)

    def gunicorn_cpu() -> float:
        return sum(cpu_seconds(pid) for pid in process_tree(found.gunicorn.pid))

    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(session(1)) for _ in targets]
        for index in range(warmup + count):
            if index == warmup:
                before, began = cpu_snapshot(process_groups(found)), time.perf_counter()
            for target, client in zip(targets, clients, strict=True):
                cpu = gunicorn_cpu()
                seconds, ok = await request_once(client, target)
                if not ok:
                    run.errors[target.name] += 1
                elif index >= warmup:
                    run.latencies.setdefault(target.name, []).append(seconds)
                    # CPU ticks are 10 ms: the sum over many requests is what counts.
                    run.gunicorn_cpu[target.name] += gunicorn_cpu() - cpu
    run.cpu = cpu_percent(before, cpu_snapshot(process_groups(found)), time.perf_counter() - began)
    return run


# --- report ------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    """The `fraction` quantile of `values` (nearest rank), or NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def verdict(ok: bool) -> str:
    """PASS or MISS."""
    return "PASS" if ok else "MISS"


def version(package: str) -> str:
    """The installed version of `package`, or "-"."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def machine_line() -> str:
    """Cores, CPU model, Python and the versions that matter here."""
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    packages = ", ".join(
        f"{name} {version(name)}" for name in ("gunicorn", "gevent", "openai", "aiohttp", "uvloop")
    )
    return (
        f"machine: {len(os.sched_getaffinity(0))} cores ({model}), {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}; {packages}"
    )


def cpu_line(run: LoadRun) -> str:
    """Where the CPU went during the measuring window of one run, and per completed stream."""
    cpu = run.cpu
    # Insertion order: gunicorn's master first, then its workers.
    workers = [f"{cpu[k]:.0f}" for k in cpu if k.startswith("gunicorn[")][1:]
    per_stream = {
        name: 10 * cpu.get(name, 0) / run.rate if run.rate else 0.0
        for name in ("load generator", "simulator", "gunicorn")
    }
    parts = [
        f"{name} {cpu.get(name, 0):.0f} ({per_stream[name]:.2f} ms/stream)"
        for name in ("load generator", "simulator", "gunicorn")
    ]
    if workers and cpu.get("gunicorn"):
        parts[-1] += f" [workers {' + '.join(workers)}]"
    parts.append(f"other processes {cpu.get('other', 0):.0f}")
    return (
        f"    {run.target:7} {', '.join(parts)}; "
        f"machine {cpu.get('machine', 0):.0f} of {100 * cpu.get('cores', 0):.0f}"
    )


def report_streams(
    pairs: list[tuple[LoadRun, LoadRun]], warmup: float, duration: float
) -> list[Check]:
    """The streaming table, the CPU breakdown and the target lines."""
    print(
        f"\nStreaming: {CHUNKS} chunks {1000 * CHUNK_DELAY:.0f} ms apart (an answer takes about "
        f"{CHUNKS * CHUNK_DELAY:.1f} s), closed loop, {warmup:g} s warm-up then {duration:g} s "
        "measured"
    )
    head = (
        f"{'streams':>7} | {'direct/s':>8} | {'gateway/s':>9} | {'ratio':>6} | "
        f"{'TTFT p50/p99 direct':>19} | {'TTFT p50/p99 gateway':>20} | "
        f"{'errors d/g':>10} | {'gunicorn RSS (PSS)':>18}"
    )
    print(head)
    print("-" * len(head))
    checks: list[Check] = []
    for direct, gateway in pairs:
        ratio = 100 * gateway.rate / direct.rate if direct.rate else 0.0
        ttft = [
            f"{1000 * percentile(run.ttfts, 0.5):.0f} / {1000 * percentile(run.ttfts, 0.99):.0f} ms"
            for run in (direct, gateway)
        ]
        errors = f"{direct.error_count} / {gateway.error_count}"
        print(
            f"{direct.concurrency:>7} | {direct.rate:>8.1f} | {gateway.rate:>9.1f} | "
            f"{ratio:>5.1f}% | {ttft[0]:>19} | {ttft[1]:>20} | {errors:>10} | "
            f"{gateway.rss_peak_mb:>8.0f} MB ({gateway.pss_peak_mb:3.0f})"
        )
        wanted = RATIO_AT_200 if direct.concurrency <= 200 else RATIO_AT_1000
        p50 = 1000 * percentile(gateway.ttfts, 0.5)
        level = f"{direct.concurrency} streams"
        checks += [
            (level, "throughput / direct", f"{ratio:.1f} %", f">= {wanted:g} %", ratio >= wanted),
            (level, "errors", str(gateway.error_count), "= 0", gateway.error_count == 0),
            (level, "TTFT p50", f"{p50:.0f} ms", f"<= {TTFT_P50_MS:g} ms", p50 <= TTFT_P50_MS),
            (
                level,
                f"event loop held >= {BLOCKED_SECONDS:g} s",
                f"{gateway.blocked} times",
                "= 0",
                gateway.blocked == 0,
            ),
            (
                level,
                "gunicorn RSS (peak)",
                f"{gateway.rss_peak_mb:.1f} MB",
                f"<= {RSS_MB:g} MB",
                gateway.rss_peak_mb <= RSS_MB,
            ),
        ]
    print(
        "\nCPU during the measuring windows, % of one core (100 = one core busy), and CPU time "
        "per completed stream:"
    )
    for direct, gateway in pairs:
        print(f"  {direct.concurrency} streams:")
        print(cpu_line(direct))
        print(cpu_line(gateway))
        other = max(direct.cpu.get("other", 0), gateway.cpu.get("other", 0))
        if other > NOISE:
            print(f"    WARNING: other processes used {other:.0f} % of a core: figures are skewed")
        for run in (direct, gateway):
            if run.errors:
                kinds = ", ".join(f"{kind} x{n}" for kind, n in run.errors.most_common(5))
                print(f"    {run.target} errors: {kinds}")
    return checks


def report_latency(run: LatencyRun, route: str) -> list[Check]:
    """The non-streamed figures and their target line (none when skipped)."""
    if not run.latencies:
        return []
    p50 = {name: 1000 * percentile(values, 0.5) for name, values in run.latencies.items()}
    p99 = {name: 1000 * percentile(values, 0.99) for name, values in run.latencies.items()}
    count = len(run.latencies.get("direct", []))
    print(
        f"\nNon-streamed, concurrency 1, {count} sequential requests each, upstream answers at "
        "once, keep-alive connections"
    )
    labels = {
        "direct": f"direct ({ROUTES['responses' if route == 'responses' else 'v1']})",
        "gateway": f"gateway ({ROUTES[route]})",
        "floor": "floor (gateway GET /healthz)",
    }
    for name, label in labels.items():
        print(
            f"  {label:36} p50 {p50.get(name, math.nan):6.2f} ms   "
            f"p99 {p99.get(name, math.nan):6.2f} ms   errors {run.errors[name]}"
        )
    added = p50.get("gateway", math.nan) - p50.get("direct", math.nan)
    print(f"  added p50 (gateway - direct)         {added:6.2f} ms")
    cpu = {
        name: 1000 * run.gunicorn_cpu[name] / max(1, len(run.latencies.get(name, [])))
        for name in ("gateway", "floor")
    }
    print(
        f"  gunicorn CPU per request: gateway {cpu['gateway']:.2f} ms, floor {cpu['floor']:.2f} ms"
    )
    other = run.cpu.get("other", 0.0)
    print(f"  other processes used {other:.0f} % of a core meanwhile")
    if other > NOISE:
        print("  WARNING: the machine was busy with other work: figures are skewed")
    ok = added <= ADDED_P50_MS and not sum(run.errors.values())
    return [("non-streamed", "added p50", f"{added:.2f} ms", f"<= {ADDED_P50_MS:g} ms", ok)]


def report_checks(checks: list[Check]) -> None:
    """The targets, one per line, with the figure and PASS or MISS."""
    print("\nTargets:")
    for where, what, figure, wanted, ok in checks:
        print(f"  {where:>14}  {what:<20} {figure:>9}  {wanted:<10} {verdict(ok)}")


# --- main --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; --quick sets a short smoke run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--concurrency", default="200,1000", help="streams held open, comma-separated")
    add("--duration", type=float, default=20.0, help="seconds measured per run")
    add("--warmup", type=float, default=3.0, help="seconds before measuring, per run")
    add("--workers", type=int, default=2, help="gunicorn worker processes")
    add("--requests", type=int, default=2000, help="non-streamed requests per target (0: skip)")
    add("--gateway-route", choices=ROUTES, default="callChatGPT", help="the gateway's route")
    add("--quick", action="store_true", help="smoke run: 50 streams, 5 s, 200 requests")
    add("--auth", choices=("keys", "open"), default="keys", help="CHATPROXY_AUTH of the gateway")
    add("--database", help="DATABASE_URL of the gateway (default: a fresh SQLite file)")
    add("--redis", help="REDIS_URL of the gateway (default: none, limits in memory)")
    args = parser.parse_args(argv)
    if args.quick:
        args.concurrency, args.duration, args.warmup, args.requests = "50", 5.0, 1.5, 200
    args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    return args


async def bench(args: argparse.Namespace, found: Servers) -> list[Check]:
    """Run the non-streamed latency, then each streaming level (direct, then gateway); print all.

    The latency goes first, on fresh servers: after 1,000 streams their heaps
    and the kernel's socket tables are no longer those of a quiet service.
    """
    if args.requests > 0:
        print(f"  non-streamed, {args.requests} requests each ...", flush=True)
    latency = await added_latency(found, args.requests, args.gateway_route)
    direct, gateway = stream_targets(found, args.gateway_route)
    pairs = []
    for level in args.levels:
        runs = []
        for target in (direct, gateway):
            print(f"  {level} streams, {target.name} ...", flush=True)
            runs.append(await load_run(target, level, args.warmup, args.duration, found))
            await asyncio.sleep(1)  # let closing connections settle between runs
        pairs.append((runs[0], runs[1]))
    checks = report_streams(pairs, args.warmup, args.duration)
    checks += report_latency(latency, args.gateway_route)
    report_checks(checks)
    return checks


def begin_run(title: str, script: str, argv: list[str] | None) -> None:
    """Let Ctrl-C and SIGTERM stop the run cleanly; print its title, machine and command."""
    # Ctrl-C and SIGTERM end the script through its `finally` blocks, so the servers are
    # stopped either way (SIGINT is restored: a background job starts with it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    shown = shlex.join(sys.orig_argv if argv is None else [script, *argv])
    print(title)
    print(machine_line())
    print(f"command: {shown}")
    print(f"load average before: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


def main(argv: list[str] | None = None) -> int:
    """Start the servers, run the benchmark, print the figures, stop the servers."""
    args = parse_args(argv)
    begin_run("chatproxy streaming benchmark", "stream_bench.py", argv)
    uvloop_used = has_uvloop()
    worker_class = os.environ.get("WORKER_CLASS") or "gevent"
    connections = os.environ.get("WORKER_CONNECTIONS") or "1000"
    print(
        f"gunicorn: {args.workers} workers, {worker_class}, {connections} connections each; "
        f"simulator and load generator on {'uvloop' if uvloop_used else 'asyncio'}"
    )
    loop_factory = None
    if uvloop_used:
        import uvloop

        loop_factory = uvloop.new_event_loop
    try:
        with servers(args) as found:
            print(f"simulator {found.simulator_url}, gateway {found.gateway_url}")
            database = args.database or "a fresh SQLite file"
            print(
                f"gateway: CHATPROXY_AUTH={args.auth}, store {database.split('@')[-1]}, "
                f"limits in {'Redis' if args.redis else 'memory'}"
            )
            print(f"gateway route: {ROUTES[args.gateway_route]}")
            print(f"server logs: {found.logs}")
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                runner.run(bench(args, found))
    except KeyboardInterrupt:
        print("interrupted: the simulator and gunicorn are stopped")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
