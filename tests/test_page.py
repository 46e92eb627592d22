"""The pages as served (the Q&A page and the console): strict security headers, nothing
inline, libraries vendored."""

from __future__ import annotations

import re

import httpx2
import pytest

PAGES = pytest.mark.parametrize("page", ["/", "/admin"])


@PAGES
def test_page_is_served_with_a_strict_policy(live_server, page):
    response = httpx2.get(live_server.url + page)

    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"


@PAGES
def test_page_has_no_inline_script_or_style_and_no_cdn(live_server, page):
    html = httpx2.get(live_server.url + page).text

    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts and all("src=" in tag for tag in scripts)
    assert " style=" not in html and "<style" not in html
    assert not re.search(r"""(src|href)=["']https?://""", html)


@PAGES
def test_every_asset_the_page_names_is_served(live_server, page):
    html = httpx2.get(live_server.url + page).text
    assets = re.findall(r"""(?:src|href)=["'](/static/[^"']+)["']""", html)

    assert len(assets) >= 5
    for path in assets:
        assert httpx2.get(live_server.url + path).status_code == 200, path
