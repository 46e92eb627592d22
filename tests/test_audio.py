"""Audio (`/v1/audio/transcriptions`, `/translations`, `/speech`) through a real server, with the
official SDK's own calls: uploads arrive byte for byte, transcripts come back whole or as
events, speech comes back as audio as it is made, each charged in its model's units; a model
the key may not use is refused; an upload over its limit is 413."""

from __future__ import annotations

import hashlib
import os
import uuid
from typing import Any

import httpx2
import openai
import pytest

from chatproxy.access.keys import issue_key
from chatproxy.simulator.media_wire import speech_audio
from chatproxy.tokens import PRICES
from tests.conftest import LiveServer, serve
from tests.test_responses_api import charged, ledger

WHISPER, TRANSCRIBE, TTS, MINI_TTS = (
    "whisper-1",
    "gpt-4o-mini-transcribe",
    "tts-1",
    "gpt-4o-mini-tts",
)
MODELS = f"gpt-4o-mini,{WHISPER},{TRANSCRIBE},{TTS},{MINI_TTS}"
AUDIO = os.urandom(300_000) + b"\r\n--not-a-boundary\r\n\x00\xff"  # bytes a parser might trip on


@pytest.fixture(scope="module")
def server(make_app):  # type: ignore[no-untyped-def]
    with serve(make_app(CHATPROXY_AUTH="keys", CHATPROXY_MODELS=MODELS)) as live:
        yield live


def make_key(server: LiveServer, **limits: Any) -> tuple[str, str]:
    name = f"aud-{uuid.uuid4().hex[:10]}"
    with server.app.app_context():
        return name, issue_key(name, **limits)


def sdk(server: LiveServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=30)


def heard(data: bytes, filename: str = "speech.mp3") -> str:
    """The simulator's transcript of `data`: it names the bytes it got."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    return f"The file {filename} holds {len(data)} bytes of audio, sha256 {digest}."


def test_a_whisper_transcription_arrives_intact_and_is_charged_by_the_minute(server):
    name, key = make_key(server)
    result = sdk(server, key).audio.transcriptions.create(
        model=WHISPER, file=("speech.mp3", AUDIO, "audio/mpeg")
    )
    assert result.text == heard(AUDIO)
    assert result.usage is not None and result.usage.type == "duration"
    requests, prompt, completion, cost = ledger(server, name)[WHISPER]
    assert (requests, prompt) == (1, 0) and completion > 0  # the transcript's tokens, counted
    assert cost == pytest.approx(result.usage.seconds / 60 * PRICES[WHISPER].per_minute)


@pytest.mark.parametrize("response_format", ["text", "srt", "vtt", "verbose_json"])
def test_each_transcript_format_comes_back_as_the_upstream_wrote_it(server, response_format):
    name, key = make_key(server)
    result = sdk(server, key).audio.transcriptions.create(
        model=WHISPER, file=("speech.mp3", AUDIO), response_format=response_format
    )
    text = result if isinstance(result, str) else result.text
    assert heard(AUDIO) in text
    if response_format == "vtt":
        assert text.startswith("WEBVTT")
    if response_format == "verbose_json":
        assert result.duration > 0 and result.segments
    _, _, _, cost = ledger(server, name)[WHISPER]
    assert cost > 0  # by the duration, the cues' end, or the words heard


def test_a_token_billed_transcription_is_charged_by_its_usage(server):
    name, key = make_key(server)
    result = sdk(server, key).audio.transcriptions.create(
        model=TRANSCRIBE, file=("speech.mp3", AUDIO)
    )
    usage = result.usage
    assert usage is not None and usage.type == "tokens"
    requests, prompt, completion, cost = ledger(server, name)[TRANSCRIBE]
    assert (requests, prompt, completion) == (1, usage.input_tokens, usage.output_tokens)
    price = PRICES[TRANSCRIBE]
    audio = usage.input_token_details.audio_tokens
    expected = (audio * price.media_input + usage.output_tokens * price.output) / 1e6
    assert cost == pytest.approx(expected)


def test_a_streamed_transcription_comes_as_delta_events_then_done_with_usage(server):
    name, key = make_key(server)
    stream = sdk(server, key).audio.transcriptions.create(
        model=TRANSCRIBE, file=("speech.mp3", AUDIO), stream=True
    )
    events = list(stream)
    kinds = [event.type for event in events]
    assert kinds[-1] == "transcript.text.done" and kinds.count("transcript.text.delta") > 3
    deltas = "".join(e.delta for e in events if e.type == "transcript.text.delta")
    assert deltas == events[-1].text == heard(AUDIO)
    usage = events[-1].usage
    requests, prompt, completion, _ = charged(server, name, TRANSCRIBE)
    assert (requests, prompt, completion) == (1, usage.input_tokens, usage.output_tokens)


def test_whisper_asked_to_stream_answers_whole_as_openais_does(server):
    name, key = make_key(server)
    answer = httpx2.post(
        f"{server.url}/v1/audio/transcriptions",
        headers={"Authorization": f"Bearer {key}"},
        data={"model": WHISPER, "stream": "true"},
        files={"file": ("speech.mp3", AUDIO)},
        timeout=30,
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["text"] == heard(AUDIO)
    assert ledger(server, name)[WHISPER][0] == 1


def test_a_translation_comes_back_in_english_and_is_charged(server):
    name, key = make_key(server)
    result = sdk(server, key).audio.translations.create(model=WHISPER, file=("talk.mp3", AUDIO))
    assert result.text == "(In English) " + heard(AUDIO, "talk.mp3")
    requests, _, completion, cost = ledger(server, name)[WHISPER]
    assert requests == 1 and completion > 0 and cost > 0  # no usage: the words heard, timed


@pytest.mark.parametrize("response_format", ["mp3", "wav", "opus"])
def test_speech_comes_back_as_the_audio_as_it_is_made(server, response_format):
    name, key = make_key(server)
    text = "Hello there, this is chatproxy reading aloud. [[sim: delay=0.02]]"
    with sdk(server, key).audio.speech.with_streaming_response.create(
        model=TTS, voice="alloy", input=text, response_format=response_format
    ) as answer:
        assert answer.headers["content-type"].startswith("audio/")
        pieces = list(answer.iter_bytes())
    assert b"".join(pieces) == speech_audio(text, response_format)
    requests, _, _, cost = ledger(server, name)[TTS]
    assert requests == 1
    assert cost == pytest.approx(len(text) * PRICES[TTS].per_1m_characters / 1e6)


def test_speech_pieces_are_passed_on_as_they_arrive(server):
    _, key = make_key(server)
    text = "x" * 64 + " [[sim: delay=0.15]]"  # several pieces, 0.15 s apart
    with httpx2.stream(
        "POST",
        f"{server.url}/v1/audio/speech",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": TTS, "input": text, "voice": "alloy"},
        timeout=30,
    ) as answer:
        assert answer.status_code == 200 and answer.headers["content-type"] == "audio/mpeg"
        arrivals = []
        for piece in answer.iter_raw():
            arrivals.append(len(piece))
    assert len(arrivals) >= 3  # not held back and sent at once
    assert sum(arrivals) == len(speech_audio(text, "mp3"))


def test_speech_as_sse_events_is_charged_by_its_usage(server):
    name, key = make_key(server)
    events = list(
        sdk(server, key)
        .audio.speech.create(model=MINI_TTS, voice="alloy", input="Read this", stream_format="sse")
        .iter_lines()
    )
    data = [line for line in events if line.startswith("data:")]
    assert '"speech.audio.done"' in data[-1] and '"speech.audio.delta"' in data[0]
    requests, prompt, completion, cost = charged(server, name, MINI_TTS)
    assert requests == 1 and prompt > 0 and completion > 0
    price = PRICES[MINI_TTS]
    assert cost == pytest.approx((prompt * price.input + completion * price.output) / 1e6)


def test_speech_without_usage_is_charged_its_counted_tokens(server):
    name, key = make_key(server)
    answer = sdk(server, key).audio.speech.create(model=MINI_TTS, voice="alloy", input="Hi there")
    assert answer.content == speech_audio("Hi there", "mp3")
    requests, prompt, completion, cost = ledger(server, name)[MINI_TTS]
    assert requests == 1 and prompt > 0 and completion > 0 and cost > 0


@pytest.mark.parametrize("route", ["transcriptions", "translations", "speech"])
def test_a_model_the_key_may_not_use_is_refused(server, route):
    _, key = make_key(server, models=["gpt-4o-mini"])
    audio = sdk(server, key).audio
    with pytest.raises(openai.PermissionDeniedError) as refused:
        if route == "speech":
            audio.speech.create(model=TTS, voice="alloy", input="hi")
        elif route == "translations":
            audio.translations.create(model=WHISPER, file=("a.mp3", b"abc"))
        else:
            audio.transcriptions.create(model=WHISPER, file=("a.mp3", b"abc"))
    assert refused.value.code == "model_not_allowed"


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": TTS, "voice": "alloy"}, "input"),
        ({"model": TTS, "voice": "alloy", "input": "x" * 4097}, "input"),
        ({"model": TTS, "input": "hi"}, "voice"),
        (
            {"model": TTS, "voice": "alloy", "input": "hi", "response_format": "ogg"},
            "response_format",
        ),
        ({"model": TTS, "voice": "alloy", "input": "hi", "speed": 9}, "speed"),
    ],
)
def test_bad_speech_requests_are_400_before_the_upstream(server, body, param):
    _, key = make_key(server)
    answer = httpx2.post(
        f"{server.url}/v1/audio/speech", headers={"Authorization": f"Bearer {key}"}, json=body
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == param


def test_a_transcription_without_a_file_or_not_multipart_is_400(server):
    _, key = make_key(server)
    headers = {"Authorization": f"Bearer {key}"}
    url = f"{server.url}/v1/audio/transcriptions"
    no_file = httpx2.post(url, headers=headers, data={"model": WHISPER}, files={"x": b""})
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
    as_json = httpx2.post(url, headers=headers, json={"model": WHISPER})
    assert as_json.status_code == 400
    assert as_json.json()["error"]["code"] == "invalid_content_type"


def test_an_upstream_error_maps_as_for_chat(server):
    _, key = make_key(server)
    with pytest.raises(openai.RateLimitError):
        sdk(server, key).audio.speech.create(
            model=TTS, voice="alloy", input="[[sim: fault=rate_limit]] hi"
        )


@pytest.mark.parametrize("route", ["speech", "transcriptions"])
def test_a_retry_with_the_same_idempotency_key_gets_the_first_answer(server, route):
    name, key = make_key(server)
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex}
    if route == "speech":
        asked: dict[str, Any] = {"json": {"model": TTS, "input": "Say it once", "voice": "alloy"}}
        model = TTS
    else:
        asked = {"data": {"model": WHISPER}, "files": {"file": ("speech.mp3", AUDIO)}}
        model = WHISPER
    url = f"{server.url}/v1/audio/{route}"
    first = httpx2.post(url, headers=headers, timeout=30, **asked)
    again = httpx2.post(url, headers=headers, timeout=30, **asked)
    assert first.status_code == again.status_code == 200
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
    assert again.headers["content-type"] == first.headers["content-type"]
    assert ledger(server, name)[model][0] == 1  # asked and charged once


def test_a_transcription_stream_broken_midway_ends_with_an_error_and_is_charged(server):
    name, key = make_key(server)
    stream = sdk(server, key).audio.transcriptions.create(
        model=TRANSCRIBE,
        file=("speech.mp3", AUDIO),
        prompt="[[sim: fault=reset_mid_stream]]",
        stream=True,
    )
    deltas = []
    with pytest.raises(openai.APIError):
        for event in stream:
            deltas.append(event)
    assert deltas and all(event.type == "transcript.text.delta" for event in deltas)
    requests, _, completion, cost = charged(server, name, TRANSCRIBE)
    assert requests == 1 and completion > 0 and cost > 0  # the words heard, counted


def test_speech_broken_midway_is_cut_short_and_charged(server):
    name, key = make_key(server)
    text = "y" * 100 + " [[sim: fault=reset_mid_stream]]"
    with httpx2.stream(
        "POST",
        f"{server.url}/v1/audio/speech",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": TTS, "input": text, "voice": "alloy"},
        timeout=30,
    ) as answer:
        received = b"".join(answer.iter_bytes())
    assert 0 < len(received) < len(speech_audio(text, "mp3"))
    assert speech_audio(text, "mp3").startswith(received)
    assert charged(server, name, TTS)[0] == 1


def test_the_keys_requests_per_minute_hold_on_audio_routes(server):
    _, key = make_key(server, rpm=1)
    client = sdk(server, key)
    client.audio.speech.create(model=TTS, voice="alloy", input="once")
    with pytest.raises(openai.RateLimitError):
        client.audio.transcriptions.create(model=WHISPER, file=("a.mp3", b"abc"))


def test_a_model_the_upstream_lacks_is_404(make_app):
    with serve(make_app(CHATPROXY_MODELS="gpt-4o-mini,whisper-9")) as live:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.NotFoundError) as refused:
            client.audio.transcriptions.create(model="whisper-9", file=("a.mp3", b"abc"))
    assert refused.value.code == "model_not_found"
