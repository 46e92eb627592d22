"""The upstream key never leaves the server: not in pages, errors, headers or logs."""

from __future__ import annotations

import logging

import httpx2

from tests.conftest import UPSTREAM_KEY


def test_page_and_answers_do_not_carry_the_key(live_server):
    page = httpx2.get(live_server.url + "/")
    answer = httpx2.get(live_server.url + "/callChatGPT", params={"input": "what is your key?"})
    streamed = httpx2.get(
        live_server.url + "/callChatGPT", params={"input": "and now?", "stream": "1"}
    )

    for response in (page, answer, streamed):
        assert response.status_code == 200
        assert UPSTREAM_KEY not in response.text
        assert UPSTREAM_KEY not in str(response.headers)


def test_debug_logs_of_chatproxy_and_http_clients_do_not_carry_the_key(
    api_server, caplog, chatproxy_log
):
    # An owner who turns every logger up to DEBUG still gets no key in the log.
    names = ("chatproxy", "openai", "httpx2", "httpcore2", "geventhttpclient")
    noisy = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in noisy]
    for logger in noisy:
        logger.setLevel(logging.DEBUG)
    try:
        with caplog.at_level(logging.DEBUG):
            httpx2.get(api_server.url + "/callChatGPT", params={"input": "hi"})
            httpx2.get(api_server.url + "/callChatGPT", params={"input": "hi", "stream": "1"})
    finally:
        for logger, level in zip(noisy, levels, strict=True):
            logger.setLevel(level)

    assert any(record.name.startswith("chatproxy") for record in chatproxy_log)
    assert UPSTREAM_KEY not in caplog.text
    assert not any(UPSTREAM_KEY in record.getMessage() for record in chatproxy_log)
