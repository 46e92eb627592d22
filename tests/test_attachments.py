"""Questions with images, through a real server to the simulator: JSON `images` and multipart
`image`, what the upstream receives, refusals, the store, history, `/api/attachments/ID`, tokens.

The store is the session's database (SQLite, or PostgreSQL with TEST_DATABASE_URL).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from chatproxy.images import image_tokens
from chatproxy.prices import PRICES, answer_cost
from chatproxy.simulator import Simulator
from chatproxy.tokens import count_messages
from tests.conftest import LiveServer
from tests.sample_files import data_url, gif, jpeg, png, webp
from tests.servers import make_key

VISION = "gpt-4o"
LARGE = png(64, 64) + b"\x00" * 4096  # over the 2,048 bytes the refusal tests allow


@pytest.fixture
def http(api_server: LiveServer) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=api_server.url, timeout=20) as client:
        yield client


def sent_user_content(simulator: Simulator) -> Any:
    """The `content` of the last user message the upstream received."""
    messages = simulator.requests[-1]["json"]["messages"]
    return [m for m in messages if m["role"] == "user"][-1]["content"]


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def ask(http: httpx2.Client, **body: Any) -> dict[str, Any]:
    response = http.post("/callChatGPT", json={"format": "json", "model": VISION, **body})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(
    ("image", "described"),
    [
        (png(64, 48), "PNG, 64×48 px"),
        (jpeg(4000, 3000, exif_bytes=100_000), "JPEG, 4000×3000 px"),
        (webp(300, 200), "WEBP, 300×200 px"),
        (gif(10, 20), "GIF, 10×20 px"),
    ],
    ids=["png", "jpeg", "webp", "gif"],
)
def test_json_image_reaches_the_upstream_intact(
    http: httpx2.Client, simulator: Simulator, image: bytes, described: str
) -> None:
    # Declared as PNG whatever it is: the type sent upstream is the one its bytes say.
    answer = ask(http, input="What is in this picture?", images=[data_url(image)])

    assert f"Image 1: {described}, sha256 {digest(image)}." in answer["answer"]
    content = sent_user_content(simulator)
    assert content[0] == {"type": "text", "text": "What is in this picture?"}
    assert content[1]["type"] == "image_url"
    media_type = {"P": "png", "J": "jpeg", "W": "webp", "G": "gif"}[described[0]]
    assert content[1]["image_url"]["url"].startswith(f"data:image/{media_type};base64,")


def test_multipart_images_with_detail(http: httpx2.Client, simulator: Simulator) -> None:
    first, second = png(32, 32), png(640, 480, (0, 90, 200))
    response = http.post(
        "/callChatGPT",
        data={"input": "Compare these", "model": VISION, "detail": "low", "format": "json"},
        files=[
            ("image", ("a.png", first, "image/png")),
            ("image", ("b.bin", second, "application/octet-stream")),
        ],
    )

    assert response.status_code == 200, response.text
    answer = response.json()["answer"]
    assert f"Image 1: PNG, 32×32 px, sha256 {digest(first)}." in answer
    assert f"Image 2: PNG, 640×480 px, sha256 {digest(second)}." in answer
    parts = sent_user_content(simulator)
    assert [part["image_url"]["detail"] for part in parts[1:]] == ["low", "low"]


def test_https_image_url_is_passed_on_not_fetched(
    http: httpx2.Client, simulator: Simulator
) -> None:
    url = "https://images.example.invalid/cat.png"
    answer = ask(http, input="What is this?", images=[{"url": url, "detail": "high"}])

    assert "Image 1: https URL, not fetched." in answer["answer"]
    assert sent_user_content(simulator)[1] == {
        "type": "image_url",
        "image_url": {"url": url, "detail": "high"},
    }


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ({"images": ["data:image/png;base64,not*base64"]}, 400, "images[0]", "invalid_image"),
        ({"images": [data_url(b"GIF-ish but not" * 3)]}, 400, "images[0]", "invalid_image"),
        ({"images": [data_url(b"%PDF-1.4 ...")]}, 400, "images[0]", "invalid_image"),
        ({"images": ["http://example.com/a.png"]}, 400, "images[0]", "invalid_image"),
        ({"images": ["file:///etc/passwd"]}, 400, "images[0]", "invalid_image"),
        (
            {"images": [{"url": data_url(png(2, 2)), "detail": "max"}]},
            400,
            "images[0].detail",
            None,
        ),
        ({"images": "data:image/png;base64,AAAA"}, 400, "images", "invalid_type"),
        ({"images": [data_url(png(2, 2))] * 3}, 400, "images", "too_many_images"),
        ({"images": [data_url(LARGE)]}, 413, "images[0]", "image_too_large"),
        (
            {"images": [data_url(png(2, 2))], "model": "gpt-3.5-turbo"},
            400,
            "model",
            "image_not_supported",
        ),
    ],
    ids=[
        "bad-base64",
        "not-an-image",
        "pdf-as-image",
        "plain-http",
        "file-url",
        "bad-detail",
        "not-a-list",
        "too-many",
        "too-large",
        "model-without-vision",
    ],
)
def test_bad_images_are_refused_naming_the_part(
    make_server_with: Any,
    simulator: Simulator,
    body: dict[str, Any],
    status: int,
    param: str,
    code: str | None,
) -> None:
    server = make_server_with(
        CHATPROXY_MODELS="gpt-4o-mini,gpt-4o,gpt-3.5-turbo",
        CHATPROXY_MAX_IMAGES="2",
        CHATPROXY_MAX_IMAGE_BYTES="2048",
    )
    asked_before = len(simulator.requests)
    response = httpx2.post(
        f"{server.url}/callChatGPT", json={"input": "What is it?", "model": VISION, **body}
    )

    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param
    if code:
        assert error["code"] == code
    if code == "image_not_supported":
        assert "gpt-3.5-turbo" in error["message"]
    assert len(simulator.requests) == asked_before  # nothing was asked


def test_multipart_image_refusals_name_the_part(make_server_with: Any) -> None:
    server = make_server_with(CHATPROXY_MAX_IMAGE_BYTES="2048")
    url = f"{server.url}/callChatGPT"
    fields = {"input": "What is it?", "model": VISION}

    not_image = httpx2.post(url, data=fields, files={"image": ("x.png", b"hello", "image/png")})
    too_large = httpx2.post(url, data=fields, files={"image": ("y.png", LARGE)})

    assert not_image.status_code == 400
    assert not_image.json()["error"]["param"] == "image"
    assert too_large.status_code == 413
    assert too_large.json()["error"]["code"] == "image_too_large"


def test_body_over_the_upload_limit_is_413(make_server_with: Any) -> None:
    server = make_server_with(CHATPROXY_MAX_UPLOAD_BYTES="65536")
    big = data_url(png(64, 64) + b"\x00" * 100_000)
    response = httpx2.post(
        f"{server.url}/callChatGPT", json={"input": "x", "model": VISION, "images": [big]}
    )

    assert response.status_code == 413
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_image_is_stored_served_back_and_sent_again_in_history(
    http: httpx2.Client, simulator: Simulator
) -> None:
    image = png(120, 80)
    first = ask(http, input="Remember this picture", images=[data_url(image)])
    conversation_id = first["conversation_id"]

    second = ask(http, input="And what colour was it?", conversation_id=conversation_id)

    messages = simulator.requests[-1]["json"]["messages"]
    assert messages[0]["content"][1]["image_url"]["url"] == data_url(image)
    assert messages[-1]["content"] == "And what colour was it?"
    assert "Image" not in second["answer"]  # the image went with its question, not this one
    shown = http.get(f"/api/conversations/{conversation_id}").json()
    listed = shown["messages"][0]["attachments"]
    assert [(a["kind"], a["media_type"], a["width"], a["height"]) for a in listed] == [
        ("image", "image/png", 120, 80)
    ]
    served = http.get(f"/api/attachments/{listed[0]['id']}")
    assert served.status_code == 200
    assert served.content == image
    assert served.headers["content-type"] == "image/png"
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["content-disposition"].startswith("inline;")
    # Deleted with its conversation.
    assert http.delete(f"/api/conversations/{conversation_id}").status_code in (200, 204)
    assert http.get(f"/api/attachments/{listed[0]['id']}").status_code == 404


def test_attachment_is_served_to_its_owner_only(make_server_with: Any, app_env: Any) -> None:
    server = make_server_with(CHATPROXY_AUTH="keys")
    alice = {"Authorization": f"Bearer {make_key({**app_env, 'CHATPROXY_AUTH': 'keys'})}"}
    bob = {"Authorization": f"Bearer {make_key({**app_env, 'CHATPROXY_AUTH': 'keys'})}"}
    image = png(10, 10)
    asked = httpx2.post(
        f"{server.url}/callChatGPT",
        json={"input": "mine", "model": VISION, "images": [data_url(image)], "format": "json"},
        headers=alice,
    )
    assert asked.status_code == 200, asked.text
    path = f"/api/conversations/{asked.json()['conversation_id']}"
    conversation = httpx2.get(f"{server.url}{path}", headers=alice).json()
    attachment_id = conversation["messages"][0]["attachments"][0]["id"]
    attachment = f"{server.url}/api/attachments/{attachment_id}"

    as_alice = httpx2.get(attachment, headers=alice)
    as_bob = httpx2.get(attachment, headers=bob)
    anonymous = httpx2.get(attachment)
    missing = httpx2.get(f"{server.url}/api/attachments/99999999", headers=alice)

    assert as_alice.content == image
    assert as_bob.status_code == 404
    assert as_bob.json()["error"]["code"] == "attachment_not_found"
    assert anonymous.status_code == 401
    assert missing.status_code == 404


def test_image_tokens_count_in_usage_and_cost(http: httpx2.Client, simulator: Simulator) -> None:
    image = png(1024, 1024)
    answer = ask(http, input="Describe", images=[data_url(image)])

    sent = simulator.requests[-1]["json"]["messages"]
    text_only = count_messages([{"role": "user", "content": "Describe"}], VISION)
    # OpenAI's example: 1024 × 1024 at high detail is 4 tiles, 85 + 4 × 170 = 765 tokens.
    assert image_tokens(1024, 1024, None, VISION) == 765
    assert count_messages(sent, VISION) == text_only + 765
    assert answer["usage"]["prompt_tokens"] == text_only + 765
    assert answer["cost"] == pytest.approx(
        answer_cost(answer["usage"], VISION, asked_model=VISION, prices=PRICES)
    )
    low = ask(http, input="Describe", images=[{"url": data_url(image), "detail": "low"}])
    assert low["usage"]["prompt_tokens"] == text_only + 85


# gpt-4o-mini counts an image at 2,833 tokens and 5,667 a tile: a 2048 × 768 one at high
# detail is 8 tiles, 48,169 tokens; three are more than its window of 128,000.
WIDE = png(2048, 768)


def test_images_too_large_for_the_window_are_refused(
    http: httpx2.Client, simulator: Simulator
) -> None:
    asked_before = len(simulator.requests)
    response = http.post(
        "/callChatGPT",
        json={"input": "Describe", "model": "gpt-4o-mini", "images": [data_url(WIDE)] * 3},
    )
    low = [{"url": data_url(WIDE), "detail": "low"}] * 3
    fits = http.post(
        "/callChatGPT", json={"input": "Describe", "model": "gpt-4o-mini", "images": low}
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert len(simulator.requests) == asked_before + 1  # only the one at low detail
    assert fits.status_code == 200


def test_old_images_are_dropped_before_old_text(http: httpx2.Client, simulator: Simulator) -> None:
    first = ask(http, input="Two wide pictures", model="gpt-4o-mini", images=[data_url(WIDE)] * 2)
    second = ask(
        http,
        input="And this one?",
        model="gpt-4o-mini",
        conversation_id=first["conversation_id"],
        images=[data_url(WIDE)],
    )

    sent = simulator.requests[-1]["json"]["messages"]
    assert sent[0] == {"role": "user", "content": [{"type": "text", "text": "Two wide pictures"}]}
    assert sent[1] == {"role": "assistant", "content": first["answer"]}
    assert sent[2]["content"][1]["type"] == "image_url"
    assert second["dropped_images"] == 2
    assert "dropped_images" not in first


def test_idempotency_key_tells_multipart_images_apart(http: httpx2.Client) -> None:
    fields = {"input": "What is it?", "model": VISION, "format": "json"}
    headers = {"Idempotency-Key": f"attach-{uuid.uuid4().hex}"}

    first = http.post(
        "/callChatGPT", data=fields, files={"image": ("a.png", png(5, 5))}, headers=headers
    )
    again = http.post(
        "/callChatGPT", data=fields, files={"image": ("a.png", png(5, 5))}, headers=headers
    )
    other = http.post(
        "/callChatGPT", data=fields, files={"image": ("a.png", png(6, 6))}, headers=headers
    )

    assert first.status_code == 200, first.text
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json()["answer"] == first.json()["answer"]
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"


@pytest.mark.parametrize("attachment_id", ["0", "2147483648", "509224367944113", "-1", "x"])
def test_attachment_ids_out_of_range_are_404(http: httpx2.Client, attachment_id: str) -> None:
    response = http.get(f"/api/attachments/{attachment_id}")

    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"
