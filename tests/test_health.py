"""`/healthz` and `/readyz`: alive, and ready only when the database (and Redis) answer."""

from __future__ import annotations

from collections.abc import Callable

import httpx2

from tests.conftest import TEST_DATABASE_URL, LiveServer
from tests.servers import free_port


def test_ready_when_the_store_answers(api_server: LiveServer) -> None:
    response = httpx2.get(f"{api_server.url}/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    name = "PostgreSQL" if TEST_DATABASE_URL else "SQLite"
    assert body["checks"]["database"] == f"{name} reachable"
    assert httpx2.get(f"{api_server.url}/healthz").json() == {"status": "ok"}


def test_not_ready_names_postgresql_when_it_is_unreachable(
    make_server_with: Callable[..., LiveServer],
) -> None:
    server = make_server_with(DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/test")
    response = httpx2.get(f"{server.url}/readyz", timeout=20)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["database"].startswith("PostgreSQL unreachable: ")
    # Alive all the same: a restart would not help.
    assert httpx2.get(f"{server.url}/healthz").status_code == 200


def test_not_ready_names_redis_when_it_is_unreachable(
    make_server_with: Callable[..., LiveServer],
) -> None:
    server = make_server_with(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    response = httpx2.get(f"{server.url}/readyz", timeout=20)
    assert response.status_code == 503
    assert response.json()["checks"]["redis"].startswith("unreachable")
