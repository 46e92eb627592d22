"""Behind a proxy: X-Forwarded-For counts only when CHATPROXY_TRUSTED_PROXIES trusts a proxy."""

from __future__ import annotations

from collections.abc import Callable

import httpx2
import pytest

from tests.conftest import LiveServer


def statuses(server: LiveServer, forwarded_for: list[str]) -> list[int]:
    """The status of `GET /v1/models` sent once with each X-Forwarded-For value."""
    return [
        httpx2.get(f"{server.url}/v1/models", headers={"X-Forwarded-For": address}).status_code
        for address in forwarded_for
    ]


@pytest.mark.parametrize(
    ("trusted", "expected"),
    [
        # One proxy trusted: each forwarded address has its own two requests a minute.
        ("1", [200, 200, 429, 200, 200, 429]),
        # None trusted: the header is anyone's claim; every request is this client's.
        ("0", [200, 200, 429, 429, 429, 429]),
    ],
    ids=["trusted", "forged"],
)
def test_rate_limit_per_address_sees_the_client_behind_a_trusted_proxy(
    make_server_with: Callable[..., LiveServer], trusted: str, expected: list[int]
) -> None:
    server = make_server_with(CHATPROXY_IP_RPM="2", CHATPROXY_TRUSTED_PROXIES=trusted)
    addresses = ["203.0.113.7"] * 3 + ["198.51.100.9"] * 3
    assert statuses(server, addresses) == expected
