"""How far a burst of requests takes a key past its daily token quota.

Starts the simulator and gunicorn (this checkout), makes a key with
--tokens-per-day, sends --requests questions to /v1/chat/completions at once,
and prints what was answered, what was refused and what the ledger holds:

    python bench/budget_burst.py [--requests 30] [--tokens-per-day 300] [--slow]
        [--workers 2] [--database URL] [--redis URL]

`--slow` makes each answer take a second (the simulator's 20 chunks, 50 ms
apart); otherwise answers come at once. A figure, not a test: the tests of
tests/test_budgets.py hold the bound.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stream_bench import API_KEY, begin_run, kill, start_gunicorn, start_simulator


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--tokens-per-day", type=int, default=300)
    parser.add_argument("--slow", action="store_true", help="answers that take a second")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--database", help="DATABASE_URL (default: a fresh SQLite file)")
    parser.add_argument("--redis", help="REDIS_URL (default: none)")
    return parser.parse_args(argv)


def make_key(settings: dict[str, str], simulator_url: str, tokens_per_day: int) -> tuple[str, str]:
    from chatproxy import create_app
    from chatproxy.access.keys import issue_key
    from chatproxy.store.schema import upgrade_database

    env = {**settings, "OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": simulator_url}
    upgrade_database(env)
    name = f"burst-{time.time_ns()}"
    with create_app(env).app_context():
        return name, issue_key(name, tokens_per_day=tokens_per_day)


def ledger_tokens(settings: dict[str, str], name: str) -> tuple[int, int]:
    """(requests, tokens) the ledger holds for key `name`."""
    from sqlalchemy import create_engine, text

    from chatproxy.config import database_url

    engine = create_engine(database_url(settings["DATABASE_URL"]))
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT COALESCE(SUM(requests), 0), "
                "COALESCE(SUM(prompt_tokens + completion_tokens), 0) "
                "FROM usage_days WHERE key_name = :name"
            ),
            {"name": name},
        ).one()
    engine.dispose()
    return int(row[0]), int(row[1])


async def burst(url: str, key: str, count: int, slow: bool) -> list[httpx2.Response]:
    question = "Tell me about budgets" + ("" if slow else " [[sim: delay=0]]")
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx2.Limits(max_connections=count)
    async with httpx2.AsyncClient(timeout=120, headers=headers, limits=limits) as client:
        return await asyncio.gather(
            *(
                client.post(
                    f"{url}/v1/chat/completions",
                    json={
                        "model": "gpt-4o-mini",
                        "messages": [{"role": "user", "content": f"{question} ({i})"}],
                    },
                )
                for i in range(count)
            )
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    begin_run("chatproxy: a burst against a daily token quota", "bench/budget_burst.py", argv)
    logs = Path(tempfile.mkdtemp(prefix="chatproxy-burst-"))
    settings = {
        "DATABASE_URL": args.database or f"sqlite:///{logs / 'burst.db'}",
        "CHATPROXY_AUTH": "keys",
    }
    if args.redis:
        settings["REDIS_URL"] = args.redis
    simulator, simulator_url = start_simulator(logs)
    gunicorn = None
    try:
        name, key = make_key(settings, simulator_url, args.tokens_per_day)
        gunicorn, url = start_gunicorn(simulator_url, args.workers, logs, settings)
        responses = asyncio.run(burst(url, key, args.requests, args.slow))
        statuses = Counter(r.status_code for r in responses)
        answered = [r.json()["usage"]["total_tokens"] for r in responses if r.status_code == 200]
        deadline = time.monotonic() + 30
        while (spent := ledger_tokens(settings, name))[0] < len(answered):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        quota = args.tokens_per_day
        print(f"answers: {'slow (1 s)' if args.slow else 'fast'}, workers: {args.workers}")
        print(f"statuses: {dict(sorted(statuses.items()))}")
        print(f"tokens the clients were answered with: {sum(answered)}")
        biggest = max(answered, default=0)
        print(f"ledger: {spent[0]} requests, {spent[1]} tokens; quota {quota}")
        print(f"largest answer: {biggest} tokens")
        print(f"ledger / quota: {spent[1] / quota:.2f}; bound (quota + largest): {quota + biggest}")
        return 0
    finally:
        if gunicorn is not None:
            kill(gunicorn)
        kill(simulator)


if __name__ == "__main__":
    sys.exit(main())
