"""`/v1/audio/...` and `/v1/images/...`: OpenAI's audio and image routes, passed through.

As for the rest of `/v1` (`chatproxy.web.v1`): the caller's access key, its
models and limits apply; the request's worst case is reserved against its
quotas (`chatproxy.media_prices`); the request goes to the route's own path
under the configured base URL (`chatproxy.upstream.paths`), an upload byte for
byte; the answer comes back as the upstream's bytes with its Content-Type
(speech's audio as it arrives, events one by one); its usage is read on the
way, priced in the units the model is billed in, and written to the ledger.
An `Idempotency-Key` makes a retry get the first answer. Upstream failures map
as on `/v1/chat/completions`. Uploads may be up to CHATPROXY_MAX_UPLOAD_BYTES
(`chatproxy.web.bodylimit`).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import Any

from flask import Blueprint, Response, request

from chatproxy.access.keys import current_policy
from chatproxy.access.ledger import Recorder, usage_recorder
from chatproxy.errors import APIError
from chatproxy.media_prices import (
    Bill,
    Worst,
    images_bill,
    speech_bill,
    transcription_bill,
    worst_images,
    worst_speech,
    worst_transcription,
)
from chatproxy.state import current_prices, current_settings
from chatproxy.store.database import release_session
from chatproxy.store.idempotency import Claim, Stored
from chatproxy.upstream.client import Upstream, current_upstream
from chatproxy.upstream.media import AudioStream, MediaAnswer, MediaEvents, read_whole
from chatproxy.upstream.paths import (
    IMAGE_EDITS_PATH,
    IMAGES_PATH,
    SPEECH_PATH,
    TRANSCRIPTIONS_PATH,
    TRANSLATIONS_PATH,
)
from chatproxy.upstream.responses import UpstreamResponse
from chatproxy.upstream.streams import StreamClosed
from chatproxy.web.idempotency import (
    REPLAY_BYTES,
    Recording,
    claim_request,
    released_on_error,
    replay_passthrough,
)
from chatproxy.web.media_checks import (
    IMAGE_DEFAULT_MODEL,
    ImageAsk,
    check_image_edit,
    check_images,
    check_speech,
    check_transcription,
    form_flag,
    json_flag,
    read_upload,
)
from chatproxy.web.passthrough import read_body
from chatproxy.web.requestlog import note
from chatproxy.web.sse import HEADERS, passthrough_response

bp = Blueprint("media", __name__, url_prefix="/v1")
# The routes that take uploads, held to CHATPROXY_MAX_UPLOAD_BYTES (`chatproxy.web.bodylimit`).
UPLOAD_ROUTES = ("/v1/audio/transcriptions", "/v1/audio/translations", "/v1/images/edits")
# (the whole answer, or None for a stream; the stream, or None) -> what it is charged.
Billing = Callable[[MediaAnswer | None, Any], Bill]


@bp.post("/audio/transcriptions")
def transcriptions() -> Response:
    """Transcribe audio (OpenAI API reference, "Create transcription").

    Body: multipart/form-data, `file` (up to 25 MB) and `model` required,
    passed on as it came (see `check_transcription`). Answers the upstream's
    transcription (`{"text", "usage"?}` JSON, verbose JSON, or `text`, `srt`,
    `vtt` as text), or with `stream=true` its `transcript.text.delta` ...
    `transcript.text.done` events. Errors as `/v1/chat/completions`', and 413
    beyond CHATPROXY_MAX_UPLOAD_BYTES.
    """
    return _transcribe(TRANSCRIPTIONS_PATH, translation=False)


@bp.post("/audio/translations")
def translations() -> Response:
    """Translate audio into English text (OpenAI API reference, "Create translation").

    As `/v1/audio/transcriptions`, never streamed (whisper-1 only, upstream).
    """
    return _transcribe(TRANSLATIONS_PATH, translation=True)


@bp.post("/audio/speech")
def speech() -> Response:
    """Read text aloud (OpenAI API reference, "Create speech").

    Body: JSON, `model`, `input` (up to 4,096 characters) and `voice`
    required (see `check_speech`). Answers the audio in the requested format
    (`response_format`, mp3 by default) with the upstream's Content-Type, its
    bytes passed on as they arrive; with `stream_format: "sse"`, the
    upstream's `speech.audio.delta` ... `speech.audio.done` events. Charged by
    the character (tts-1) or the token. Errors as `/v1/chat/completions`'.
    """
    body = read_body(request.get_data())
    model = check_speech(body, current_policy())
    text, speed = body["input"], float(body.get("speed") or 1.0)
    prices = current_prices()

    def bill(answer: MediaAnswer | None, stream: Any) -> Bill:
        usage = stream.usage if isinstance(stream, MediaEvents) else None
        return speech_bill(model, text, speed, usage, prices)

    def worst() -> Worst:
        return worst_speech(model, text, prices)

    events = body.get("stream_format") == "sse"
    return _forward(body, model, worst, bill, lambda up: up.post_raw(SPEECH_PATH, body), events)


@bp.post("/images/generations")
def images() -> Response:
    """Create images from a prompt (OpenAI API reference, "Create image").

    Body: JSON, `prompt` required, `model` dall-e-2 unless given (and then
    sent), `n` up to CHATPROXY_MAX_N (see `check_images`). Answers the
    upstream's `{"created", "data": [{"url" | "b64_json", "revised_prompt"?}],
    "usage"?}`, or with `stream: true` its `image_generation.partial_image`
    ... `image_generation.completed` events. Charged by the image (dall-e) or
    the token (gpt-image-1). Errors as `/v1/chat/completions`'.
    """
    body = read_body(request.get_data())
    if body.get("model") is None:
        body = {**body, "model": IMAGE_DEFAULT_MODEL}
    asked = check_images(body, current_policy())
    stream = json_flag(body, "stream")
    return _images(body, body["model"], asked, lambda up: up.post_raw(IMAGES_PATH, body), stream)


@bp.post("/images/edits")
def image_edits() -> Response:
    """Edit or extend images (OpenAI API reference, "Create image edit").

    Body: multipart/form-data, `image` (or `image[]`, one or more files) and
    `prompt` required, `mask` optional, passed on as it came with `model`
    (dall-e-2) added when missing (see `check_image_edit`). Answers as
    `/v1/images/generations`, streamed as `image_edit.*` events. 413 beyond
    CHATPROXY_MAX_UPLOAD_BYTES.
    """
    upload = read_upload(request.get_data(), request.content_type)
    upload, asked = check_image_edit(upload, current_policy())
    model = upload.fields["model"]
    params = upload.asked()
    stream = form_flag(upload.fields, "stream")

    def post(up: Upstream) -> UpstreamResponse:
        return up.post_upload(IMAGE_EDITS_PATH, upload.data, upload.content_type, model)

    return _images(params, model, asked, post, stream)


def _transcribe(path: str, translation: bool) -> Response:
    """A transcription or translation upload, checked, reserved, sent and billed."""
    upload = read_upload(request.get_data(), request.content_type)
    model = check_transcription(upload, current_policy(), translation)
    stream = not translation and form_flag(upload.fields, "stream")
    file_bytes = upload.file_bytes("file")[0]
    prices = current_prices()
    params = upload.asked()  # for an Idempotency-Key: its fields, its audio's name and hash

    def bill(answer: MediaAnswer | None, stream: Any) -> Bill:
        if answer is not None:
            return transcription_bill(model, answer.body, answer.data, answer.usage, prices)
        text, _ = stream.received_text()
        return transcription_bill(model, text.encode(), {"text": text}, stream.usage, prices)

    def post(up: Upstream) -> UpstreamResponse:
        return up.post_upload(path, upload.data, upload.content_type, model)

    def worst() -> Worst:
        return worst_transcription(model, file_bytes, prices)

    return _forward(params, model, worst, bill, post, stream, whole=True)


def _images(
    params: dict[str, Any],
    model: str,
    asked: ImageAsk,
    post: Callable[[Upstream], UpstreamResponse],
    stream: bool,
) -> Response:
    """An image request, checked, to reserve, send and bill (`n` images, or those made)."""
    prices = current_prices()

    def bill(answer: MediaAnswer | None, events: Any) -> Bill:
        made = asked.n
        if answer is not None and answer.data is not None:
            data = answer.data.get("data")
            made = len(data) if isinstance(data, list) else made
        usage = answer.usage if answer is not None else events.usage
        return images_bill(model, asked.prompt, made, asked.size, asked.quality, usage, prices)

    def worst() -> Worst:
        size, quality = asked.size, asked.quality
        return worst_images(model, asked.prompt, asked.n, size, quality, asked.input_images, prices)

    return _forward(params, model, worst, bill, post, stream, whole=True)


def _forward(
    params: dict[str, Any],
    model: str,
    worst: Callable[[], Worst],
    bill: Billing,
    post: Callable[[Upstream], UpstreamResponse],
    events: bool,
    whole: bool = False,
) -> Response:
    """Answer a checked request: from the upstream, or as before for a retried Idempotency-Key
    (`params` are the request, `chatproxy.web.idempotency`).

    Its worst case is reserved first (429 when the key's quotas are reached);
    `post(upstream)` sends it. An answer of `events` is passed on event by
    event (if the upstream streams it: else as a `whole` one), a `whole` one
    read and sent back as it came, other audio passed on as it arrives (with
    `X-Accel-Buffering: no`, so that nginx does not hold it back). Every
    answer is charged `bill(answer, stream)` once it has ended, however it ended.
    """
    claimed = claim_request(params)
    if isinstance(claimed, Stored):
        return replay_passthrough(claimed)
    with released_on_error(claimed):
        upstream = current_upstream()
        record_usage = usage_recorder()
        record_usage.reserve_worst(lambda: _pair(worst()))
        release_session()  # no connection held while the upstream answers
        logged = note(model=model)
        try:
            response = post(upstream)
        except APIError as error:
            record_usage(model, None, None)
            logged["outcome"] = error.code
            raise
        # A server that ignores `stream` (OpenAI's whisper-1 does) answers whole: as it came.
        if events and (response.content_type or "").startswith("text/event-stream"):
            return _events(MediaEvents(response, upstream), model, bill, record_usage, claimed)
        whole = whole or events
        if not whole:
            return _audio(AudioStream(response, upstream), model, bill, record_usage, claimed)
        try:
            answer = read_whole(response, upstream)
        except APIError as error:
            _charge(record_usage, model, bill(None, _Nothing()), [])
            logged["outcome"] = error.code
            raise
        kept = claimed.keep(answer.body, answer.content_type)
        logged.update(usage=_charge(record_usage, model, bill(answer, None), kept), outcome="ok")
        return Response(answer.body, content_type=answer.content_type)


def _events(
    stream: MediaEvents, model: str, bill: Billing, record_usage: Recorder, claimed: Claim
) -> Response:
    """The upstream's events passed on as they came, charged when they end."""
    recording = Recording() if claimed.id is not None else None
    logged = note()

    def on_end() -> None:
        kept = recording.writes(claimed) if recording is not None else []
        logged["usage"] = _charge(record_usage, model, bill(None, stream), kept)

    keepalive = current_settings().keepalive_interval
    return passthrough_response(stream, keepalive, on_end, recording)


def _audio(
    stream: AudioStream, model: str, bill: Billing, record_usage: Recorder, claimed: Claim
) -> Response:
    """Speech's audio passed on as it arrives, with the upstream's Content-Type; charged when
    it ends, however it ends. Nothing can be added to audio to say it broke off midway: under
    gunicorn the connection is then dropped before the body's end, so that the client sees
    an incomplete answer (its SDK raises); under another server the body just ends short."""
    recording = Recording() if claimed.id is not None else None
    logged = note()
    connection = request.environ.get("gunicorn.socket")

    def body() -> Iterator[bytes]:
        try:
            for piece in stream:
                if recording is not None:
                    recording(piece)
                yield piece
        except StreamClosed:
            logged["outcome"] = "client_gone"
        except APIError as error:
            logged["outcome"] = error.code
            if connection is not None:
                with suppress(OSError):  # gunicorn then ignores the write that fails
                    connection.shutdown(socket.SHUT_RDWR)
        finally:
            stream.close()
            kept: list[Any] = []
            if recording is not None:
                whole = b"".join(recording.pieces) if recording.size <= REPLAY_BYTES else None
                kept = claimed.keep(whole, stream.content_type) if recording.size else []
                kept = kept or claimed.release()
            logged["usage"] = _charge(record_usage, model, bill(None, stream), kept)

    return Response(body(), content_type=stream.content_type, headers=HEADERS)


def _pair(worst: Worst) -> tuple[int, float]:
    return worst.tokens, worst.cost


def _charge(record_usage: Recorder, model: str, bill: Bill, kept: list[Any]) -> dict[str, Any]:
    """Write `bill` to the ledger for `model` with `kept`; returns its usage, for the log."""
    record_usage(model, bill.usage, bill.cost, bill.counted, kept)
    return bill.usage


class _Nothing:
    """A stream that brought nothing: what an answer that broke off is billed as."""

    usage = None

    def received_text(self) -> tuple[str, float]:
        return "", 1.0
