"""The OpenAPI document's attachments: `/api/attachments/{attachment_id}`, the `images` and
`files` of a question (JSON, and multipart parts `image` and `file`), and what a stored
question lists of them (`chatproxy.attachments`, `chatproxy.web.attachments_api`)."""

from __future__ import annotations

from chatproxy.images import DETAILS
from chatproxy.web.openapi.components import Operations, errors, ok
from chatproxy.web.openapi.schemas import Schema, array, integer, loose, nullable, shape, string

MULTIPART = "multipart/form-data"
IMAGE_URL = string(
    pattern=r"^(data:|https://)",
    description="A base64 `data:` URL of a PNG, JPEG, WebP or GIF (checked by its bytes; "
    "each up to CHATPROXY_MAX_IMAGE_BYTES, 413 `image_too_large` beyond), or an `https` URL "
    "passed on for the upstream to fetch (chatproxy never fetches it).",
)
DETAIL = string(enum=list(DETAILS), description="OpenAI's `detail` for the image.")


def attachment_fields() -> dict[str, Schema]:
    """`images` and `files` of a JSON question."""
    return {
        "images": array(
            {"anyOf": [IMAGE_URL, loose("url", url=IMAGE_URL, detail=DETAIL)]},
            description="Images for a model that sees them (CHATPROXY_VISION_MODELS; others: "
            "400 `image_not_supported`), at most CHATPROXY_MAX_IMAGES (400 "
            "`too_many_images`); 400 `invalid_image` (param `images[i]`) for one that is not "
            "decodable or not an image.",
        ),
        "files": array(
            loose(
                "name content_base64",
                name=string(maxLength=255),
                content_base64=string(contentEncoding="base64"),
            ),
            description="Text and code (UTF-8), PDF or Word .docx, their text sent as context "
            '(`<file name="...">`); at most CHATPROXY_MAX_FILES (400 `too_many_files`), each up '
            "to CHATPROXY_MAX_FILE_BYTES (413 `file_too_large`); 400 `invalid_file` for another "
            "kind or a PDF without text (a scan), 400 `context_length_exceeded` (param `file`) "
            "for one too long for the window.",
        ),
    }


def multipart_question(form: Schema) -> Schema:
    """The multipart form of a question: `form`'s fields, `image` and `file` parts, `detail`."""
    binary = string(contentMediaType="application/octet-stream")
    return {
        **form,
        "properties": {
            **form["properties"],
            "image": array(binary, description="Images (repeat the part), as in `images`."),
            "file": array(binary, description="Files (repeat the part), as in `files`."),
            "detail": DETAIL,
        },
    }


def attachment_schemas() -> dict[str, Schema]:
    """What a stored question lists of its attachments (`/api/conversations/{id}`)."""
    return {
        "Attachment": shape(
            id=integer(description="Its bytes: `GET /api/attachments/{id}`"),
            kind=string(enum=["image", "file"]),
            name=nullable(string()),
            media_type=string(description="Read from its bytes"),
            size=integer(description="Bytes (0 for an image given as a URL)"),
            width=nullable(integer()),
            height=nullable(integer()),
            detail=nullable(DETAIL),
            url=nullable(string(description="An image given as an `https` URL")),
        )
    }


def attachment_paths(ops: Operations) -> dict[str, Schema]:
    """`/api/attachments/{attachment_id}`."""
    ops = ops.tagged("conversations")
    return {
        "/api/attachments/{attachment_id}": {
            "parameters": [
                {
                    "name": "attachment_id",
                    "in": "path",
                    "required": True,
                    "schema": integer(minimum=1, maximum=2**31 - 1),
                    "description": "Any other value: 404 `attachment_not_found`.",
                }
            ],
            "get": ops.api(
                "getAttachment",
                "An image or file of a question",
                {
                    "200": ok(
                        "Its bytes, with the `Content-Type` read from them, "
                        "`X-Content-Type-Options: nosniff`, and `Content-Disposition` "
                        "`inline` (an image) or `attachment` with its name (a file)",
                        # An image's type (image/png, ...) or a file's (application/pdf, ...).
                        {"*/*": string(description="The bytes as attached")},
                    ),
                    "302": ok("An image given as an `https` URL: `Location` is that URL"),
                    **errors(401, 404),
                },
                description="Only the owner of its conversation gets it; anyone else: 404 "
                "`attachment_not_found`, as for one that does not exist.",
            ),
        }
    }
