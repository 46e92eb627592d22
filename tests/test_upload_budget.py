"""Attachment bytes in flight per worker (CHATPROXY_UPLOAD_MEMORY_BYTES): a large question waits
for room until the answers before it end, then is answered; small ones never wait."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx2

from tests.sample_files import data_url, png

BIG = png(64, 64) + b"\x00" * 600_000  # a body of about 800 kB: above the 256 kB that wait


def test_a_large_question_waits_for_the_answer_holding_the_room(make_server_with: Any) -> None:
    server = make_server_with(CHATPROXY_UPLOAD_MEMORY_BYTES=str(1024 * 1024))
    budget = server.app.extensions["chatproxy.upload_budget"]
    body = {"model": "gpt-4o", "images": [data_url(BIG)], "format": "json"}
    results: dict[str, Any] = {}

    with httpx2.Client(base_url=server.url, timeout=30) as client:
        with client.stream(
            "POST",
            "/callChatGPT",
            json={**body, "input": "slowly [[sim: chunks=40 delay=0.05]]", "stream": True},
        ) as first:
            lines = first.iter_lines()
            next(line for line in lines if line.startswith("event: delta"))
            held = budget.used
            assert held > 0

            def second() -> None:
                results["second"] = httpx2.post(
                    f"{server.url}/callChatGPT", json={**body, "input": "next"}, timeout=30
                )

            waiting = threading.Thread(target=second)
            waiting.start()
            deadline = time.monotonic() + 10
            while budget.waiting == 0 and time.monotonic() < deadline:
                time.sleep(0.01)  # until the second request waits for room
            assert budget.waiting == 1
            small = client.post("/callChatGPT", json={"input": "a small question"})
            assert small.status_code == 200  # never waits
            assert "second" not in results and budget.used == held  # still waiting
            for _ in lines:  # the first answer to its end: the room is given back
                pass
        waiting.join(timeout=30)

    assert results["second"].status_code == 200, results["second"].text
    assert "- Image 1: PNG, 64×64 px" in results["second"].json()["answer"]
    # Given back once the server has closed the response, just after the client read it.
    deadline = time.monotonic() + 10
    while budget.used and time.monotonic() < deadline:
        time.sleep(0.01)
    assert budget.used == 0
