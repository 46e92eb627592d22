"""Body limits per route: uploads (audio to transcribe or translate, images to edit) may be up to
CHATPROXY_MAX_UPLOAD_BYTES, every other route keeps CHATPROXY_MAX_BODY_BYTES; beyond its limit a
body is refused with 413 in OpenAI's shape, sent with a Content-Length or in chunks."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import openai
import pytest

from chatproxy.config import DEFAULT_MAX_UPLOAD_BYTES, ConfigError, load_settings
from chatproxy.simulator import Simulator
from chatproxy.simulator.media_wire import speech_audio
from tests.servers import Launcher, upstream_settings
from tests.test_bad_input import assert_openai_error

UPLOAD_LIMIT = 200_000
LIMITS = {
    "CHATPROXY_MAX_BODY_BYTES": "4096",
    "CHATPROXY_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
    "CHATPROXY_AUTH": "open",
    "CHATPROXY_MODELS": "gpt-4o-mini,whisper-1,tts-1,dall-e-2",
}
UPLOADS = ["/v1/audio/transcriptions", "/v1/audio/translations", "/v1/images/edits"]


@pytest.fixture
def server(make_server_with):  # type: ignore[no-untyped-def]
    return make_server_with(**LIMITS)


def multipart(file_bytes: int, route: str) -> tuple[bytes, str]:
    """A body as the SDK would send to `route`, with a file of `file_bytes` bytes."""
    field = "image" if "images" in route else "file"
    fields = {"model": "dall-e-2" if "images" in route else "whisper-1", "prompt": "x"}
    request = httpx2.Request(
        "POST", "http://x/", data=fields, files={field: ("f.bin", b"\x01" * file_bytes)}
    )
    return request.read(), request.headers["content-type"]


def pieces(data: bytes, size: int = 16_384) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("route", UPLOADS)
def test_an_upload_larger_than_a_chat_body_is_taken(server, route):
    body, content_type = multipart(100_000, route)  # 25 times CHATPROXY_MAX_BODY_BYTES
    answer = httpx2.post(
        f"{server.url}{route}", content=body, headers={"Content-Type": content_type}, timeout=30
    )
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("route", UPLOADS)
def test_an_upload_over_its_limit_is_413(server, route, chunked):
    body, content_type = multipart(UPLOAD_LIMIT + 1000, route)
    answer = httpx2.post(
        f"{server.url}{route}",
        content=pieces(body) if chunked else body,
        headers={"Content-Type": content_type},
        timeout=30,
    )
    assert ("transfer-encoding" in answer.request.headers) == chunked
    error = assert_openai_error(answer, 413, None)
    assert error["code"] == "request_too_large"
    assert "CHATPROXY_MAX_UPLOAD_BYTES" in error["message"]


def test_the_sdk_sees_an_oversized_upload_as_413(server):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="open", max_retries=0)
    with pytest.raises(openai.APIStatusError) as refused:
        client.audio.transcriptions.create(
            model="whisper-1", file=("big.mp3", b"\x00" * (UPLOAD_LIMIT + 1))
        )
    assert refused.value.status_code == 413


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    "route", ["/v1/audio/speech", "/v1/images/generations", "/v1/chat/completions"]
)
def test_other_routes_keep_the_body_limit(server, route, chunked):
    body = b'{"model": "tts-1", "input": "' + b"x" * 10_000 + b'"}'  # within the upload limit
    answer = httpx2.post(
        f"{server.url}{route}",
        content=pieces(body, 1000) if chunked else body,
        headers={"Content-Type": "application/json"},
    )
    assert assert_openai_error(answer, 413, None)["code"] == "request_too_large"


def test_the_upload_limit_defaults_to_openais_25_mb_and_room_for_the_fields():
    assert DEFAULT_MAX_UPLOAD_BYTES > 25 * 1024 * 1024
    assert load_settings({}).max_upload_bytes == DEFAULT_MAX_UPLOAD_BYTES
    assert load_settings({"CHATPROXY_MAX_UPLOAD_BYTES": "5000"}).max_upload_bytes == 5000
    with pytest.raises(ConfigError, match="CHATPROXY_MAX_UPLOAD_BYTES"):
        load_settings({"CHATPROXY_MAX_UPLOAD_BYTES": "lots"})


@pytest.mark.e2e
def test_under_gunicorn_an_upload_arrives_whole_and_speech_streams(
    tmp_path_factory: pytest.TempPathFactory, simulator: Simulator, database_url: str
) -> None:
    """The gevent worker reads a 5 MiB upload, refuses one over the limit sent in chunks,
    passes speech on as it arrives, and drops the connection of speech broken off midway."""
    launcher = Launcher(tmp_path_factory.mktemp("gunicorn-uploads"), database_url)
    try:
        settings = upstream_settings(simulator, WORKERS="1", CHATPROXY_MAX_UPLOAD_BYTES="6000000")
        server = launcher("uploads", **settings)
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="open", max_retries=0)
        audio = bytes(range(256)) * (5 * 1024 * 1024 // 256)
        transcript = client.audio.transcriptions.create(model="whisper-1", file=("big.wav", audio))
        assert f"holds {len(audio)} bytes" in transcript.text
        body, content_type = multipart(6_500_000, "/v1/audio/transcriptions")
        too_large = httpx2.post(
            f"{server.url}/v1/audio/transcriptions",
            content=pieces(body),
            headers={"Content-Type": content_type},
            timeout=30,
        )
        assert assert_openai_error(too_large, 413, None)["code"] == "request_too_large"
        text = "Streamed through a gevent worker."
        with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=text
        ) as speech:
            assert b"".join(speech.iter_bytes()) == speech_audio(text, "mp3")
        broken = "Broken off midway. [[sim: fault=reset_mid_stream]]"
        audio_api = client.audio.speech.with_streaming_response
        # Told the audio is incomplete (a chunked body without its end), not handed half of it.
        with (
            pytest.raises(httpx2.RemoteProtocolError),
            audio_api.create(model="tts-1", voice="alloy", input=broken) as speech,
        ):
            b"".join(speech.iter_bytes())
    finally:
        launcher.stop_all()
