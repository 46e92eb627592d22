"""Images in questions: what an image is (read from its bytes), and what it costs in tokens.

An image's format and pixel size are read from its header, in pure Python:
PNG's IHDR, GIF's logical screen, WebP's VP8/VP8L/VP8X header and JPEG's
start-of-frame segment. Nothing decodes the pixels, so an untrusted image (a
decompression bomb, a malformed frame) costs a few hundred bytes of parsing,
and no image library's parser is exposed to it. An image whose bytes are none
of these formats is not an image, whatever its name or declared type says.

Tokens follow OpenAI's published rule for images (platform.openai.com, "Images
and vision", "Calculating costs"): `detail` `low` is a flat base count; `high`
(and `auto`, counted as its worst case) scales the image to fit in 2048 × 2048,
then its shortest side down to 768, and counts tiles of 512 × 512 px: base +
per-tile × tiles. The base and per-tile counts are the model family's.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from typing import Any

IMAGE_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}
"""The formats questions may carry (OpenAI's for vision), by name: their media types."""
DETAILS = ("auto", "low", "high")
"""OpenAI's values of an image part's `detail`."""

# (base, per tile) tokens by model family, from OpenAI's vision pricing; the first
# prefix that matches wins, and other models take gpt-4o's.
_TILE_TOKENS = (
    ("gpt-4o-mini", (2833, 5667)),
    ("gpt-5", (70, 140)),
    ("o1", (75, 150)),
    ("o3", (75, 150)),
)
_DEFAULT_TILE_TOKENS = (85, 170)
_TILE = 512
_FIT = 2048
_SHORT_SIDE = 768
_MAX_TILES = 8  # 768 × 2048 after scaling: the most tiles any image takes
_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)?((?:;[\w.+-]+=[\w.+-]+)*);base64,", re.ASCII)
_JPEG_PREFIX_CHARS = 64 * 1024  # a JPEG's frame header is nearly always in its first 48 KiB


class NotAnImage(ValueError):
    """The bytes are not a PNG, JPEG, WebP or GIF image whose header can be read."""


@dataclass(frozen=True)
class ImageInfo:
    """What an image's header says: its format (a key of IMAGE_TYPES) and size in pixels."""

    format: str
    width: int
    height: int

    @property
    def media_type(self) -> str:
        """The image's media type (`image/png`, ...)."""
        return IMAGE_TYPES[self.format]


def sniff_image(data: bytes) -> ImageInfo:
    """The format and pixel size of the image in `data`, read from its header.

    Raises NotAnImage for anything else, or for a header without a positive size.
    """
    info = _sniff(data)
    if info is None or info.width < 1 or info.height < 1:
        raise NotAnImage("not a PNG, JPEG, WebP or GIF image")
    return info


def _sniff(data: bytes) -> ImageInfo | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 24:
        return ImageInfo("png", int.from_bytes(data[16:20]), int.from_bytes(data[20:24]))
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return ImageInfo(
            "gif", int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
        )
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        return _webp(data)
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg(data)
    return None


def _webp(data: bytes) -> ImageInfo | None:
    """A WebP's size (Google's "WebP Container Specification" and "VP8L Bitstream")."""
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width = int.from_bytes(data[26:28], "little") & 0x3FFF
        height = int.from_bytes(data[28:30], "little") & 0x3FFF
        return ImageInfo("webp", width, height)
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return ImageInfo("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return ImageInfo("webp", width, height)
    return None


def _jpeg(data: bytes) -> ImageInfo | None:
    """A JPEG's size from its first start-of-frame segment (ITU T.81, B.2.2)."""
    at = 2
    while at + 9 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            at += 2
            continue
        length = int.from_bytes(data[at + 2 : at + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(data[at + 5 : at + 7])
            width = int.from_bytes(data[at + 7 : at + 9])
            return ImageInfo("jpeg", width, height)
        if length < 2:
            return None
        at += 2 + length
    return None


def decode_data_url(url: str) -> tuple[str | None, bytes]:
    """(declared media type, bytes) of a `data:` URL in base64 (RFC 2397).

    Raises ValueError when it is not a base64 data URL or its base64 is not valid.
    """
    match = _DATA_URL.match(url)
    if match is None:
        raise ValueError("not a base64 data: URL")
    try:
        data = base64.b64decode(url[match.end() :], validate=True)
    except binascii.Error:
        raise ValueError("its base64 is not valid") from None
    return match.group(1), data


def data_url(media_type: str, data: bytes) -> str:
    """`data` as a base64 `data:` URL of `media_type`."""
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def url_image_size(url: str) -> tuple[int, int] | None:
    """The pixel size of an image given as a `data:` URL, from a prefix of it when that is
    enough (all but a JPEG with a large header); None for another URL or one not an image."""
    match = _DATA_URL.match(url)
    if match is None:
        return None
    encoded = url[match.end() :]
    for chars in (_JPEG_PREFIX_CHARS, len(encoded)):
        prefix = encoded[: chars - chars % 4]
        try:
            info = _sniff(base64.b64decode(prefix))
        except binascii.Error:
            return None
        if info is not None:
            return info.width, info.height
        if chars >= len(encoded):
            break
    return None


def image_tokens(width: int | None, height: int | None, detail: str | None, model: str) -> int:
    """Prompt tokens of one image for `model` by OpenAI's tile rule (module doc).

    A size that is not known (an `https` URL the upstream fetches) counts as
    the most tiles any image takes.
    """
    base, per_tile = _tile_tokens(model)
    if detail == "low":
        return base
    if not width or not height:
        return base + per_tile * _MAX_TILES
    return base + per_tile * tiles(width, height)


def tiles(width: int, height: int) -> int:
    """The 512-px tiles of an image at `high` detail, after OpenAI's two scalings."""
    scale = min(1.0, _FIT / max(width, height))
    scaled = (width * scale, height * scale)
    scale = min(1.0, _SHORT_SIDE / min(scaled))
    return math.ceil(scaled[0] * scale / _TILE) * math.ceil(scaled[1] * scale / _TILE)


def part_tokens(part: Any, model: str) -> int:
    """Tokens of one `image_url` content part for `model`; 0 for any other part."""
    if not isinstance(part, dict) or part.get("type") != "image_url":
        return 0
    image = part.get("image_url")
    if not isinstance(image, dict) or not isinstance(image.get("url"), str):
        return 0
    detail = image.get("detail")
    size = url_image_size(image["url"]) if detail != "low" else None
    width, height = size or (None, None)
    return image_tokens(width, height, detail, model)


def most_image_tokens(detail: str | None = None) -> int:
    """The most tokens one image takes for any model (a bound for reservations)."""
    base, per_tile = max(_TILE_TOKENS, key=lambda item: item[1][1])[1]
    return base if detail == "low" else base + per_tile * _MAX_TILES


def _tile_tokens(model: str) -> tuple[int, int]:
    name = model.rsplit("/", 1)[-1]
    if name.startswith("ft:"):
        name = name[3:]
    for prefix, counts in _TILE_TOKENS:
        if name.startswith(prefix):
            return counts
    return _DEFAULT_TILE_TOKENS
