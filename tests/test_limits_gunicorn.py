"""Rate limits and quotas hold across gunicorn's workers (Redis at 127.0.0.1:6379, the store)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx2
import pytest
from sqlalchemy import create_engine, func, select

from chatproxy import create_app
from chatproxy.access.keys import issue_key
from chatproxy.config import database_url as database_url_setting
from chatproxy.simulator import Simulator
from chatproxy.store.models import UsageDay
from tests.servers import REDIS_URL, Launcher, redis_is_there, upstream_settings


@pytest.fixture
def launch(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path_factory.mktemp("gunicorn-limits"), database_url)
    yield launcher
    launcher.stop_all()


def test_rpm_holds_across_four_workers_sharing_redis(
    launch: Launcher, simulator: Simulator, database_url: str
) -> None:
    redis_is_there()
    settings = upstream_settings(simulator, CHATPROXY_AUTH="keys", DATABASE_URL=database_url)
    app = create_app(settings)
    with app.app_context():
        key = issue_key(f"redis-{uuid.uuid4().hex[:10]}", rpm=30)
    server = launch("four-workers", **settings, WORKERS="4", REDIS_URL=REDIS_URL)

    async def ask_sixty() -> list[httpx2.Response]:
        limits = httpx2.Limits(max_connections=60)
        async with httpx2.AsyncClient(base_url=server.url, timeout=30, limits=limits) as client:
            return await asyncio.gather(
                *(
                    client.get(
                        "/callChatGPT",
                        params={"input": f"question {i}"},
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    for i in range(60)
                )
            )

    started = asyncio.get_event_loop_policy().new_event_loop()
    try:
        before = started.time()
        responses = started.run_until_complete(ask_sixty())
        took = started.time() - before
    finally:
        started.close()
    assert took < 10, f"the 60 requests took {took:.1f} s"
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 30 + [429] * 30
    for refused in (r for r in responses if r.status_code == 429):
        assert 0 < int(refused.headers["Retry-After"]) <= 60
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    # The work was spread: more than one worker answered (each logs its own pid at boot).
    assert server.log().count("Booting worker") == 4


@pytest.mark.parametrize("latency", [0, 1], ids=["fast answers", "1-second answers"])
def test_a_daily_quota_holds_across_two_workers_under_thirty_at_once(
    launch: Launcher, simulator: Simulator, database_url: str, latency: float
) -> None:
    """Reservations are atomic across processes: the database, not a worker's memory, holds them."""
    redis_is_there()
    settings = upstream_settings(simulator, CHATPROXY_AUTH="keys", DATABASE_URL=database_url)
    name = f"budget-{uuid.uuid4().hex[:10]}"
    with create_app(settings).app_context():
        key = issue_key(name, tokens_per_day=300, tpm=100_000)
    server = launch("budget", **settings, WORKERS="2", REDIS_URL=REDIS_URL)
    text = f"a question [[sim: latency={latency}]]" if latency else "a question"

    async def thirty() -> list[httpx2.Response]:
        limits = httpx2.Limits(max_connections=30)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx2.AsyncClient(
            base_url=server.url, timeout=60, limits=limits, headers=headers
        ) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/v1/chat/completions",
                        json={
                            "model": "gpt-4o-mini",
                            "max_tokens": 40,
                            "messages": [{"role": "user", "content": f"{text} {i}"}],
                        },
                    )
                    for i in range(30)
                )
            )

    responses = asyncio.run(thirty())
    answered = [r.json()["usage"]["total_tokens"] for r in responses if r.status_code == 200]
    assert answered
    assert {r.status_code for r in responses} <= {200, 429}
    engine = create_engine(database_url_setting(database_url))
    deadline = time.monotonic() + 15
    while True:
        with engine.connect() as connection:
            spent = connection.execute(
                select(
                    func.coalesce(func.sum(UsageDay.requests), 0),
                    func.coalesce(func.sum(UsageDay.prompt_tokens + UsageDay.completion_tokens), 0),
                ).where(UsageDay.key_name == name)
            ).one()
        if spent[0] >= len(answered) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    engine.dispose()
    assert spent[0] == len(answered)
    assert spent[1] == sum(answered)
    assert spent[1] <= 300 + max(answered)
