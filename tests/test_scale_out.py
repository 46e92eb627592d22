"""Two gunicorn instances sharing the store and Redis: one conversation, one set of limits."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest

from chatproxy.simulator import Simulator
from tests.servers import (
    REDIS_URL,
    Gunicorn,
    Launcher,
    make_key,
    redis_is_there,
    upstream_settings,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def two_instances(
    tmp_path_factory: pytest.TempPathFactory, simulator: Simulator, database_url: str
) -> Iterator[tuple[Gunicorn, Gunicorn, dict[str, str]]]:
    redis_is_there()
    launcher = Launcher(tmp_path_factory.mktemp("two-instances"), database_url)
    settings = upstream_settings(simulator, CHATPROXY_AUTH="keys", REDIS_URL=REDIS_URL)
    try:
        first = launcher("instance-a", WORKERS="1", **settings)
        second = launcher("instance-b", WORKERS="1", **settings)
        yield first, second, {**settings, "DATABASE_URL": database_url}
    finally:
        launcher.stop_all()


def test_a_conversation_started_on_one_instance_goes_on_on_the_other(two_instances) -> None:
    first, second, settings = two_instances
    auth = {"Authorization": f"Bearer {make_key(settings)}"}
    started = httpx2.get(
        f"{first.url}/callChatGPT", params={"input": "谁赢了2022年世界杯?"}, headers=auth
    )
    conversation_id = started.headers["X-Conversation-Id"]
    going_on = httpx2.get(
        f"{second.url}/callChatGPT",
        params={"input": "在哪里举办的?", "conversation_id": conversation_id},
        headers=auth,
        timeout=20,
    )
    assert going_on.status_code == 200
    assert "卡塔尔" in going_on.text  # only answerable with the first turn, stored by the other
    stored = httpx2.get(f"{first.url}/api/conversations/{conversation_id}", headers=auth).json()
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"] * 2


def test_a_rate_limit_holds_across_both_instances(two_instances) -> None:
    first, second, settings = two_instances
    auth = {"Authorization": f"Bearer {make_key(settings, rpm=6)}"}
    statuses = [
        httpx2.get(f"{server.url}/v1/models", headers=auth).status_code
        for _ in range(6)
        for server in (first, second)
    ]
    assert sorted(statuses) == [200] * 6 + [429] * 6


def test_a_conversation_with_an_image_goes_on_on_the_other_instance(
    two_instances, simulator: Simulator
) -> None:
    from tests.sample_files import data_url, png

    first, second, settings = two_instances
    auth = {"Authorization": f"Bearer {make_key(settings)}"}
    image = png(64, 32)
    started = httpx2.post(
        f"{first.url}/callChatGPT",
        json={"input": "Remember this", "model": "gpt-4o", "images": [data_url(image)]},
        headers=auth,
        timeout=20,
    )
    assert started.status_code == 200, started.text
    conversation_id = started.headers["X-Conversation-Id"]

    going_on = httpx2.post(
        f"{second.url}/callChatGPT",
        json={"input": "What was it?", "conversation_id": conversation_id},
        headers=auth,
        timeout=20,
    )

    assert going_on.status_code == 200, going_on.text
    # The other instance sent the image stored by the first, byte for byte, in the history.
    sent = simulator.requests[-1]["json"]["messages"]
    assert sent[0]["content"][1] == {"type": "image_url", "image_url": {"url": data_url(image)}}
    shown = httpx2.get(f"{second.url}/api/conversations/{conversation_id}", headers=auth).json()
    attachment_id = shown["messages"][0]["attachments"][0]["id"]
    served = httpx2.get(f"{second.url}/api/attachments/{attachment_id}", headers=auth)
    assert served.content == image
