"""Rate limits hold across gunicorn's workers when they share Redis (127.0.0.1:6379)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import httpx2
import pytest

from chatproxy import create_app
from chatproxy.access.keys import issue_key
from chatproxy.simulator import Simulator
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
