"""Images (`/v1/images/generations`, `/v1/images/edits`) through a real server, with the official
SDK's own calls: the upstream's images come back as it sent them, whole or as events, charged
by the image (dall-e, by size and quality) or the token (gpt-image-1); the worst case of `n`
images is reserved first; a model the key may not use is refused."""

from __future__ import annotations

import base64
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import openai
import pytest
from sqlalchemy import func, select

from chatproxy.access.keys import issue_key
from chatproxy.simulator.media_wire import TINY_PNG
from chatproxy.store.database import db
from chatproxy.store.models import Reservation
from chatproxy.tokens import PRICES
from tests.conftest import LiveServer, serve
from tests.test_responses_api import charged, ledger

DALLE2, DALLE3, GPT_IMAGE = "dall-e-2", "dall-e-3", "gpt-image-1"
MODELS = f"gpt-4o-mini,{DALLE2},{DALLE3},{GPT_IMAGE}"
PICTURE = TINY_PNG + os.urandom(20_000)  # an "image" to edit, its bytes checked on arrival


@pytest.fixture(scope="module")
def server(make_app):  # type: ignore[no-untyped-def]
    with serve(make_app(CHATPROXY_AUTH="keys", CHATPROXY_MODELS=MODELS)) as live:
        yield live


def make_key(server: LiveServer, **limits: Any) -> tuple[str, str]:
    name = f"img-{uuid.uuid4().hex[:10]}"
    with server.app.app_context():
        return name, issue_key(name, **limits)


def sdk(server: LiveServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=30)


def per_image(model: str, key: str) -> float:
    return dict(PRICES[model].per_image)[key]


@pytest.mark.parametrize(
    "model, size, quality, price_key",
    [
        (DALLE2, "512x512", None, "512x512"),
        (DALLE3, "1792x1024", "hd", "hd 1792x1024"),
        (DALLE3, None, None, "1024x1024"),
    ],
)
def test_dall_e_images_are_charged_by_the_image_of_their_size(
    server, model, size, quality, price_key
):
    name, key = make_key(server)
    extra = {k: v for k, v in {"size": size, "quality": quality}.items() if v is not None}
    n = 2 if model == DALLE2 else 1
    result = sdk(server, key).images.generate(model=model, prompt="a lighthouse", n=n, **extra)
    assert len(result.data) == n and result.data[0].url.startswith("https://")
    requests, _, _, cost = ledger(server, name)[model]
    assert requests == 1 and cost == pytest.approx(n * per_image(model, price_key))


def test_b64_json_images_come_back_as_the_upstream_sent_them(server):
    _, key = make_key(server)
    result = sdk(server, key).images.generate(
        model=DALLE2, prompt="a cat", response_format="b64_json"
    )
    assert base64.b64decode(result.data[0].b64_json) == TINY_PNG


def test_the_default_model_is_sent_and_checked(server):
    name, key = make_key(server)
    result = sdk(server, key).images.generate(prompt="a dog")
    assert result.data and DALLE2 in ledger(server, name)
    _, narrow = make_key(server, models=["gpt-4o-mini"])
    with pytest.raises(openai.PermissionDeniedError):
        sdk(server, narrow).images.generate(prompt="a dog")


def test_gpt_image_is_charged_by_its_token_usage(server):
    name, key = make_key(server)
    result = sdk(server, key).images.generate(model=GPT_IMAGE, prompt="a fox", quality="low")
    usage = result.usage
    assert usage is not None and usage.output_tokens == 272
    requests, prompt, completion, cost = ledger(server, name)[GPT_IMAGE]
    assert (requests, prompt, completion) == (1, usage.input_tokens, usage.output_tokens)
    price = PRICES[GPT_IMAGE]
    expected = (usage.input_tokens * price.input + usage.output_tokens * price.output) / 1e6
    assert cost == pytest.approx(expected)


def test_a_streamed_generation_comes_as_partial_then_completed_events(server):
    name, key = make_key(server)
    events = list(
        sdk(server, key).images.generate(
            model=GPT_IMAGE, prompt="a boat", stream=True, partial_images=2, n=2, quality="medium"
        )
    )
    kinds = [event.type for event in events]
    assert kinds == ["image_generation.partial_image"] * 2 + ["image_generation.completed"] * 2
    assert base64.b64decode(events[-1].b64_json) == TINY_PNG
    output = sum(event.usage.output_tokens for event in events[2:])
    requests, prompt, completion, _ = charged(server, name, GPT_IMAGE)
    assert requests == 1 and prompt > 0 and completion == output == 2 * 1056


def test_an_edit_uploads_every_image_intact(server):
    name, key = make_key(server)
    other = PICTURE[:5000]
    result = sdk(server, key).images.edit(
        model=GPT_IMAGE,
        image=[("a.png", PICTURE, "image/png"), ("b.png", other, "image/png")],
        prompt="add a hat",
    )
    assert result.data[0].revised_prompt.endswith(f"images of {len(PICTURE)}, 5000 bytes)")
    usage = result.usage
    assert usage.input_tokens_details.image_tokens > 0
    requests, prompt, completion, cost = ledger(server, name)[GPT_IMAGE]
    assert (requests, prompt, completion) == (1, usage.input_tokens, usage.output_tokens)
    price = PRICES[GPT_IMAGE]
    images = usage.input_tokens_details.image_tokens
    text = usage.input_tokens - images
    expected = text * price.input + images * price.media_input + completion * price.output
    assert cost == pytest.approx(expected / 1e6)


def test_an_edit_without_a_model_gets_dall_e_2_added(server):
    name, key = make_key(server)
    result = sdk(server, key).images.edit(image=("a.png", PICTURE), prompt="make it blue")
    assert f"images of {len(PICTURE)} bytes" in result.data[0].revised_prompt
    requests, _, _, cost = ledger(server, name)[DALLE2]
    assert requests == 1 and cost == pytest.approx(per_image(DALLE2, "1024x1024"))


def test_a_streamed_edit_comes_as_image_edit_events(server):
    name, key = make_key(server)
    events = list(
        sdk(server, key).images.edit(
            model=GPT_IMAGE, image=("a.png", PICTURE), prompt="a hat", stream=True
        )
    )
    assert [event.type for event in events] == ["image_edit.completed"]
    assert charged(server, name, GPT_IMAGE)[0] == 1


def test_the_worst_case_of_n_images_is_reserved_before_the_call(server):
    # Three 1024x1024 dall-e-2 images cost $0.06: held while they are made, they leave
    # nothing of the key's $0.05 a day for another request (one image's $0.02 would).
    name, key = make_key(server, usd_per_day=0.05)
    client = sdk(server, key)
    slow = "a slow picture [[sim: latency=1.5]]"
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.images.generate, model=DALLE2, prompt=slow, n=3)
        deadline = time.monotonic() + 10
        while held(server, name) == 0.0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert held(server, name) == pytest.approx(3 * per_image(DALLE2, "1024x1024"))
        with pytest.raises(openai.RateLimitError) as refused:
            client.images.generate(model=DALLE2, prompt="another", size="256x256")
        assert refused.value.code == "usd_per_day_exceeded"
        assert len(first.result().data) == 3
    assert held(server, name) == 0.0  # settled with what it cost
    assert ledger(server, name)[DALLE2][3] == pytest.approx(0.06)


def held(server: LiveServer, name: str) -> float:
    """USD the key's requests in flight hold."""
    with server.app.app_context():
        found = db.session.execute(
            select(func.coalesce(func.sum(Reservation.cost), 0.0)).where(
                Reservation.key_name == name
            )
        ).scalar_one()
        db.session.remove()
    return float(found)


@pytest.mark.parametrize("route", ["generations", "edits"])
def test_a_model_the_key_may_not_use_is_refused(server, route):
    _, key = make_key(server, models=["gpt-4o-mini"])
    images = sdk(server, key).images
    with pytest.raises(openai.PermissionDeniedError) as refused:
        if route == "edits":
            images.edit(model=GPT_IMAGE, image=("a.png", PICTURE), prompt="x")
        else:
            images.generate(model=GPT_IMAGE, prompt="x")
    assert refused.value.code == "model_not_allowed"


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": DALLE2}, "prompt"),
        ({"model": DALLE2, "prompt": "x", "n": 0}, "n"),
        ({"model": DALLE2, "prompt": "x", "n": 99}, "n"),
        ({"model": DALLE2, "prompt": "x", "size": 512}, "size"),
        ({"model": DALLE2, "prompt": "x", "response_format": "png"}, "response_format"),
    ],
)
def test_bad_image_requests_are_400_before_the_upstream(server, body, param):
    _, key = make_key(server)
    answer = httpx2.post(
        f"{server.url}/v1/images/generations", headers={"Authorization": f"Bearer {key}"}, json=body
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == param


def test_an_edit_without_an_image_is_400(server):
    _, key = make_key(server)
    answer = httpx2.post(
        f"{server.url}/v1/images/edits",
        headers={"Authorization": f"Bearer {key}"},
        data={"prompt": "x", "model": DALLE2},
        files={"mask": ("m.png", TINY_PNG)},
    )
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "image"
