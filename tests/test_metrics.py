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


TOKEN = "metrics-token-for-the-tests-0123456789"
ELSEWHERE = "203.0.113.7"  # an address of TEST-NET-3: no loopback


def scrape(client, address: str, **headers: str):  # type: ignore[no-untyped-def]
    """GET /metrics as a client at `address` (REMOTE_ADDR, as a WSGI server sets it)."""
    return client.get("/metrics", headers=headers, environ_base={"REMOTE_ADDR": address})


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_metrics_answer_this_host(make_app, address: str) -> None:
    response = scrape(make_app().test_client(), address)

    assert response.status_code == 200
    assert "chatproxy_requests_total" in response.text


@pytest.mark.parametrize("token", [None, TOKEN])
@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token-0123456789", f"Basic {TOKEN}", "Bearer"]
)
def test_metrics_refuse_another_host_without_the_token(make_app, token, authorization) -> None:
    app = make_app(**({"CHATPROXY_METRICS_TOKEN": token} if token else {}))
    headers = {"Authorization": authorization} if authorization else {}

    response = scrape(app.test_client(), ELSEWHERE, **headers)

    assert response.status_code == 403
    error = response.json["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "permission_error" and "CHATPROXY_METRICS_TOKEN" in error["message"]
    assert "chatproxy_" not in response.text and TOKEN not in response.text


def test_metrics_answer_another_host_with_the_token(make_app) -> None:
    app = make_app(CHATPROXY_METRICS_TOKEN=TOKEN)

    response = scrape(app.test_client(), ELSEWHERE, Authorization=f"Bearer {TOKEN}")

    assert response.status_code == 200
    assert "chatproxy_requests_total" in response.text


@pytest.mark.parametrize(("forwarded_for", "status"), [(ELSEWHERE, 403), ("127.0.0.1", 200)])
def test_behind_a_trusted_proxy_the_client_is_the_one_it_names(
    make_server_with, forwarded_for: str, status: int
) -> None:
    server = make_server_with(CHATPROXY_TRUSTED_PROXIES="1")

    response = httpx2.get(f"{server.url}/metrics", headers={"X-Forwarded-For": forwarded_for})

    assert response.status_code == status
