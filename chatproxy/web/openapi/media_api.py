"""The OpenAPI document's audio and image routes: paths and schemas.

The bodies are the OpenAI API reference's ("Audio": create transcription,
translation and speech; "Images": create image and image edit), their
important fields described with this deployment's bounds and any other
allowed, as for `/v1`'s others (`v1_schemas`). Uploads are multipart/form-data
of up to CHATPROXY_MAX_UPLOAD_BYTES.
"""

from __future__ import annotations

from chatproxy.web.media_checks import (
    IMAGE_RESPONSE_FORMATS,
    MAX_SPEECH_CHARACTERS,
    SPEECH_FORMATS,
    SPEED_RANGE,
    TRANSCRIPTION_FORMATS,
)
from chatproxy.web.openapi.components import (
    IDEMPOTENCY_ERRORS,
    JSON,
    SSE,
    UPSTREAM_ERRORS,
    Operations,
    body,
    errors,
    ok,
)
from chatproxy.web.openapi.schemas import (
    BOOLEAN,
    Bounds,
    Schema,
    array,
    integer,
    json_data,
    loose,
    nullable,
    number,
    ref,
    string,
)

MULTIPART = "multipart/form-data"
FILE = string(contentMediaType="application/octet-stream", description="A file's bytes.")


def media_paths(ops: Operations) -> dict[str, Schema]:
    """`/v1/audio/transcriptions`, `translations`, `speech`; `/v1/images/generations`, `edits`."""
    ops = ops.tagged("openai")
    idempotent = {"Idempotent-Replayed": ref("Idempotent-Replayed", "headers")}

    def create(op_id: str, summary: str, request: tuple[str, str], answer: Schema) -> Schema:
        responses = {"200": answer, **errors(*UPSTREAM_ERRORS, *IDEMPOTENCY_ERRORS)}
        return {
            "post": ops.api(
                op_id,
                summary,
                responses,
                parameters=[ref("IdempotencyKey", "parameters")],
                requestBody=body((request[0], ref(request[1]))),
            )
        }

    transcript = ok(
        "The upstream's transcript as it came: JSON (`json`, `verbose_json`), or text "
        "(`text`, `srt`, `vtt`); with `stream=true` its `transcript.text.delta` ... "
        "`transcript.text.done` events.",
        {
            JSON: ref("Transcription"),
            "text/plain": string(),
            "text/vtt": string(),
            "application/x-subrip": string(),
            SSE: ref("MediaEvent"),
        },
        headers=idempotent,
    )
    images = ok(
        "The upstream's images as they came; with `stream: true` its `image_generation.*` "
        "(or `image_edit.*`) events.",
        {JSON: ref("ImagesResponse"), SSE: ref("MediaEvent")},
        headers=idempotent,
    )
    speech = ok(
        "The audio in the requested format, passed on as it is made, with the upstream's "
        "Content-Type; with `stream_format: sse`, its `speech.audio.delta` ... "
        "`speech.audio.done` events.",
        {"audio/*": string(contentMediaType="audio/*"), SSE: ref("MediaEvent")},
        headers=idempotent,
    )
    return {
        "/v1/audio/transcriptions": create(
            "createTranscription",
            "Transcribe audio",
            (MULTIPART, "TranscriptionRequest"),
            transcript,
        ),
        "/v1/audio/translations": create(
            "createTranslation",
            "Translate audio into English",
            (MULTIPART, "TranslationRequest"),
            transcript,
        ),
        "/v1/audio/speech": create(
            "createSpeech", "Read text aloud", (JSON, "SpeechRequest"), speech
        ),
        "/v1/images/generations": create(
            "createImage", "Create images", (JSON, "ImageRequest"), images
        ),
        "/v1/images/edits": create(
            "createImageEdit", "Edit images", (MULTIPART, "ImageEditRequest"), images
        ),
    }


def media_schemas(bounds: Bounds) -> dict[str, Schema]:
    """The requests and answers of `media_paths`: the important fields, any other allowed."""
    model = string(
        enum=list(bounds.models),
        description="One of CHATPROXY_MODELS (403 `model_not_allowed` for others).",
    )
    flag = string(enum=["true", "false"])
    transcription = loose(
        "file model",
        file=FILE,
        model=model,
        response_format=string(enum=list(TRANSCRIPTION_FORMATS)),
        language=string(),
        prompt=string(),
        stream=flag,
    )
    transcription["description"] = (
        "OpenAI's create-transcription form, passed on as sent; an audio file of up to 25 MB "
        "(CHATPROXY_MAX_UPLOAD_BYTES for the whole body, 413 beyond)."
    )
    translation = {
        **transcription,
        "properties": {k: v for k, v in transcription["properties"].items() if k != "stream"},
    }
    speech = loose(
        "model input voice",
        model=model,
        input=string(minLength=1, maxLength=MAX_SPEECH_CHARACTERS),
        voice={"anyOf": [string(), loose("id", id=string())]},
        instructions=string(),
        response_format=nullable(string(enum=list(SPEECH_FORMATS))),
        speed=nullable(number(minimum=SPEED_RANGE[0], maximum=SPEED_RANGE[1])),
        stream_format=nullable(string(enum=["sse", "audio"])),
    )
    image_fields: dict[str, Schema] = {
        "model": nullable(
            string(
                enum=list(bounds.models),
                description="dall-e-2 when not given (403 `model_not_allowed` unless allowed).",
            )
        ),
        "prompt": string(minLength=1),
        "n": nullable(integer(minimum=1, description="At most CHATPROXY_MAX_N (400 beyond).")),
        "size": nullable(string()),
        "quality": nullable(string()),
        "response_format": nullable(string(enum=list(IMAGE_RESPONSE_FORMATS))),
    }
    image = loose("prompt", **image_fields, stream=nullable(BOOLEAN))
    edit = loose(
        "prompt",
        **{name: schema for name, schema in image_fields.items() if name != "n"},
        n=string(pattern="^[0-9]{1,3}$"),
        image=FILE,
        mask=FILE,
        stream=flag,
    )
    edit["description"] = (
        "OpenAI's create-image-edit form (`image`, or several as `image[]`), passed on as sent, "
        "with `model` added when missing; up to CHATPROXY_MAX_UPLOAD_BYTES (413 beyond)."
    )
    usage = loose("input_tokens output_tokens", input_tokens=integer(), output_tokens=integer())
    event = loose("type", type=string())
    return {
        "TranscriptionRequest": transcription,
        "TranslationRequest": translation,
        "Transcription": loose("text", text=string(), usage=nullable({"type": "object"})),
        "SpeechRequest": speech,
        "ImageRequest": image,
        "ImageEditRequest": edit,
        "ImagesResponse": loose(
            "created",
            created=integer(),
            data=array(loose(url=string(), b64_json=string(), revised_prompt=string())),
            usage=nullable(usage),
        ),
        "MediaEvent": loose("data", event=string(), data=json_data(event)),
    }
