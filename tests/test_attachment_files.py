"""Questions with files, through a real server to the simulator: text and code, PDF, Word .docx
as named context; refusals (kind, scan, size, count, window); stored and served back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from chatproxy.simulator import Simulator
from tests.conftest import LiveServer
from tests.sample_files import b64, docx, pdf, png, scanned_pdf

CODE = 'def greet(name):\n    return f"Hello, {name}!"\n'


@pytest.fixture
def http(api_server: LiveServer) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=api_server.url, timeout=20) as client:
        yield client


def sent_user_content(simulator: Simulator) -> Any:
    messages = simulator.requests[-1]["json"]["messages"]
    return [m for m in messages if m["role"] == "user"][-1]["content"]


@pytest.mark.parametrize(
    ("name", "data", "text"),
    [
        ("notes.md", b"# Plan\n\n- ship attachments\n", "# Plan\n\n- ship attachments\n"),
        ("greet.py", CODE.encode(), CODE),
        ("table.csv", "城市,人口\n上海,2487\n".encode(), "城市,人口\n上海,2487\n"),
        (
            "report.pdf",
            pdf("Quarterly revenue rose 12 percent"),
            "Quarterly revenue rose 12 percent",
        ),
        (
            "letter.docx",
            docx("Dear reader,", "Attachments work."),
            "Dear reader,\nAttachments work.",
        ),
    ],
    ids=["markdown", "code", "csv-chinese", "pdf", "docx"],
)
def test_file_text_reaches_the_upstream_as_named_context(
    http: httpx2.Client, simulator: Simulator, name: str, data: bytes, text: str
) -> None:
    response = http.post(
        "/callChatGPT",
        json={
            "input": "Summarise the file",
            "files": [{"name": name, "content_base64": b64(data)}],
            "format": "json",
        },
    )

    assert response.status_code == 200, response.text
    assert f"File {name}: {len(text)} characters." in response.json()["answer"]
    content = sent_user_content(simulator)
    assert content == [
        {"type": "text", "text": "Summarise the file"},
        {"type": "text", "text": f'<file name="{name}">\n{text}\n</file>'},
    ]


def test_multipart_file_and_image_together(http: httpx2.Client, simulator: Simulator) -> None:
    response = http.post(
        "/callChatGPT",
        data={"input": "Does the chart match the report?", "model": "gpt-4o", "format": "json"},
        files=[
            ("file", ("report.pdf", pdf("Sales doubled"), "application/pdf")),
            ("image", ("chart.png", png(300, 200), "image/png")),
        ],
    )

    assert response.status_code == 200, response.text
    answer = response.json()["answer"]
    assert "File report.pdf: 13 characters." in answer
    assert "Image 1: PNG, 300×200 px" in answer
    conversation = http.get(f"/api/conversations/{response.json()['conversation_id']}").json()
    listed = conversation["messages"][0]["attachments"]
    assert [(a["kind"], a["name"], a["media_type"]) for a in listed] == [
        ("file", "report.pdf", "application/pdf"),
        ("image", "chart.png", "image/png"),
    ]
    served = http.get(f"/api/attachments/{listed[0]['id']}")
    assert served.content == pdf("Sales doubled")
    assert served.headers["content-type"] == "application/pdf"
    assert served.headers["content-disposition"] == (
        "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
    )
    assert served.headers["x-content-type-options"] == "nosniff"


def one(name: str, data: bytes) -> list[dict[str, str]]:
    return [{"name": name, "content_base64": b64(data)}]


TOO_MANY = [{"name": f"{i}.txt", "content_base64": b64(b"hi")} for i in range(3)]


@pytest.mark.parametrize(
    ("files", "status", "param", "code", "says"),
    [
        (one("scan.pdf", scanned_pdf()), 400, "files[0]", "invalid_file", "no text"),
        (one("x.bin", b"\x00\x01\x02binary"), 400, "files[0]", "invalid_file", "not"),
        (one("latin.txt", "café".encode("latin-1")), 400, "files[0]", "invalid_file", "UTF-8"),
        (one("broken.pdf", b"%PDF-1.4 garbage"), 400, "files[0]", "invalid_file", "PDF"),
        ([{"name": "a.txt", "content_base64": "***"}], 400, "files[0]", "invalid_file", "base64"),
        ([{"name": "a.txt"}], 400, "files[0]", "invalid_file", "content_base64"),
        (one("a.txt", b"x" * 5000), 413, "files[0]", "file_too_large", "MAX_FILE_BYTES"),
        (TOO_MANY, 400, "files", "too_many_files", "at most 2"),
    ],
    ids=[
        "scanned-pdf",
        "binary",
        "not-utf8",
        "broken-pdf",
        "bad-base64",
        "no-content",
        "too-large",
        "too-many",
    ],
)
def test_bad_files_are_refused_naming_the_part(
    make_server_with: Any,
    simulator: Simulator,
    files: list[dict[str, str]],
    status: int,
    param: str,
    code: str,
    says: str,
) -> None:
    server = make_server_with(CHATPROXY_MAX_FILES="2", CHATPROXY_MAX_FILE_BYTES="4096")
    asked_before = len(simulator.requests)
    response = httpx2.post(f"{server.url}/callChatGPT", json={"input": "Read it", "files": files})

    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, code)
    assert says in error["message"]
    assert len(simulator.requests) == asked_before


def test_file_too_large_for_the_window_says_how_many_tokens(
    make_server_with: Any, simulator: Simulator
) -> None:
    # gpt-4 (8,192 tokens): a file of about 12,000 tokens cannot fit.
    server = make_server_with(CHATPROXY_MODELS="gpt-4o-mini,gpt-4", CHATPROXY_MAX_TOKENS="1000")
    text = "word " * 12_000
    asked_before = len(simulator.requests)
    response = httpx2.post(
        f"{server.url}/callChatGPT",
        json={
            "input": "Summarise",
            "model": "gpt-4",
            "files": [{"name": "long.txt", "content_base64": b64(text.encode())}],
        },
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("file", "context_length_exceeded")
    assert "'long.txt' is 12,0" in error["message"]
    assert "fit in gpt-4's context window of 8,192 tokens" in error["message"]
    assert len(simulator.requests) == asked_before
