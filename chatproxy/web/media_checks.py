"""The audio and image routes' requests, checked against the owner's policy before the upstream.

Bodies are those of the OpenAI API reference: "Create transcription" and
"Create translation" (multipart/form-data: `file`, `model`, `response_format`,
`language`, `prompt`, `stream`, ...), "Create speech" (JSON: `model`, `input`,
`voice`, `response_format`, `speed`, `stream_format`, ...), "Create image"
(JSON: `model`, `prompt`, `n`, `size`, `quality`, `response_format`,
`stream`, ...) and "Create image edit" (multipart: `image` or `image[]`,
`mask`, `prompt`, `model`, `n`, `size`, ...). As for the other `/v1` routes
(`chatproxy.web.passthrough`), chatproxy checks what its owner decides (the
model) and what it needs to route and bill the call; every other field goes
upstream as the client sent it, and an upload goes on byte for byte. A bad
request raises BadRequest (400) or Forbidden (403) naming the field.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from dataclasses import dataclass, field
from typing import IO, Any

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import MultiPartParser
from werkzeug.http import parse_options_header

from chatproxy.config import Settings
from chatproxy.errors import BadRequest
from chatproxy.web.passthrough import checked_model

# OpenAI's limits and defaults (API reference, "Audio" and "Images").
MAX_SPEECH_CHARACTERS = 4096
SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
SPEED_RANGE = (0.25, 4.0)
TRANSCRIPTION_FORMATS = ("json", "text", "srt", "verbose_json", "vtt", "diarized_json")
IMAGE_RESPONSE_FORMATS = ("url", "b64_json")
IMAGE_DEFAULT_MODEL = "dall-e-2"  # OpenAI's when a request names none: sent, so it is checked
# A multipart boundary (RFC 2046, section 5.1.1), and one that needs no quotes in a header.
BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
TOKEN = re.compile(r"[0-9A-Za-z'+_\-.]+")
# What a multipart body's text fields may hold together, and how many parts it may have.
MAX_FIELD_BYTES = 1024 * 1024
MAX_PARTS = 128


@dataclass(frozen=True)
class Upload:
    """A multipart/form-data body as it came (`data`, sent with `content_type`), its text
    `fields` (the first value of each), the byte size of each file it holds by field
    (`files`), and each file's name and SHA-256 by field (`digests`: what the request asks,
    whatever boundary it was sent with, for an Idempotency-Key)."""

    data: bytes
    content_type: str
    fields: dict[str, str]
    files: dict[str, list[int]] = field(default_factory=dict)
    digests: dict[str, list[str]] = field(default_factory=dict)

    def asked(self) -> dict[str, Any]:
        """The request as an Idempotency-Key's fingerprint takes it: fields and files' digests."""
        return {"fields": self.fields, "files": self.digests}

    def file_bytes(self, *names: str) -> list[int]:
        """The sizes of the files of the fields `names`, in order."""
        return [size for name in names for size in self.files.get(name, [])]

    def with_field(self, name: str, value: str) -> Upload:
        """This body with the text field `name` added at its end, the rest untouched."""
        boundary = parse_options_header(self.content_type)[1]["boundary"].encode()
        end = self.data.rfind(b"--" + boundary + b"--")
        if end < 0:  # werkzeug read it whole: its closing delimiter is there
            raise BadRequest("The multipart/form-data body has no end.", code="invalid_multipart")
        part = (
            f'--{boundary.decode()}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n"
        ).encode()
        data = self.data[:end] + part + self.data[end:]
        fields = {**self.fields, name: value}
        return Upload(data, self.content_type, fields, self.files, self.digests)


@dataclass(frozen=True)
class ImageAsk:
    """What an image request asks for, to reserve and bill it: `n` images of `size` and
    `quality` (None: the model's default) from `prompt`, with `input_images` to edit."""

    prompt: str
    n: int
    size: str | None
    quality: str | None
    input_images: int = 0


def read_upload(data: bytes, content_type: str | None) -> Upload:
    """`data`, a multipart/form-data body, with its fields and files read (the files' bytes
    only counted: nothing is kept or written to disk).

    BadRequest (400 `invalid_content_type`) for another content type or one
    without a boundary, 400 `invalid_multipart` for a body that is not one.
    """
    mimetype, options = parse_options_header(content_type or "")
    boundary = options.get("boundary", "")
    if mimetype != "multipart/form-data" or not BOUNDARY.fullmatch(boundary):
        raise BadRequest(
            "This route takes a multipart/form-data body (with a boundary of 1 to 70 "
            "characters), as the openai SDK sends it.",
            code="invalid_content_type",
        )
    parser = MultiPartParser(
        stream_factory=_counted_file, max_form_memory_size=MAX_FIELD_BYTES, max_form_parts=MAX_PARTS
    )
    try:
        form, files = parser.parse(io.BytesIO(data), boundary.encode("latin-1"), len(data))
    except (ValueError, RequestEntityTooLarge):
        raise BadRequest(
            "The multipart/form-data body is malformed or has too many or too large fields.",
            code="invalid_multipart",
        ) from None
    # Made again from what was read: nothing else of the client's header goes upstream.
    quoted = boundary if TOKEN.fullmatch(boundary) else f'"{boundary}"'
    return Upload(
        data,
        f"multipart/form-data; boundary={quoted}",
        {name: form[name] for name in form},
        {name: [_counted(s.stream).size for s in files.getlist(name)] for name in files},
        {
            name: [
                f"{s.filename}:{_counted(s.stream).hash.hexdigest()}" for s in files.getlist(name)
            ]
            for name in files
        },
    )


class _Counted(io.RawIOBase):
    """Where werkzeug writes an uploaded file: its bytes counted and hashed, not kept."""

    def __init__(self) -> None:
        self.size = 0
        self.hash = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0  # werkzeug rewinds a file once written; there is nothing to read back

    def write(self, data: Any) -> int:
        self.size += len(data)
        self.hash.update(data)
        return len(data)


def _counted(stream: Any) -> _Counted:
    return stream if isinstance(stream, _Counted) else _Counted()


def _counted_file(*args: Any, **kwargs: Any) -> IO[bytes]:
    return _Counted()  # type: ignore[return-value]


def check_transcription(upload: Upload, settings: Settings, translation: bool) -> str:
    """Check a transcription (or translation) upload; returns its model.

    `file`: one file, not empty (400); `model` allowed (403); `response_format`,
    if given, one of TRANSCRIPTION_FORMATS (400); `stream`, if given, true or
    false (400; a translation is never streamed).
    """
    sizes = upload.file_bytes("file")
    if len(sizes) != 1 or not sizes[0]:
        raise BadRequest(
            "Missing required parameter 'file': one audio file (up to 25 MB).",
            param="file",
            code="missing_required_parameter",
        )
    model = checked_model(dict(upload.fields), settings)
    _one_of(upload.fields, "response_format", TRANSCRIPTION_FORMATS)
    if not translation:
        form_flag(upload.fields, "stream")
    return model


def check_speech(body: dict[str, Any], settings: Settings) -> str:
    """Check a speech request; returns its model.

    `model` allowed (403); `input`: a non-empty string of at most
    MAX_SPEECH_CHARACTERS characters (400); `voice` given (400);
    `response_format` one of SPEECH_FORMATS, `stream_format` `sse` or `audio`,
    `speed` a number from 0.25 to 4.0, if given (400).
    """
    model = checked_model(body, settings)
    text = body.get("input")
    if not isinstance(text, str) or not text:
        raise BadRequest(
            "'input' must be a non-empty string: the text to read aloud.",
            param="input",
            code="missing_required_parameter" if text is None else "invalid_value",
        )
    if len(text) > MAX_SPEECH_CHARACTERS:
        raise BadRequest(
            f"'input' is {len(text)} characters; the limit is {MAX_SPEECH_CHARACTERS}.",
            param="input",
            code="string_above_max_length",
        )
    if body.get("voice") is None:
        raise BadRequest(
            "Missing required parameter 'voice'.", param="voice", code="missing_required_parameter"
        )
    _one_of(body, "response_format", SPEECH_FORMATS)
    _one_of(body, "stream_format", ("sse", "audio"))
    speed = body.get("speed")
    if speed is not None and (
        isinstance(speed, bool)
        or not isinstance(speed, int | float)
        or not math.isfinite(speed)
        or not SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]
    ):
        raise BadRequest(
            f"'speed' must be a number from {SPEED_RANGE[0]} to {SPEED_RANGE[1]}.",
            param="speed",
            code="invalid_value",
        )
    return model


def check_images(values: dict[str, Any], settings: Settings, input_images: int = 0) -> ImageAsk:
    """Check an image request's fields (a JSON body, or an edit's text fields); returns what
    it asks for.

    `model`: allowed (403), the default (dall-e-2) added by the caller;
    `prompt`: a non-empty string (400); `n`: an integer from 1 to
    CHATPROXY_MAX_N (400); `size`, `quality`: strings if given (400);
    `response_format`: `url` or `b64_json` if given (400).
    """
    checked_model(values, settings)
    prompt = values.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise BadRequest(
            "'prompt' must be a non-empty string.",
            param="prompt",
            code="missing_required_parameter" if prompt is None else "invalid_value",
        )
    n = values.get("n", 1)
    if isinstance(n, str) and n.isdigit():  # a form's field
        n = int(n)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= settings.max_n:
        raise BadRequest(
            f"'n' must be an integer from 1 to {settings.max_n} (CHATPROXY_MAX_N).",
            param="n",
            code="invalid_value",
        )
    for name in ("size", "quality"):
        if values.get(name) is not None and not isinstance(values[name], str):
            raise BadRequest(f"{name!r} must be a string.", param=name, code="invalid_type")
    _one_of(values, "response_format", IMAGE_RESPONSE_FORMATS)
    return ImageAsk(prompt, n, values.get("size"), values.get("quality"), input_images)


def check_image_edit(upload: Upload, settings: Settings) -> tuple[Upload, ImageAsk]:
    """Check an image edit upload; returns it (with `model` added when missing) and what it
    asks for. `image` (or `image[]`): one or more files (400); the rest as `check_images`;
    `stream` true or false (400)."""
    images = len(upload.file_bytes("image", "image[]"))
    if not images:
        raise BadRequest(
            "Missing required parameter 'image': one or more image files.",
            param="image",
            code="missing_required_parameter",
        )
    if "model" not in upload.fields:
        upload = upload.with_field("model", IMAGE_DEFAULT_MODEL)
    asked = check_images(dict(upload.fields), settings, images)
    form_flag(upload.fields, "stream")
    return upload, asked


def form_flag(fields: dict[str, str], name: str) -> bool:
    """A multipart boolean field (`true`, `false`, as the openai SDK writes them); 400 otherwise."""
    value = fields.get(name, "false").strip().lower()
    if value not in ("true", "false"):
        raise BadRequest(f"{name!r} must be true or false.", param=name, code="invalid_value")
    return value == "true"


def json_flag(body: dict[str, Any], name: str) -> bool:
    """A JSON boolean field: true, false or null (400 otherwise)."""
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise BadRequest(f"{name!r} must be true or false.", param=name, code="invalid_type")
    return value is True


def _one_of(values: Any, name: str, allowed: tuple[str, ...]) -> None:
    found = values.get(name)
    if found is not None and found not in allowed:
        raise BadRequest(
            f"{name!r} must be one of {', '.join(allowed)}.", param=name, code="invalid_value"
        )
