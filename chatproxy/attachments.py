"""Images and files attached to a question: read, checked and turned into content parts.

They come to `/callChatGPT` as multipart parts (`image`, `file`, repeatable)
or in a JSON body (`images`: data URLs, `https` URLs or `{"url", "detail"}`
objects; `files`: `{"name", "content_base64"}` objects). Each is checked by
its bytes (`chatproxy.images`, `chatproxy.file_text`), against
CHATPROXY_MAX_IMAGE_BYTES / CHATPROXY_MAX_IMAGES and CHATPROXY_MAX_FILE_BYTES /
CHATPROXY_MAX_FILES; a bad one raises BadRequest (413 PayloadTooLarge for one
too large) naming its part (`images[1]`, `image`, `files[0]`, `file`).
An `https` URL is passed on for the upstream to fetch: chatproxy never fetches it.

Upstream, images are OpenAI's content parts (`{"type": "image_url",
"image_url": {"url": "data:...", "detail"?}}`), files a text part each:
`<file name="NAME">` TEXT `</file>`, after the question's text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from chatproxy.config import Settings
from chatproxy.errors import BadRequest, PayloadTooLarge
from chatproxy.file_text import UnreadableFile, read_file_text
from chatproxy.images import DETAILS, IMAGE_TYPES, NotAnImage, data_url, decode_data_url
from chatproxy.images import sniff_image as sniff_image

MAX_NAME_CHARS = 255
MAX_URL_CHARS = 8192


@dataclass(frozen=True)
class Attachment:
    """One image or file of a question.

    `kind` is `image` or `file`; `media_type` is read from the bytes; `data`
    the bytes (None for an image given as an `https` URL, then in `url`);
    `width` and `height` an image's pixels when known; `detail` OpenAI's for
    the image, when given; `text` a file's text; `name` a file's name (or an
    uploaded image's).
    """

    kind: str
    media_type: str
    name: str | None = None
    data: bytes | None = None
    url: str | None = None
    width: int | None = None
    height: int | None = None
    detail: str | None = None
    text: str | None = None

    @property
    def size(self) -> int:
        """The attachment's bytes (0 for an image given as a URL)."""
        return len(self.data) if self.data is not None else 0

    def fingerprint(self) -> str:
        """What the attachment is, for an Idempotency-Key's fingerprint: its kind, name,
        detail and the SHA-256 of its bytes (or URL); multipart and JSON alike."""
        digest = hashlib.sha256(self.data if self.data is not None else (self.url or "").encode())
        return f"{self.kind}:{self.name or ''}:{self.detail or ''}:{digest.hexdigest()}"

    def image_part(self) -> dict[str, Any]:
        """An image as OpenAI's content part."""
        url = self.url if self.data is None else data_url(self.media_type, self.data)
        image: dict[str, Any] = {"url": url}
        if self.detail:
            image["detail"] = self.detail
        return {"type": "image_url", "image_url": image}

    def file_part(self) -> dict[str, Any]:
        """A file's text as a text part, delimited and named."""
        return {"type": "text", "text": file_context(self.name or "file", self.text or "")}


def file_context(name: str, text: str) -> str:
    """A file's text as the question's context: `<file name="NAME">`, the text, `</file>`."""
    safe = name.replace('"', "'").replace("\n", " ")
    return f'<file name="{safe}">\n{text}\n</file>'


def content_parts(text: str, attachments: Iterable[Attachment]) -> str | list[dict[str, Any]]:
    """A user message's `content`: `text` alone, or its text, the files' texts, then images."""
    attachments = list(attachments)
    if not attachments:
        return text
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts.extend(a.file_part() for a in attachments if a.kind == "file")
    parts.extend(a.image_part() for a in attachments if a.kind == "image")
    return parts


class Upload(Protocol):
    """A multipart file part (werkzeug's FileStorage): its name and a stream of its bytes."""

    filename: str | None

    def read(self, size: int = -1) -> bytes: ...


def read_attachments(
    values: Mapping[str, Any],
    uploads: Mapping[str, Sequence[Upload]],
    settings: Settings,
    model: str,
) -> list[Attachment]:
    """The attachments of a question: JSON `images` and `files` in `values`, multipart parts
    `image` and `file` in `uploads` (`{"image": [FileStorage, ...]}`), checked.

    `detail` (one of DETAILS) applies to multipart images. Raises BadRequest
    `image_not_supported` (param `model`) when there are images and `model` is
    not one of CHATPROXY_VISION_MODELS, `too_many_images` / `too_many_files`,
    `invalid_image` / `invalid_file` (not decodable, of the wrong kind,
    a scanned PDF), and PayloadTooLarge `image_too_large` / `file_too_large`.
    """
    detail = values.get("detail")
    if detail is not None and detail not in DETAILS:
        raise BadRequest(f"'detail' must be one of {', '.join(DETAILS)}.", param="detail")
    images: list[Attachment] = []
    for index, item in enumerate(_listed(values, "images")):
        images.append(_json_image(item, f"images[{index}]", settings))
    for upload in uploads.get("image", []):
        data = _read_capped(upload, settings.max_image_bytes, "image")
        images.append(_image(data, "image", detail, upload.filename))
    files: list[Attachment] = []
    for index, item in enumerate(_listed(values, "files")):
        files.append(_json_file(item, f"files[{index}]", settings))
    for upload in uploads.get("file", []):
        data = _read_capped(upload, settings.max_file_bytes, "file")
        files.append(_file(data, upload.filename or "file", "file"))
    if len(images) > settings.max_images:
        raise BadRequest(
            f"{len(images)} images; a question takes at most {settings.max_images} "
            "(CHATPROXY_MAX_IMAGES).",
            param="images" if values.get("images") else "image",
            code="too_many_images",
        )
    if len(files) > settings.max_files:
        raise BadRequest(
            f"{len(files)} files; a question takes at most {settings.max_files} "
            "(CHATPROXY_MAX_FILES).",
            param="files" if values.get("files") else "file",
            code="too_many_files",
        )
    if images and not settings.sees_images(settings.upstream_model(model)):
        raise BadRequest(
            f"The model {model!r} does not take images. Ask a model that sees images "
            f"(CHATPROXY_VISION_MODELS: {', '.join(settings.vision_models)}).",
            param="model",
            code="image_not_supported",
        )
    return [*files, *images]


def _listed(values: Mapping[str, Any], name: str) -> list[Any]:
    items = values.get(name)
    if items is None or items == "":
        return []
    if not isinstance(items, list):
        raise BadRequest(f"{name!r} must be a list.", param=name, code="invalid_type")
    return items


def _json_image(item: Any, param: str, settings: Settings) -> Attachment:
    detail = None
    if isinstance(item, dict):
        detail = item.get("detail")
        if detail is not None and detail not in DETAILS:
            raise BadRequest(
                f"{param}.detail must be one of {', '.join(DETAILS)}.", param=f"{param}.detail"
            )
        item = item.get("url")
    if not isinstance(item, str) or not item:
        raise BadRequest(
            f"{param} must be a data: URL, an https URL or an object with 'url'.",
            param=param,
            code="invalid_image",
        )
    if item.startswith("https://"):
        if len(item) > MAX_URL_CHARS or any(c.isspace() or ord(c) < 32 for c in item):
            raise BadRequest(f"{param} is not a usable https URL.", param=param, code="invalid_url")
        # Passed on for the upstream to fetch; its type and size are the upstream's to check.
        return Attachment("image", "image/*", url=item, detail=detail)
    if not item.startswith("data:"):
        raise BadRequest(
            f"{param} must be a data: URL (base64) or an https URL; chatproxy fetches no URL.",
            param=param,
            code="invalid_image",
        )
    # Base64 is 4 characters for 3 bytes: refuse before decoding what is sure to be too large.
    if len(item) > settings.max_image_bytes * 4 // 3 + 200:
        raise _too_large(param, "image", settings.max_image_bytes)
    try:
        _declared, data = decode_data_url(item)
    except ValueError as error:
        raise BadRequest(
            f"{param} cannot be decoded: {error}.", param=param, code="invalid_image"
        ) from None
    if len(data) > settings.max_image_bytes:
        raise _too_large(param, "image", settings.max_image_bytes)
    return _image(data, param, detail, None)


def _image(data: bytes, param: str, detail: str | None, name: str | None) -> Attachment:
    try:
        info = sniff_image(data)
    except NotAnImage:
        raise BadRequest(
            f"{param} is not an image of a type questions take "
            f"({', '.join(t.upper() for t in IMAGE_TYPES)}), by its content.",
            param=param,
            code="invalid_image",
        ) from None
    return Attachment(
        "image",
        info.media_type,
        name=_name(name),
        data=data,
        width=info.width,
        height=info.height,
        detail=detail,
    )


def _json_file(item: Any, param: str, settings: Settings) -> Attachment:
    if (
        not isinstance(item, dict)
        or not isinstance(item.get("name"), str)
        or not isinstance(item.get("content_base64"), str)
    ):
        raise BadRequest(
            f'{param} must be an object {{"name": ..., "content_base64": ...}}.',
            param=param,
            code="invalid_file",
        )
    encoded = item["content_base64"]
    if len(encoded) > settings.max_file_bytes * 4 // 3 + 8:
        raise _too_large(param, "file", settings.max_file_bytes)
    try:
        data = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise BadRequest(
            f"{param}.content_base64 is not valid base64.", param=param, code="invalid_file"
        ) from None
    if len(data) > settings.max_file_bytes:
        raise _too_large(param, "file", settings.max_file_bytes)
    return _file(data, item["name"], param)


def _file(data: bytes, name: str, param: str) -> Attachment:
    clean = _name(name) or "file"
    try:
        read = read_file_text(data)
    except UnreadableFile as error:
        raise BadRequest(
            f"{param} ({clean!r}) cannot be used: {error}.", param=param, code="invalid_file"
        ) from None
    return Attachment("file", read.media_type, name=clean, data=data, text=read.text)


def _name(name: str | None) -> str | None:
    """A file name as given, its folders and control characters dropped, bounded."""
    if not name:
        return None
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    clean = "".join(c for c in base if c.isprintable())[:MAX_NAME_CHARS].strip()
    return clean or None


def _read_capped(upload: Upload, limit: int, param: str) -> bytes:
    data = upload.read(limit + 1)
    if len(data) > limit:
        raise _too_large(param, param, limit)
    return data


def _too_large(param: str, kind: str, limit: int) -> PayloadTooLarge:
    setting = "CHATPROXY_MAX_IMAGE_BYTES" if kind == "image" else "CHATPROXY_MAX_FILE_BYTES"
    return PayloadTooLarge(
        f"{param} is larger than {limit:,} bytes, the limit for one {kind} ({setting}).",
        param=param,
        code=f"{kind}_too_large",
    )
