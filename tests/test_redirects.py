"""Routing's redirects name a path on this server, never the host a client's header made up."""

from __future__ import annotations

import pytest

from tests.conftest import raw_http


def redirect_to(server_url: str, path: str, headers: str = "Host: evil.example\r\n") -> str:
    """The `Location` of the answer to `GET path`; fails unless it is a redirect."""
    answer = raw_http(
        server_url, f"GET {path} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n".encode()
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].split()[1] in ("301", "302", "307", "308"), lines[0]
    assert b"evil" not in body
    (location,) = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Location:")]
    return location


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/v1//models", "/v1/models"),
        ("/api//conversations?q=a%20b", "/api/conversations?q=a%20b"),
    ],
)
def test_a_merged_slash_redirect_is_relative(api_server, path, location):
    assert redirect_to(api_server.url, path) == location


def test_a_forwarded_host_from_a_trusted_proxy_is_not_named_either(make_server_with):
    server = make_server_with(CHATPROXY_TRUSTED_PROXIES="1")

    location = redirect_to(
        server.url, "/v1//models", "Host: good.example\r\nX-Forwarded-Host: evil.example\r\n"
    )

    assert location == "/v1/models"
