"""Attachments kept and carried: export and import round trip, the Markdown export naming
them, Regenerate and Continue sending them again, `/v1/chat/completions` passing content
parts on untouched.

The store is the session's database (SQLite, or PostgreSQL with TEST_DATABASE_URL).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from chatproxy.simulator import Simulator
from tests.conftest import LiveServer
from tests.sample_files import b64, data_url, pdf, png

VISION = "gpt-4o"


@pytest.fixture
def http(api_server: LiveServer) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=api_server.url, timeout=20) as client:
        yield client


def ask_with_attachments(http: httpx2.Client, image: bytes, **extra: Any) -> dict[str, Any]:
    response = http.post(
        "/callChatGPT",
        json={
            "input": "Does the chart match the report?",
            "model": VISION,
            "images": [data_url(image)],
            "files": [{"name": "report.pdf", "content_base64": b64(pdf("Sales doubled"))}],
            "format": "json",
            **extra,
        },
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_export_and_import_round_trip_keeps_attachments(
    http: httpx2.Client, simulator: Simulator
) -> None:
    image = png(160, 90)
    conversation_id = ask_with_attachments(http, image)["conversation_id"]

    markdown = http.get(f"/api/conversations/{conversation_id}/export", params={"format": "md"})
    exported = http.get(f"/api/conversations/{conversation_id}/export", params={"format": "json"})
    data = exported.json()

    assert (
        "_Attached: file report.pdf (application/pdf, "
        f"{len(pdf('Sales doubled'))} B) · image (image/png, 160×90 px, " in markdown.text
    )
    question = data["messages"][0]["content"]
    assert question == [
        {"type": "text", "text": "Does the chart match the report?"},
        {"type": "text", "text": '<file name="report.pdf">\nSales doubled\n</file>'},
        {"type": "image_url", "image_url": {"url": data_url(image)}},
    ]
    assert data["metadata"]["tree"][0]["content"] == question

    imported = http.post("/api/conversations/import", json=data)
    assert imported.status_code == 201, imported.text
    copy = imported.json()
    listed = copy["messages"][0]["attachments"]
    assert [(a["kind"], a["name"], a["media_type"]) for a in listed] == [
        ("file", "report.pdf", "text/plain"),  # an export holds the PDF's text, not its bytes
        ("image", None, "image/png"),
    ]
    assert http.get(f"/api/attachments/{listed[1]['id']}").content == image
    # The copy goes on with its images and files in the history, as the original would.
    http.post(
        "/callChatGPT",
        json={"input": "And now?", "model": VISION, "conversation_id": copy["id"]},
    )
    assert simulator.requests[-1]["json"]["messages"][0]["content"] == question


@pytest.mark.parametrize(
    "content",
    [
        [{"type": "image_url", "image_url": {"url": data_url(b"not an image")}}],
        [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}],
        [{"type": "input_audio", "input_audio": {}}],
    ],
    ids=["not-an-image", "file-url", "other-part"],
)
def test_import_refuses_bad_content_parts(http: httpx2.Client, content: list[Any]) -> None:
    response = http.post(
        "/api/conversations/import", json={"messages": [{"role": "user", "content": content}]}
    )

    assert response.status_code == 400
    assert "messages[0].content[0]" in response.json()["error"]["message"]


def test_regenerate_sends_the_images_again(http: httpx2.Client, simulator: Simulator) -> None:
    image = png(48, 48)
    conversation_id = ask_with_attachments(http, image)["conversation_id"]

    again = http.post(f"/api/conversations/{conversation_id}/regenerate", json={"format": "json"})

    assert again.status_code == 200, again.text
    assert "- Image 1: PNG, 48×48 px" in again.json()["answer"]
    assert "- File report.pdf: 13 characters." in again.json()["answer"]
    sent = simulator.requests[-1]["json"]["messages"][-1]["content"]
    assert sent[-1] == {"type": "image_url", "image_url": {"url": data_url(image)}}


def test_v1_chat_completions_passes_content_parts_on_untouched(
    http: httpx2.Client, simulator: Simulator
) -> None:
    body = {
        "model": VISION,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    # As a client wrote it: a declared type that is not the bytes', and detail.
                    {
                        "type": "image_url",
                        "image_url": {"url": data_url(png(8, 8), "image/jpeg"), "detail": "low"},
                    },
                ],
            }
        ],
    }

    response = http.post("/v1/chat/completions", json=body)

    assert response.status_code == 200, response.text
    assert simulator.requests[-1]["json"]["messages"] == body["messages"]
    assert "- Image 1: PNG, 8×8 px" in response.json()["choices"][0]["message"]["content"]
