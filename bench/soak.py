"""Soak benchmark: chatproxy under gunicorn with a mixed load for minutes, memory watched.

Starts gunicorn (`gunicorn.conf.py`, gevent) as in production, in front of one
simulator (or two with `--upstreams 2`, the first failing 5 % of its answers, so
that failover has work), makes an access key, then drives from this process
(asyncio) a mixed load until the deadline: page questions (`POST /callChatGPT`,
JSON in, SSE out, going on in a conversation for a few turns), `GET
/callChatGPT` questions (text, some streamed), `/v1/chat/completions` through
the official `openai` SDK (streamed and not), and about 5 % of questions with an
injected upstream fault, each expected to end in a given status and error code.
It prints the requests by kind and outcome with their latencies, the resident
memory and CPU of each gunicorn worker every minute, the unexpected outcomes,
the gunicorn log's errors, whether the store holds what the clients were
answered, and the targets; it exits 1 when one is missed. With --outages (and
PostgreSQL and Redis named) the gateway reaches both through TCP proxies
(`outage_proxy.py`) that cut the database, then Redis, for a while during the
load: what a client may see then is expected too, and afterwards the store
must hold every answer a client received, those kept in the gateway's spool
included. A script that prints figures, not a test:

    .venv/bin/python bench/soak.py [--duration 600] [--workers 2] [--concurrency 40]
        [--database URL] [--redis URL] [--auth keys|open] [--upstreams 1|2]
        [--fault-share 0.05] [--hang-timeout S] [--retries N]
        [--outages [--database-outage-at S] [--redis-outage-at S] [--outage-seconds S]]

See bench/README.md ("Soak") for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2
import openai
from outage_proxy import OutageProxy
from stream_bench import (
    API_KEY,
    MODEL,
    NOISE,
    ROOT,
    begin_run,
    cpu_seconds,
    gateway_settings,
    has_uvloop,
    kill,
    launch_gunicorn,
    machine_cpu_seconds,
    make_access_key,
    percentile,
    process_tree,
    read_line,
    rss_mb,
    stop,
    worker_pids,
)

CHUNKS = 4  # content pieces per streamed answer (the simulator's default here)
CHUNK_DELAY = 0.04  # seconds before each piece: an answer takes about 0.16 s
MID_STREAM_CHUNKS = 6  # pieces asked for when a fault breaks the stream half-way
WARMUP = 30.0  # seconds of load before the first memory figure (imports, pools settle)
SAMPLE_EVERY = 60.0  # seconds between memory figures
MEMORY_LIMIT = 10.0  # % change of a worker's RSS, first figure to last
JUDGED_FROM = 300.0  # the memory target is judged only for runs at least this long
SHOWN_ERRORS = 5  # unexpected errors shown in full on stderr
QUESTION = "How do server-sent events work?"
END_OF_ANSWER = "in this conversation."  # the simulator's default answer ends so
RECEIVED = re.compile(r"I received (\d+) messages?")
ANSWERS_TAG = re.compile(r"You asked: (q[0-9a-f]{12})")
TURNS = (2, 5)  # a page conversation goes on for this many questions (inclusive)
HTTP_TIMEOUT = httpx2.Timeout(60.0, connect=10.0)
# Under gunicorn's KEEPALIVE (5 s), so no idle connection is reused as the server closes it.
LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=1000, keepalive_expiry=4)

# The kinds of load, their share of --concurrency and what they send.
KINDS = {
    "page": (0.35, "POST /callChatGPT, JSON, SSE, a conversation of 2-5 turns"),
    "get": (0.20, "GET /callChatGPT?input=..., text"),
    "get-stream": (0.10, "GET /callChatGPT?stream=1&input=..., SSE"),
    "v1-stream": (0.20, "POST /v1/chat/completions stream, openai SDK"),
    "v1": (0.15, "POST /v1/chat/completions, openai SDK"),
}
STREAMED = ("page", "get-stream", "v1-stream")
# Injected faults (simulator directives) and what a client sees: (status, error code),
# as tests/test_faults.py and tests/test_v1.py have it.
FAULT_ERRORS = {
    "rate_limit": (429, "upstream_rate_limited"),
    "server_error": (502, "upstream_error"),
    "unavailable": (502, "upstream_error"),
    "reset": (502, "upstream_unreachable"),
    "context_length": (400, "context_length_exceeded"),
    "reset_mid_stream": (502, "upstream_unreachable"),
    "malformed_chunk": (502, "upstream_malformed"),
    "hang": (504, "upstream_timeout"),
}
# Faults that break a stream after it started: a 200, then an error event instead.
MID_STREAM = {
    "reset_mid_stream": "upstream_interrupted",
    "malformed_chunk": "upstream_malformed_chunk",
}
# `/v1` passes a broken chunk on as it came (the upstream's events are not judged):
# the SDK fails to parse it.
SDK_BROKEN_CHUNK = "200 then JSONDecodeError"
HANG_SHARE = 0.1  # of the faults, when --hang-timeout lets `hang` in
STORE_PROCESSES = ("postgres", "redis-server")  # their CPU is shown apart from the rest
# What a client may see while the database is away (chatproxy.store.database, .answers):
STORE_AWAY = "503 store_unavailable"  # refused before its question was stored
# Refused after its question was stored (X-Conversation-Id names where): the question
# is then marked `error`, once the database takes it.
STORE_AWAY_ASKED = "503 store_unavailable, question stored"
# A whole streamed answer whose `done` says `stored: false`: kept in the gateway's
# spool, written once the database is back.
UNSTORED = "ok, stored: false"
# Seconds after an outage ends in which a request may still see it: a connection
# attempt under way as the proxy listens again.
OUTAGE_GRACE = 1.0
SPOOL_DRAIN_TIMEOUT = 60.0  # seconds after the load for the spool to be written back


def expected_outcome(kind: str, fault: str | None) -> str:
    """What a client of `kind` should see for a question with `fault` (None: a whole answer)."""
    if fault is None:
        return "ok"
    if fault in MID_STREAM and kind in STREAMED:
        if kind == "v1-stream" and fault == "malformed_chunk":
            return SDK_BROKEN_CHUNK
        return f"200 then {MID_STREAM[fault]}"
    status, code = FAULT_ERRORS[fault]
    return f"{status} {code}"


def outage_allowance(kind: str, expected: str, what: str) -> tuple[str, ...]:
    """What else a client of `kind` may see, besides `expected`, while `what` is away.

    The database away: a question refused with 503 `store_unavailable`
    (before or after its question was stored), or a streamed answer that ends
    whole but with `stored: false`. Redis away: nothing else, every request is
    answered as usual (without the per-minute limits).
    """
    if what != "database":
        return ()
    unstored = (UNSTORED,) if expected == "ok" and kind in ("page", "get-stream") else ()
    return (STORE_AWAY, STORE_AWAY_ASKED, *unstored)


# --- processes ---------------------------------------------------------------------------


@dataclass
class Servers:
    """The running simulators and gunicorn, the gateway's URL, headers and log folder."""

    simulators: list[subprocess.Popen[str]]
    upstreams: list[str]  # the simulators' base URLs
    gunicorn: subprocess.Popen[bytes]
    gateway_url: str
    logs: Path
    key: str | None  # the access key, with --auth keys
    database_url: str  # the gateway's DATABASE_URL (through its proxy with --outages)
    proxies: dict[str, OutageProxy]  # "database" and "redis", with --outages

    @property
    def headers(self) -> dict[str, str]:
        """The access key as the page sends it, if any."""
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}


def start_simulator(logs: Path, name: str, options: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Start a simulator (CHUNKS pieces CHUNK_DELAY s apart) with `options`; return it and its URL.

    It listens on a port the system picks (no race with other programs for a free one).
    """
    command = [sys.executable, "-m", "chatproxy.simulator", "--port", "0", "--api-key", API_KEY]
    command += ["--no-record", "--exit-with-parent"]
    command += ["--chunks", str(CHUNKS), "--chunk-delay", str(CHUNK_DELAY), *options]
    if has_uvloop():
        command.append("--uvloop")
    with (logs / f"{name}.log").open("w") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,  # Ctrl-C reaches only this script, which stops it
        )
    assert process.stdout is not None
    line = read_line(process.stdout, timeout=20)
    if not line.startswith("simulator listening on "):
        kill(process)
        raise RuntimeError(f"the simulator did not start; see {logs / name}.log")
    return process, line.rsplit(" ", 1)[-1].strip()


def upstream_settings(upstreams: list[str]) -> dict[str, str]:
    """The gateway's upstream settings: OPENAI_* for one, CHATPROXY_UPSTREAMS for several.

    CHATPROXY_UPSTREAMS replaces OPENAI_BASE_URL (docs/upstreams.md, "Several upstreams").
    """
    if len(upstreams) == 1:
        return {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": upstreams[0]}
    listed = [{"base_url": url, "api_key": API_KEY} for url in upstreams]
    return {"CHATPROXY_UPSTREAMS": json.dumps(listed)}


def gateway_env(
    args: argparse.Namespace, logs: Path, upstreams: list[str], proxies: dict[str, OutageProxy]
) -> dict[str, str]:
    """Everything the gateway under test is given beyond this process's environment.

    The store, access and limits as stream_bench sets them (`gateway_settings`),
    DATABASE_URL and REDIS_URL through `proxies` when there are, the upstreams,
    the workers, CHATPROXY_MAX_RETRIES (--retries, 0 by default: a fault's
    outcome comes at once, and with two upstreams only failover can hide the
    first one's failures), CHATPROXY_TIMEOUT with --hang-timeout. The rest is
    the product's defaults (LOG_LEVEL info: a line per request).
    """
    env = {**gateway_settings(args, logs), **upstream_settings(upstreams)}
    for what, setting in (("database", "DATABASE_URL"), ("redis", "REDIS_URL")):
        if what in proxies:
            env[setting] = through_proxy(env[setting], proxies[what].port)
    env["CHATPROXY_UPSTREAM"] = "openai"  # never the built-in simulator gunicorn.conf.py starts
    env["WORKERS"] = str(args.workers)
    env["CHATPROXY_MAX_RETRIES"] = str(args.retries)
    if args.hang_timeout:
        env["CHATPROXY_TIMEOUT"] = f"{args.hang_timeout:g}"
    return env


def through_proxy(url: str, port: int) -> str:
    """`url` with its host and port replaced by a proxy's, 127.0.0.1:`port` (user kept)."""
    parts = urlsplit(url)
    user, at, _ = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}{at}127.0.0.1:{port}"))


def start_proxies(args: argparse.Namespace, logs: Path) -> dict[str, OutageProxy]:
    """With --outages, a proxy to the database and one to Redis; else none."""
    if not args.outages:
        return {}
    proxies = {}
    for what, url, port in (("database", args.database, 5432), ("redis", args.redis, 6379)):
        parts = urlsplit(url)
        target = (parts.hostname or "127.0.0.1", parts.port or port)
        proxies[what] = OutageProxy(target, logs / f"proxy-{what}.log")
    return proxies


@contextlib.contextmanager
def servers(args: argparse.Namespace) -> Iterator[Servers]:
    """Run the proxies, simulators and gunicorn for the duration of the block; stop them after."""
    logs = Path(tempfile.mkdtemp(prefix="chatproxy-soak-"))
    simulators: list[subprocess.Popen[str]] = []
    gunicorn: subprocess.Popen[bytes] | None = None
    proxies: dict[str, OutageProxy] = {}
    try:
        proxies = start_proxies(args, logs)
        upstreams = []
        for index in range(args.upstreams):
            # With several upstreams the first one fails some answers: failover should hide them.
            faulty = index == 0 and args.upstreams > 1
            options = ["--fault", "server_error", "--fault-rate", "0.05"] if faulty else []
            process, url = start_simulator(logs, f"simulator{index + 1}", options)
            simulators.append(process)
            upstreams.append(url)
        settings = gateway_env(args, logs, upstreams, proxies)
        key = make_access_key(settings, upstreams[0]) if args.auth == "keys" else None
        gunicorn, gateway_url = launch_gunicorn(settings, args.workers, logs, attempts=3)
        database = settings["DATABASE_URL"]
        yield Servers(simulators, upstreams, gunicorn, gateway_url, logs, key, database, proxies)
    finally:
        stop(gunicorn)
        for process in simulators:
            stop(process)
        for proxy in proxies.values():
            proxy.stop()


# --- the load ----------------------------------------------------------------------------


@dataclass
class Result:
    """One request: its kind, fault, what came back against what was expected, its time."""

    kind: str
    fault: str | None
    expected: str
    got: str
    seconds: float
    detail: str = ""  # the answer, or the error's body (shown for an unexpected outcome)
    during: str | None = None  # the outage it was under way in ("database", "redis"), if any
    also: tuple[str, ...] = ()  # what else it may see during that outage

    @property
    def as_expected(self) -> bool:
        """True when the client saw what it should have (or what the outage allows)."""
        return self.got == self.expected or self.got in self.also


@dataclass
class Outage:
    """`what` ("database" or "redis") away `at` s after the load starts, for `seconds`.

    `began` and `ended` are when it did (time.monotonic()), once it has.
    """

    what: str
    at: float
    seconds: float
    began: float | None = None
    ended: float | None = None

    def overlaps(self, started: float, finished: float) -> bool:
        """True when a request under way from `started` to `finished` may have seen it."""
        if self.began is None:
            return False
        end = (self.ended if self.ended is not None else float("inf")) + OUTAGE_GRACE
        return started <= end and finished >= self.began


@dataclass
class Conversation:
    """A page client's conversation: its id, the questions left, the message count last seen."""

    id: str | None = None
    turns_left: int = 0
    received: int | None = None  # `I received N messages` of the last whole answer


@dataclass
class Load:
    """The clients' shared state: where to send, the results so far, the deadline."""

    servers: Servers
    http: httpx2.AsyncClient
    sdk: openai.AsyncOpenAI
    deadline: float  # time.monotonic()
    fault_share: float
    faults: list[str]
    results: list[Result] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)  # with --outages, in order
    began: float = 0.0  # time.monotonic() as the load started
    shown: int = 0  # unexpected outcomes logged so far
    conversations: set[str] = field(default_factory=set)  # X-Conversation-Id of every answer
    # From the gateway's /metrics at the end, summed over its workers: upstream errors by
    # code, and requests passed on to the next upstream by the upstream that failed.
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    # With --outages, at the end: seconds until the gateway's spool was written back (None:
    # not within SPOOL_DRAIN_TIMEOUT), and the requests /api/usage says the key was charged.
    spool_emptied: float | None = None
    charged: int | None = None


def question_for(fault: str | None) -> tuple[str, str]:
    """A question with a unique tag (the answer quotes it), and with `fault`'s directive if any."""
    tag = f"q{uuid.uuid4().hex[:12]}"
    text = f"{tag} {QUESTION}"
    if fault in MID_STREAM:
        text += f" [[sim: fault={fault} chunks={MID_STREAM_CHUNKS}]]"
    elif fault is not None:
        text += f" [[sim: fault={fault}]]"
    return tag, text


def check_answer(text: str, tag: str) -> str:
    """`ok` for a whole answer to the question tagged `tag`, else what is wrong with it."""
    if f"You asked: {tag}" not in text:
        return "answer to another question" if "You asked:" in text else "not the answer"
    if not text.endswith(END_OF_ANSWER):
        return "answer cut short"
    return "ok"


def error_outcome(status: int, body: str) -> str:
    """`STATUS CODE` of an error response in OpenAI's shape (`STATUS ?` when it is not)."""
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = "?"
    return f"{status} {code}"


def refused_outcome(response: httpx2.Response, body: str) -> str:
    """The outcome of an error response to /callChatGPT (`error_outcome`).

    A 503 `store_unavailable` that names a conversation (X-Conversation-Id)
    came after its question was stored: STORE_AWAY_ASKED.
    """
    outcome = error_outcome(response.status_code, body)
    if outcome == STORE_AWAY and "X-Conversation-Id" in response.headers:
        return STORE_AWAY_ASKED
    return outcome


async def read_events(response: httpx2.Response) -> list[tuple[str, Any]]:
    """The SSE events of a response, as (name, parsed JSON data); comments are skipped."""
    events: list[tuple[str, Any]] = []
    name = ""
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                events.append((name or "message", json.loads("\n".join(data))))
            name, data = "", []
        elif not line.startswith(":"):
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)
    return events


def events_outcome(events: list[tuple[str, Any]], tag: str) -> tuple[str, str, dict[str, Any]]:
    """(outcome, answer text, the done event's data) of chatproxy's own answer events."""
    text = "".join(data.get("content", "") for name, data in events if name == "delta")
    pieces = sum(1 for name, _ in events if name == "delta")
    last, data = events[-1] if events else ("", {})
    if last == "error":
        return f"200 then {data.get('error', {}).get('code')}", text, {}
    if last != "done":
        return "200 without a done or error event", text, {}
    outcome = check_answer(text, tag)
    if outcome == "ok" and pieces != CHUNKS:
        outcome = f"{pieces} pieces instead of {CHUNKS}"
    return outcome, text, data


async def ask_page(load: Load, fault: str | None, chat: Conversation) -> tuple[str, str]:
    """A question as the page asks it: POST JSON, `Accept: text/event-stream`, in a conversation."""
    if chat.turns_left <= 0:
        chat.id, chat.received, chat.turns_left = None, None, random.randint(*TURNS)
    chat.turns_left -= 1
    tag, text = question_for(fault)
    body: dict[str, Any] = {"input": text, "stream": True}
    if chat.id:
        body["conversation_id"] = chat.id
    headers = {**load.servers.headers, "Accept": "text/event-stream"}
    async with load.http.stream("POST", "/callChatGPT", json=body, headers=headers) as response:
        chat.id = response.headers.get("X-Conversation-Id") or chat.id
        if chat.id:
            load.conversations.add(chat.id)
        if response.status_code != 200:
            chat.received = None
            raw = (await response.aread()).decode(errors="replace")
            return refused_outcome(response, raw), raw
        events = await read_events(response)
    outcome, answer, done = events_outcome(events, tag)
    if outcome != "ok":
        chat.received = None  # what the next answer counts is unknown after a failed turn
        return outcome, answer
    if done.get("conversation_id") != chat.id:
        return "done names another conversation", json.dumps(done)
    found = RECEIVED.search(answer)
    received = int(found.group(1)) if found else None
    # Each whole turn adds the question and its answer to what the next one sends upstream.
    if chat.received is not None and received != chat.received + 2:
        outcome = f"history lost: {received} messages sent, {chat.received + 2} expected"
    chat.received = received
    if done.get("stored") is False:
        # Kept in the gateway's spool: the next turn's history holds it only once written.
        chat.received = None
        outcome = UNSTORED if outcome == "ok" else outcome
    return outcome, answer


async def ask_get(load: Load, fault: str | None, stream: bool) -> tuple[str, str]:
    """`GET /callChatGPT?input=...`: the answer as text, or as SSE with `stream=1`."""
    tag, text = question_for(fault)
    params = {"input": text, **({"stream": "1"} if stream else {})}
    headers = load.servers.headers
    async with load.http.stream("GET", "/callChatGPT", params=params, headers=headers) as response:
        if conversation := response.headers.get("X-Conversation-Id"):
            load.conversations.add(conversation)
        if response.status_code != 200:
            raw = (await response.aread()).decode(errors="replace")
            return refused_outcome(response, raw), raw
        if stream:
            outcome, answer, done = events_outcome(await read_events(response), tag)
            if outcome == "ok" and done.get("stored") is False:
                outcome = UNSTORED
            return outcome, answer
        answer = (await response.aread()).decode()
    return check_answer(answer, tag), answer


async def ask_v1(load: Load, fault: str | None, stream: bool) -> tuple[str, str]:
    """`POST /v1/chat/completions` through the openai SDK, streamed or not."""
    tag, text = question_for(fault)
    messages: list[Any] = [{"role": "user", "content": text}]
    finish: str | None = None
    answer = ""
    try:
        if stream:
            chunks = await load.sdk.chat.completions.create(
                model=MODEL, messages=messages, stream=True
            )
            async for chunk in chunks:
                if chunk.choices:
                    answer += chunk.choices[0].delta.content or ""
                    finish = chunk.choices[0].finish_reason or finish
        else:
            completion = await load.sdk.chat.completions.create(model=MODEL, messages=messages)
            answer = completion.choices[0].message.content or ""
            finish = completion.choices[0].finish_reason
    except openai.APIStatusError as error:
        return f"{error.status_code} {error.code}", error.response.text
    except openai.APIConnectionError as error:
        return f"connection error: {error.__cause__!r}", ""
    except openai.APIError as error:  # an error event in the stream
        return f"200 then {error.code}", answer
    except ValueError as error:  # a chunk that is not JSON
        return f"200 then {type(error).__name__}", f"{error}; after {answer!r}"
    if finish != "stop":
        return f"finish_reason {finish}", answer
    return check_answer(answer, tag), answer


async def client(load: Load, kind: str, start_after: float) -> None:
    """One client of `kind`: ask, note the outcome, ask again until the deadline."""
    await asyncio.sleep(start_after)
    chat = Conversation()
    asks: dict[str, Callable[[str | None], Awaitable[tuple[str, str]]]] = {
        "page": lambda fault: ask_page(load, fault, chat),
        "get": lambda fault: ask_get(load, fault, stream=False),
        "get-stream": lambda fault: ask_get(load, fault, stream=True),
        "v1-stream": lambda fault: ask_v1(load, fault, stream=True),
        "v1": lambda fault: ask_v1(load, fault, stream=False),
    }
    ask = asks[kind]
    while time.monotonic() < load.deadline:
        fault = None
        if load.faults and random.random() < load.fault_share:
            hang = "hang" in load.faults and random.random() < HANG_SHARE
            fault = "hang" if hang else random.choice([f for f in load.faults if f != "hang"])
        started = time.monotonic()
        try:
            got, detail = await ask(fault)
        except Exception as error:  # a broken connection, a body that is not JSON, ...
            got, detail = f"{type(error).__name__}: {error}", ""
        finished = time.monotonic()
        expected = expected_outcome(kind, fault)
        result = Result(kind, fault, expected, got, finished - started, detail)
        for outage in load.outages:
            if outage.overlaps(started, finished):
                result.during = outage.what
                result.also = outage_allowance(kind, expected, outage.what)
        load.results.append(result)
        if not result.as_expected:
            show_unexpected(load, result)


def show_unexpected(load: Load, result: Result) -> None:
    """Log one of the first SHOWN_ERRORS unexpected outcomes in full on stderr."""
    load.shown += 1
    if load.shown > SHOWN_ERRORS:
        return
    print(
        f"UNEXPECTED {result.kind} (fault {result.fault}): expected {result.expected!r}, "
        f"got {result.got!r} after {result.seconds:.2f} s; body starts: {result.detail[:300]!r}",
        file=sys.stderr,
        flush=True,
    )


def split_concurrency(total: int) -> dict[str, int]:
    """--concurrency split over KINDS by their shares (largest remainder), at least one each."""
    shares = {kind: share * total for kind, (share, _) in KINDS.items()}
    counts = {kind: max(1, int(value)) for kind, value in shares.items()}
    by_remainder = sorted(shares, key=lambda kind: shares[kind] - int(shares[kind]), reverse=True)
    for kind in by_remainder:
        if sum(counts.values()) >= total:
            break
        counts[kind] += 1
    return counts


# --- memory and CPU ----------------------------------------------------------------------


@dataclass
class Sample:
    """Figures at one moment of the run: workers' RSS, CPU since the previous sample, rate."""

    at: float  # seconds since the load started
    rss: dict[int, float]  # MB per worker pid
    cpu: dict[int, float]  # % of one core per worker, since the previous sample
    rate: float  # requests answered per second since the previous sample


@dataclass
class Watch:
    """What the sampler saw: the samples, workers that appeared later, CPU over the run."""

    samples: list[Sample] = field(default_factory=list)
    first_workers: list[int] = field(default_factory=list)
    new_workers: set[int] = field(default_factory=set)
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core, after the warm-up


def sample_marks(duration: float, warmup: float) -> list[float]:
    """When to sample (s after the load starts): after the warm-up, every minute, at the end."""
    marks = [warmup]
    mark = SAMPLE_EVERY
    while mark < duration:
        if mark > warmup:
            marks.append(mark)
        mark += SAMPLE_EVERY
    return [*marks, duration] if duration > warmup else marks


def cpu_groups(found: Servers) -> dict[str, list[int]]:
    """The processes whose CPU is shown: this script, the simulators, gunicorn and its
    workers, the outage proxies if any, and every PostgreSQL and Redis process (whoever
    they work for)."""
    groups = {
        "load generator": [os.getpid()],
        "simulators": [process.pid for process in found.simulators],
        "gunicorn": process_tree(found.gunicorn.pid),
        "PostgreSQL and Redis": processes_named(STORE_PROCESSES),
    }
    if found.proxies:
        groups["outage proxies"] = [proxy.process.pid for proxy in found.proxies.values()]
    return groups


def processes_named(names: tuple[str, ...]) -> list[int]:
    """The pids of the running processes whose command name (/proc/PID/comm) is one of `names`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() in names:
                    pids.append(int(entry.name))
    return pids


def cpu_totals(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of each group, and of the whole machine (busy and total)."""
    totals = {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in groups.items()}
    totals["machine"], totals["machine total"] = machine_cpu_seconds()
    return totals


async def watch_workers(load: Load, began: float, marks: list[float], watch: Watch) -> None:
    """At each mark, note every worker's RSS and CPU and the request rate since the last one."""
    master = load.servers.gunicorn.pid
    watch.first_workers = worker_pids(master)
    last_at, last_count = 0.0, 0
    last_cpu = {pid: cpu_seconds(pid) for pid in watch.first_workers}
    groups_before: dict[str, float] = {}
    for mark in marks:
        await asyncio.sleep(max(0.0, began + mark - time.monotonic()))
        workers = worker_pids(master)
        watch.new_workers.update(set(workers) - set(watch.first_workers))
        now = {pid: cpu_seconds(pid) for pid in workers}
        wall = mark - last_at
        cpu = {pid: 100 * (now[pid] - last_cpu.get(pid, 0.0)) / wall for pid in workers}
        count = len(load.results)
        rss = {pid: rss_mb(pid) for pid in workers}
        watch.samples.append(Sample(mark, rss, cpu, (count - last_count) / wall))
        last_at, last_count, last_cpu = mark, count, now
        totals = cpu_totals(cpu_groups(load.servers))
        if not groups_before:
            groups_before = totals  # CPU over the run is counted from the warm-up's end
            continue
        cores = totals["machine total"] - groups_before["machine total"]
        seconds = mark - marks[0]
        watch.cpu = {
            name: 100 * (totals[name] - groups_before[name]) / seconds
            for name in totals
            if name != "machine total"
        }
        watch.cpu["cores"] = cores / seconds


METRICS = {
    "upstream errors": re.compile(r'chatproxy_upstream_errors_total\{code="([^"]*)"\} (\S+)'),
    "failovers": re.compile(r'chatproxy_upstream_failovers_total\{upstream="([^"]*)"\} (\S+)'),
}


async def gateway_metrics(load: Load) -> dict[str, dict[str, float]]:
    """The METRICS counters of the gateway's `/metrics` (summed over the workers), by label."""
    try:
        response = await load.http.get("/metrics")
    except httpx2.HTTPError:
        return {}
    found: dict[str, dict[str, float]] = {name: {} for name in METRICS}
    for line in response.text.splitlines():
        for name, pattern in METRICS.items():
            if match := pattern.match(line):
                found[name][match.group(1)] = float(match.group(2))
    return found


# --- the store ---------------------------------------------------------------------------

# What a question to /callChatGPT leaves in the store, by what its client saw:
# (role, status) of the messages it adds (chatproxy.store.conversations).
STORED = {
    "answered": (("user", "ok"), ("assistant", "ok")),
    "failed": (("user", "error"),),
    "broken off": (("user", "ok"), ("assistant", "interrupted")),
    "refused": (),  # the database away before the question was stored
}


def stored_as(got: str) -> str | None:
    """Which STORED case an outcome of /callChatGPT is, or None when it cannot be told.

    An answer kept in the spool (`stored: false`) counts as answered: it must
    be in the store once the spool is written back.
    """
    if got in ("ok", UNSTORED):
        return "answered"
    if got == STORE_AWAY:
        return "refused"
    if got == STORE_AWAY_ASKED:
        return "failed"
    if got.startswith("200 then "):
        return "broken off"  # the simulator sends half the pieces first: some text to keep
    if re.fullmatch(r"[45]\d\d [a-z_]+", got):
        return "failed"
    return None


def expected_messages(results: list[Result]) -> Counter[tuple[str, str]] | None:
    """The messages the store should hold for the questions to /callChatGPT; None if unknown."""
    expected: Counter[tuple[str, str]] = Counter()
    for result in results:
        if result.kind.startswith("v1"):
            continue  # the pass-through stores usage only
        case = stored_as(result.got)
        if case is None:
            return None
        expected.update(STORED[case])
    return expected


@dataclass
class Stored:
    """What the store holds for the conversations asked in: messages counted by (role,
    status), and the tags of the questions its whole answers (`ok`) answer."""

    counts: Counter[tuple[str, str]]
    answered: set[str]


def answered_tag(answer: str) -> str | None:
    """The tag of the question `answer` answers (the simulator quotes it), if any."""
    found = ANSWERS_TAG.search(answer)
    return found.group(1) if found else None


def stored_messages(database_url: str, conversations: set[str]) -> Stored:
    """The messages of `conversations` in the gateway's store, counted by (role, status),
    and the tags its whole answers answer."""
    from sqlalchemy import bindparam, create_engine, text

    from chatproxy.config import database_url as sqlalchemy_url

    engine = create_engine(sqlalchemy_url(database_url))
    stored = Stored(Counter(), set())
    ids = sorted(conversations)
    counts = text(
        "SELECT role, status, count(*) FROM messages "
        "WHERE conversation_id IN :ids GROUP BY role, status"
    ).bindparams(bindparam("ids", expanding=True))
    answers = text(
        "SELECT content FROM messages "
        "WHERE conversation_id IN :ids AND role = 'assistant' AND status = 'ok'"
    ).bindparams(bindparam("ids", expanding=True))
    try:
        with engine.connect() as connection:
            for start in range(0, len(ids), 500):
                some = {"ids": ids[start : start + 500]}
                for role, status, n in connection.execute(counts, some):
                    stored.counts[(role, status)] += n
                for (content,) in connection.execute(answers, some):
                    if tag := answered_tag(content):
                        stored.answered.add(tag)
    finally:
        engine.dispose()
    return stored


def received_whole(results: list[Result]) -> dict[str, str]:
    """The tags of the questions to /callChatGPT whose answers clients received whole, with
    their outcome (`ok` or UNSTORED)."""
    received = {}
    for result in results:
        whole = not result.kind.startswith("v1") and result.got in ("ok", UNSTORED)
        if whole and (tag := answered_tag(result.detail)):
            received[tag] = result.got
    return received


def expected_charges(results: list[Result]) -> int | None:
    """How many requests the ledger should count: all but those refused for the database
    (nothing went upstream); None when an outcome cannot tell."""
    if any(stored_as(r.got) is None for r in results):
        return None
    return sum(1 for r in results if r.got not in (STORE_AWAY, STORE_AWAY_ASKED))


async def charged_requests(load: Load) -> int | None:
    """The requests the access key was charged for, over all days, as `/api/usage` says."""
    try:
        response = await load.http.get("/api/usage", headers=load.servers.headers)
        return sum(day["requests"] for day in response.json()["days"])
    except (httpx2.HTTPError, ValueError, KeyError, TypeError):
        return None


# --- outages -----------------------------------------------------------------------------


def spool_files(database_url: str) -> list[Path]:
    """The gateway's spool for `database_url` and any part of it being written back now
    (chatproxy.store.spool: instance/spool-HASH.jsonl and its `.replaying` copies)."""
    from sqlalchemy import create_engine

    from chatproxy.config import database_url as sqlalchemy_url
    from chatproxy.store.spool import spool_path

    engine = create_engine(sqlalchemy_url(database_url))
    path = spool_path(engine)
    engine.dispose()
    return [path, *path.parent.glob(path.name + ".*.replaying")]


async def wait_for_spool(database_url: str, timeout: float) -> float | None:
    """Seconds until the gateway's spool is written back (its files gone or empty), or None
    when it still holds something after `timeout` s."""
    began = time.monotonic()
    while True:
        waiting = [p for p in spool_files(database_url) if p.exists() and p.stat().st_size]
        if not waiting:
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            return None
        await asyncio.sleep(0.2)


async def run_outages(load: Load, began: float) -> None:
    """Take each of `load.outages` away at its time for its seconds, saying when on stdout."""
    for outage in load.outages:
        proxy = load.servers.proxies[outage.what]
        await asyncio.sleep(max(0.0, began + outage.at - time.monotonic()))
        outage.began = time.monotonic()
        await asyncio.to_thread(proxy.cut)
        print(
            f"  {minutes(outage.began - began)} the {outage.what} goes away for "
            f"{outage.seconds:g} s (its proxy, port {proxy.port}, cut)",
            flush=True,
        )
        await asyncio.sleep(max(0.0, outage.began + outage.seconds - time.monotonic()))
        await asyncio.to_thread(proxy.restore)
        outage.ended = time.monotonic()
        print(f"  {minutes(outage.ended - began)} the {outage.what} is back", flush=True)


# --- the run -----------------------------------------------------------------------------


async def soak(args: argparse.Namespace, found: Servers, watch: Watch) -> tuple[Load, float]:
    """Run the clients until the deadline, sampling meanwhile; returns the load and its seconds."""
    faults = [] if args.fault_share <= 0 else [f for f in FAULT_ERRORS if f != "hang"]
    if args.hang_timeout and faults:
        faults.append("hang")
    counts = split_concurrency(args.concurrency)
    api_key = found.key or "no-key-needed"  # the SDK wants one; open mode ignores it
    async with (
        httpx2.AsyncClient(base_url=found.gateway_url, timeout=HTTP_TIMEOUT, limits=LIMITS) as http,
        openai.AsyncOpenAI(
            api_key=api_key,
            base_url=f"{found.gateway_url}/v1",
            max_retries=0,  # every outcome as the gateway answered it
            timeout=HTTP_TIMEOUT,
            http_client=openai.DefaultAsyncHttpxClient(limits=LIMITS, timeout=HTTP_TIMEOUT),
        ) as sdk,
    ):
        began = time.monotonic()
        load = Load(found, http, sdk, began + args.duration, args.fault_share, faults)
        load.began, load.outages = began, planned_outages(args)
        marks = sample_marks(args.duration, min(args.warmup, args.duration / 2))
        sampler = asyncio.create_task(watch_workers(load, began, marks, watch))
        outages = asyncio.create_task(run_outages(load, began))
        total = sum(counts.values())
        tasks: list[Awaitable[None]] = []
        for kind, count in counts.items():
            for _ in range(count):
                # The first requests spread over one second rather than all at once.
                tasks.append(client(load, kind, len(tasks) / total))
        try:
            await asyncio.gather(*tasks)
            await sampler
            await outages
        finally:
            sampler.cancel()
            outages.cancel()
        seconds = time.monotonic() - began
        if load.outages:
            # Answers kept while the database was away are written back in the background.
            load.spool_emptied = await wait_for_spool(found.database_url, SPOOL_DRAIN_TIMEOUT)
            if found.key:
                load.charged = await charged_requests(load)
        load.metrics = await gateway_metrics(load)
    return load, seconds


def planned_outages(args: argparse.Namespace) -> list[Outage]:
    """The outages --outages asks for, in the order they come."""
    if not args.outages:
        return []
    planned = [
        Outage("database", args.database_outage_at, args.outage_seconds),
        Outage("redis", args.redis_outage_at, args.outage_seconds),
    ]
    return sorted(planned, key=lambda outage: outage.at)


def gunicorn_log(logs: Path) -> tuple[list[str], Counter[str]]:
    """The gunicorn log's ERROR and Traceback lines, and its warnings counted by message."""
    errors: list[str] = []
    warnings: Counter[str] = Counter()
    path = logs / "gunicorn.log"
    if not path.exists():
        return errors, warnings
    with path.open(errors="replace") as lines:
        for line in lines:
            if "[ERROR]" in line or "[CRITICAL]" in line or "Traceback" in line:
                errors.append(line.rstrip())
            elif "[WARNING]" in line:
                message = line.split("[WARNING]", 1)[1].strip()
                warnings[re.sub(r"\d+", "N", message)] += 1
    return errors, warnings


SPOOLED = re.compile(r"the database is unavailable \(.*\): the answer is kept in spool-")
WRITTEN_BACK = re.compile(r"(\d+) answers kept in the spool while the database was away are now")


def spool_log(logs: Path) -> tuple[int, int]:
    """From the gunicorn log: transactions the workers kept in the spool, and those they
    wrote back from it (chatproxy.store.spool)."""
    kept = written = 0
    path = logs / "gunicorn.log"
    if path.exists():
        with path.open(errors="replace") as lines:
            for line in lines:
                if SPOOLED.search(line):
                    kept += 1
                elif found := WRITTEN_BACK.search(line):
                    written += int(found.group(1))
    return kept, written


# --- report ------------------------------------------------------------------------------


def minutes(seconds: float) -> str:
    """`M:SS`."""
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def whole_answers(results: list[Result]) -> list[float]:
    """The seconds of the whole answers among `results` (no fault; `stored: false` counts)."""
    return [r.seconds for r in results if r.fault is None and r.got in ("ok", UNSTORED)]


def report_requests(results: list[Result], seconds: float) -> None:
    """Requests by kind and outcome, rate and latency of whole answers."""
    print(f"\nRequests over {seconds:.0f} s (warm-up included):")
    head = (
        f"  {'kind':<10} | {'requests':>8} | {'ok':>7} | {'faults as expected':>18} | "
        f"{'503 in outage':>13} | {'unexpected':>10} | {'req/s':>6} | {'p50 ms':>7} | "
        f"{'p95 ms':>7}"
    )
    print(head)
    print("  " + "-" * (len(head) - 2))
    for kind in [*KINDS, "all"]:
        mine = [r for r in results if kind in (r.kind, "all")]
        ok = whole_answers(mine)
        faults = sum(1 for r in mine if r.fault is not None and r.got == r.expected)
        refused = sum(1 for r in mine if r.got in (STORE_AWAY, STORE_AWAY_ASKED) and r.as_expected)
        unexpected = sum(1 for r in mine if not r.as_expected)
        p50, p95 = (1000 * percentile(ok, q) for q in (0.5, 0.95))
        print(
            f"  {kind:<10} | {len(mine):>8} | {len(ok):>7} | {faults:>18} | {refused:>13} | "
            f"{unexpected:>10} | {len(mine) / seconds:>6.1f} | {p50:>7.0f} | {p95:>7.0f}"
        )
    print(
        "  (ok: whole answers, those kept in the spool included; latency: from sending the "
        "question to the whole answer, answers without a fault)"
    )
    by_fault: dict[str, Counter[str]] = {}
    fault_seconds: dict[str, list[float]] = {}
    for result in results:
        if result.fault is not None:
            by_fault.setdefault(result.fault, Counter())[result.got] += 1
            fault_seconds.setdefault(result.fault, []).append(result.seconds)
    if by_fault:
        print("\nInjected faults: how many, p50 time to the outcome, what the clients saw:")
        for fault in FAULT_ERRORS:
            if fault in by_fault:
                seen = ", ".join(f"{got} x{n}" for got, n in by_fault[fault].most_common())
                p50 = percentile(fault_seconds[fault], 0.5)
                print(f"  {fault:<17} {sum(by_fault[fault].values()):>5} {p50:>6.2f} s: {seen}")
    odd = Counter((r.kind, r.fault or "-", r.expected, r.got) for r in results if not r.as_expected)
    if odd:
        print("\nUnexpected outcomes (kind, fault, expected, got):")
        for (kind, fault, expected, got), n in odd.most_common(15):
            print(f"  {n:>5} x {kind}, {fault}: expected {expected!r}, got {got[:120]!r}")


def report_memory(watch: Watch) -> list[tuple[int, float]]:
    """The workers' RSS and CPU at each sample; returns (pid, % change first to last)."""
    print(
        "\nGunicorn workers, by pid: RSS (VmRSS, MB) at each time; CPU (% of one core) and "
        "requests/s since the line before:"
    )
    pids = watch.first_workers
    head = f"  {'time':>5} | {'req/s':>6} | " + " | ".join(
        f"{'RSS MB ' + str(pid):>15} {'CPU %':>5}" for pid in pids
    )
    print(head)
    print("  " + "-" * (len(head) - 2))
    for sample in watch.samples:
        cells = [f"{sample.rss.get(p, 0.0):>15.1f} {sample.cpu.get(p, 0.0):>5.0f}" for p in pids]
        print(f"  {minutes(sample.at):>5} | {sample.rate:>6.1f} | " + " | ".join(cells))
    changes = []
    if len(watch.samples) >= 2:
        first, last = watch.samples[0], watch.samples[-1]
        for pid in pids:
            start, end = first.rss.get(pid, 0.0), last.rss.get(pid, 0.0)
            change = 100 * (end - start) / start if start and end else float("nan")
            changes.append((pid, round(change, 1) + 0.0))  # + 0.0: no "-0.0 %"
        shown = ", ".join(f"worker {pid} {change:+.1f} %" for pid, change in changes)
        print(f"  change {minutes(first.at)} -> {minutes(last.at)}: {shown}")
    if watch.new_workers:
        print(f"  workers started during the run (one died or was killed): {watch.new_workers}")
    cpu = watch.cpu
    if cpu:
        ours = sum(cpu[name] for name in cpu if name not in ("machine", "cores"))
        other = max(0.0, cpu["machine"] - ours)
        shown = ", ".join(
            f"{name} {cpu[name]:.0f}" for name in cpu if name not in ("machine", "cores")
        )
        print(
            f"\nCPU after the warm-up, % of one core: {shown}, other processes {other:.0f}; "
            f"machine {cpu['machine']:.0f} of {100 * cpu['cores']:.0f}"
        )
        if other > NOISE:
            print("  WARNING: the machine was busy with other work: latency and CPU are skewed")
    return changes


def report_log(
    errors: list[str], warnings: Counter[str], metrics: dict[str, dict[str, float]]
) -> None:
    """The gunicorn log's errors (first few) and its warnings, and the gateway's own counts."""
    print(f"\nGunicorn log: {len(errors)} ERROR/CRITICAL/Traceback lines")
    for line in errors[:SHOWN_ERRORS]:
        print(f"  {line[:300]}")
    if warnings:
        print("  warnings (digits as N):")
        for message, n in warnings.most_common(12):
            print(f"  {n:>7} x {message[:120]}")
    for name, counts in metrics.items():
        shown = ", ".join(f"{label} {n:.0f}" for label, n in sorted(counts.items())) or "none"
        print(f"Gateway's /metrics, {name}: {shown}")


def report_outages(load: Load, spooled: tuple[int, int]) -> None:
    """Each outage and what the requests under way saw; the spool and the ledger afterwards."""
    if not load.outages:
        return
    print(
        "\nOutages (the gateway's connections cut at its proxy): the requests under way in "
        f"each (or up to {OUTAGE_GRACE:g} s after it), by outcome:"
    )
    for outage in load.outages:
        assert outage.began is not None and outage.ended is not None
        mine = [r for r in load.results if r.during == outage.what]
        unexpected = sum(1 for r in mine if not r.as_expected)
        whole = whole_answers(mine)
        p50, p95 = (1000 * percentile(whole, q) for q in (0.5, 0.95))
        print(
            f"  {outage.what:<8} {minutes(outage.began - load.began)} -> "
            f"{minutes(outage.ended - load.began)} ({outage.ended - outage.began:.1f} s): "
            f"{len(mine)} requests, {unexpected} unexpected; {len(whole)} whole answers, "
            f"p50 {p50:.0f} ms, p95 {p95:.0f} ms"
        )
        by_outcome: dict[str, Counter[str]] = {}
        for result in mine:
            by_outcome.setdefault(result.got, Counter())[result.kind] += 1
        for got, kinds in sorted(by_outcome.items(), key=lambda item: -item[1].total()):
            shown = ", ".join(f"{kind} {n}" for kind, n in kinds.most_common())
            print(f"  {kinds.total():>7} x {got[:80]} ({shown})")
    kept, written = spooled
    emptied = load.spool_emptied
    after = (
        f"empty {emptied:.1f} s after the load"
        if emptied is not None
        else f"NOT empty {SPOOL_DRAIN_TIMEOUT:g} s after the load"
    )
    print(
        f"Spool: {kept} transactions kept while the database was away, {written} written "
        f"back (gunicorn log); {after}"
    )
    if load.charged is not None:
        wanted = expected_charges(load.results)
        print(
            f"Ledger: {load.charged} requests charged to the key (/api/usage), expected "
            f"{wanted if wanted is not None else '-'} (all but those refused for the database)"
        )


def report_store(
    expected: Counter[tuple[str, str]] | None,
    stored: Stored,
    conversations: int,
    received: dict[str, str],
) -> bool | None:
    """The stored messages against what the clients saw; None when that cannot be told.

    `received`: the tags of the answers clients received whole (`received_whole`);
    each must be in the store.
    """
    print(f"\nStore: messages of the {conversations} conversations asked in, by role and status:")
    keys = sorted(set(stored.counts) | set(expected or {}))
    for key in keys:
        wanted = f" (expected {expected[key]})" if expected is not None else ""
        print(f"  {' '.join(key):<22} {stored.counts[key]:>7}{wanted}")
    missing = [tag for tag in received if tag not in stored.answered]
    spooled = [tag for tag, got in received.items() if got == UNSTORED]
    print(
        f"  answers received whole (/callChatGPT): {len(received)}, in the store by their tag: "
        f"{len(received) - len(missing)}; of them kept in the spool (stored: false) "
        f"{len(spooled)}, in the store: {sum(1 for tag in spooled if tag in stored.answered)}"
    )
    if missing:
        print(f"  missing, the first few: {', '.join(missing[:5])}")
    if expected is None:
        print("  not compared: some outcomes say nothing of what was stored (see above)")
        return None
    return stored.counts == expected and not missing


def report_targets(rows: list[tuple[str, str, str, bool, str]]) -> bool:
    """The targets: (what, figure, target, met, why not judged or ""); True if all judged hold."""
    print("\nTargets:")
    for what, figure, wanted, ok, unjudged in rows:
        verdict = "PASS" if ok else "FAIL"
        if unjudged:
            verdict += f" (not judged: {unjudged})"
        print(f"  {what:<30} {figure:>17}  {wanted:<12} {verdict}")
    return all(ok for _, _, _, ok, unjudged in rows if not unjudged)


def targets(
    args: argparse.Namespace,
    changes: list[tuple[int, float]],
    watch: Watch,
    unexpected: int,
    log_errors: int,
    store_ok: bool | None,
    load: Load,
) -> list[tuple[str, str, str, bool, str]]:
    """The target rows for report_targets."""
    worst = max((abs(change) for _, change in changes), default=float("nan"))
    short = f"the memory target needs a run of {JUDGED_FROM:g} s or more"
    restarts = len(watch.new_workers)
    rows = []
    if load.outages:
        emptied = load.spool_emptied
        rows.append(
            (
                "spool written back",
                f"in {emptied:.1f} s" if emptied is not None else "no",
                f"within {SPOOL_DRAIN_TIMEOUT:g} s",
                emptied is not None,
                "",
            )
        )
        wanted = expected_charges(load.results)
        if load.charged is not None:
            rows.append(
                (
                    "ledger counts every request",
                    f"{load.charged} of {wanted}" if wanted is not None else str(load.charged),
                    "all",
                    load.charged == wanted,
                    "" if wanted is not None else "unexpected outcomes",
                )
            )
    return [
        (
            "worker RSS, first to last",
            " / ".join(f"{change:+.1f} %" for _, change in changes) or "-",
            f"within {MEMORY_LIMIT:g} %",
            bool(changes) and worst <= MEMORY_LIMIT,  # False for NaN
            "" if args.duration >= JUDGED_FROM else short,
        ),
        ("unexpected errors", str(unexpected), "= 0", unexpected == 0, ""),
        ("gunicorn log ERROR/Traceback", str(log_errors), "= 0", log_errors == 0, ""),
        ("workers restarted", str(restarts), "= 0", restarts == 0, ""),
        (
            "store holds what was answered",
            {True: "same", False: "differs", None: "-"}[store_ok],
            "same",
            bool(store_ok),
            "" if store_ok is not None else "unexpected outcomes",
        ),
        *rows,
    ]


# --- main --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--duration", type=float, default=600.0, help="seconds of load, warm-up included")
    add("--warmup", type=float, default=WARMUP, help="seconds of load before the first RSS figure")
    add("--workers", type=int, default=2, help="gunicorn worker processes (WORKERS)")
    add("--concurrency", type=int, default=40, help="clients asking at the same time, all kinds")
    add("--auth", choices=("keys", "open"), default="keys", help="CHATPROXY_AUTH of the gateway")
    add("--database", help="DATABASE_URL of the gateway (default: a fresh SQLite file)")
    add("--redis", help="REDIS_URL of the gateway (default: none, limits in memory)")
    add("--upstreams", type=int, choices=(1, 2), default=1, help="simulators behind the gateway")
    add("--fault-share", type=float, default=0.05, help="share of questions with a fault")
    add(
        "--hang-timeout",
        type=float,
        help="CHATPROXY_TIMEOUT in s; also lets the `hang` fault in (expected: 504)",
    )
    add("--retries", type=int, default=0, help="CHATPROXY_MAX_RETRIES (the product's default: 2)")
    add(
        "--outages",
        action="store_true",
        help="take the database, then Redis, away during the load (needs PostgreSQL and Redis)",
    )
    add("--database-outage-at", type=float, default=40.0, help="s into the load: database away")
    add("--redis-outage-at", type=float, default=110.0, help="s into the load: Redis away")
    add("--outage-seconds", type=float, default=30.0, help="how long each outage lasts")
    args = parser.parse_args(argv)
    if args.concurrency < len(KINDS):
        parser.error(f"--concurrency must be at least {len(KINDS)} (one client per kind)")
    if args.duration <= 0 or args.warmup <= 0:
        parser.error("--duration and --warmup must be more than 0 s")
    if not 0 <= args.fault_share <= 1:
        parser.error("--fault-share must be between 0 and 1")
    if args.outages:
        check_outages(parser, args)
    return args


def check_outages(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--outages needs PostgreSQL and Redis, and outages apart from each other within the run."""
    if not (args.database or "").startswith(("postgresql://", "postgres://")) or not args.redis:
        parser.error("--outages needs --database postgresql://... and --redis redis://...")
    if args.outage_seconds <= 0:
        parser.error("--outage-seconds must be more than 0 s")
    starts = sorted((args.database_outage_at, args.redis_outage_at))
    if starts[0] < 0 or starts[1] + args.outage_seconds > args.duration:
        parser.error("each outage must begin and end within --duration")
    if starts[1] < starts[0] + args.outage_seconds + OUTAGE_GRACE:
        parser.error("the outages must not overlap (each begins after the other ends)")


def main(argv: list[str] | None = None) -> int:
    """Start the servers, run the load, print the figures, stop the servers; 1 if a target fails."""
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))  # chatproxy, for the access key and the store's figures
    begin_run("chatproxy soak benchmark", "soak.py", argv)
    counts = split_concurrency(args.concurrency)
    print(f"clients: {', '.join(f'{kind} {n}' for kind, n in counts.items())}")
    for kind, (_, what) in KINDS.items():
        print(f"  {kind:<10} {what}")
    print(
        f"answers: {CHUNKS} pieces {1000 * CHUNK_DELAY:.0f} ms apart; "
        f"{100 * args.fault_share:g} % of questions with a fault"
        + (" (hang included)" if args.hang_timeout else "")
    )
    loop_factory = None
    if has_uvloop():
        import uvloop

        loop_factory = uvloop.new_event_loop
    watch = Watch()
    try:
        with servers(args) as found:
            database = args.database or "a fresh SQLite file"
            print(
                f"gateway {found.gateway_url}: {args.workers} workers, CHATPROXY_AUTH={args.auth}, "
                f"store {database.split('@')[-1]}, limits in {'Redis' if args.redis else 'memory'}"
            )
            print(f"upstreams: {', '.join(found.upstreams)}")
            if args.upstreams > 1:
                print(
                    "  the first fails 5 % of its answers (server_error); CHATPROXY_UPSTREAMS="
                    f"{upstream_settings(found.upstreams)['CHATPROXY_UPSTREAMS']}"
                )
            if found.proxies:
                print(
                    f"outages: the gateway reaches the database through 127.0.0.1:"
                    f"{found.proxies['database'].port} and Redis through 127.0.0.1:"
                    f"{found.proxies['redis'].port}; each away for {args.outage_seconds:g} s, "
                    f"the database at {minutes(args.database_outage_at)}, Redis at "
                    f"{minutes(args.redis_outage_at)}"
                )
            print(f"server logs: {found.logs}")
            print(f"running for {args.duration:g} s ...", flush=True)
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                load, seconds = runner.run(soak(args, found, watch))
            logs = found.logs
        # The servers are stopped: the log is complete.
        errors, warnings = gunicorn_log(logs)
        spooled = spool_log(logs)
        stored = stored_messages(gateway_settings(args, logs)["DATABASE_URL"], load.conversations)
    except KeyboardInterrupt:
        print("interrupted: the simulators and gunicorn are stopped")
        return 130
    unexpected = sum(1 for r in load.results if not r.as_expected)
    report_requests(load.results, seconds)
    changes = report_memory(watch)
    report_log(errors, warnings, load.metrics)
    report_outages(load, spooled)
    expected = expected_messages(load.results)
    received = received_whole(load.results)
    store_ok = report_store(expected, stored, len(load.conversations), received)
    ok = report_targets(targets(args, changes, watch, unexpected, len(errors), store_ok, load))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
