"""`/metrics` through real gunicorn with two workers: the figures are summed across workers."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from chatproxy.simulator import Simulator
from tests.servers import Launcher, upstream_settings


@pytest.fixture
def launch(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path_factory.mktemp("gunicorn-metrics"), database_url)
    yield launcher
    launcher.stop_all()


def value(metrics: str, name: str, **labels: str) -> float:
    """The sample `name{labels}` of a Prometheus text exposition (0 when absent)."""
    for line in metrics.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name) : line.index("}") + 1]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_after_a_load_are_summed_across_workers(
    launch: Launcher, simulator: Simulator, tmp_path: Path
) -> None:
    folder = tmp_path / "metrics"
    # Ten connections per worker at most: with 15 slow streams in flight, the
    # second worker must take some of them, whichever accepts first.
    server = launch(
        "two-workers",
        **upstream_settings(simulator, WORKERS="2", WORKER_CONNECTIONS="10"),
        PROMETHEUS_MULTIPROC_DIR=str(folder),
    )

    async def load() -> list[httpx2.Response]:
        async with httpx2.AsyncClient(base_url=server.url, timeout=30) as client:
            slow = "[[sim: chunks=5 delay=0.3]]"
            streams = [
                client.get("/callChatGPT", params={"input": f"s{i} {slow}", "stream": "1"})
                for i in range(15)
            ]
            whole = [client.get("/callChatGPT", params={"input": f"q{i}"}) for i in range(15)]
            return await asyncio.gather(*streams, *whole)

    responses = asyncio.run(load())
    assert [r.status_code for r in responses] == [200] * 30
    # Each worker that counted a request keeps its own file; both took some of the load.
    assert len(list(folder.glob("counter_*.db"))) == 2

    metrics = httpx2.get(f"{server.url}/metrics").text
    # 30 answered on /callChatGPT, whichever worker took each.
    assert value(metrics, "chatproxy_requests_total", route="/callChatGPT", status="200") == 30
    assert (
        value(metrics, "chatproxy_upstream_latency_seconds_count", path="/chat/completions") == 30
    )
    assert value(metrics, "chatproxy_time_to_first_token_seconds_count", path="completions") == 15
    completion = value(
        metrics, "chatproxy_tokens_total", key="open", model="gpt-4o-mini", kind="completion"
    )
    assert completion > 0
    assert value(metrics, "chatproxy_streams_in_flight") == 0
