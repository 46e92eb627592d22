"""Attachments kept with their questions: written with the question, read back for history,
the transcript, `/api/attachments/ID` and exports, and read from an import.

Rows of `attachments` (`models.StoredAttachment`). The bytes are read only
where they are sent (a question's history upstream, the attachment itself);
a transcript lists what each question carried without them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, select

from chatproxy.attachments import MAX_URL_CHARS, Attachment
from chatproxy.errors import BadRequest, NotFound
from chatproxy.images import DETAILS, NotAnImage, decode_data_url, sniff_image
from chatproxy.store.models import Conversation, Message, StoredAttachment

ATTACHMENTS = StoredAttachment.__table__
MAX_ID = 2**31 - 1  # ids are 32-bit integers
_INSERT_ATTACHMENT = ATTACHMENTS.insert()
# Everything but the bytes: what a transcript lists.
_LISTED = [column for column in ATTACHMENTS.c if column.name not in ("data", "text")]


def question_ids(messages: Iterable[Message]) -> list[int]:
    """The ids of the questions (user messages) among `messages`."""
    return [message.id for message in messages if message.role == "user"]


def insert_attachments(
    connection: Connection, message_id: int, attachments: Sequence[Attachment]
) -> None:
    """Write `attachments` as the rows of the question `message_id`, in order."""
    if not attachments:
        return
    connection.execute(
        _INSERT_ATTACHMENT,
        [
            {
                "message_id": message_id,
                "position": position,
                "kind": attachment.kind,
                "name": attachment.name,
                "media_type": attachment.media_type,
                "size": attachment.size,
                "width": attachment.width,
                "height": attachment.height,
                "detail": attachment.detail,
                "url": attachment.url,
                "text": attachment.text,
                "data": attachment.data,
            }
            for position, attachment in enumerate(attachments)
        ],
    )


def load_attachments(
    connectable: Engine | Connection, message_ids: Iterable[int]
) -> dict[int, list[Attachment]]:
    """The attachments of the messages `message_ids`, bytes and all: `{message_id: [...]}`."""
    ids = sorted(set(message_ids))
    if not ids:
        return {}
    query = (
        select(ATTACHMENTS)
        .where(ATTACHMENTS.c.message_id.in_(ids))
        .order_by(ATTACHMENTS.c.message_id, ATTACHMENTS.c.position)
    )
    if isinstance(connectable, Engine):
        with connectable.connect() as connection:
            rows = connection.execute(query).all()
    else:
        rows = connectable.execute(query).all()
    found: dict[int, list[Attachment]] = {}
    for row in rows:
        found.setdefault(row.message_id, []).append(
            Attachment(
                row.kind,
                row.media_type,
                name=row.name,
                data=row.data,
                url=row.url,
                width=row.width,
                height=row.height,
                detail=row.detail,
                text=row.text,
            )
        )
    return found


def listed_attachments(connection: Connection, message_ids: Iterable[int]) -> dict[int, list[Any]]:
    """What the messages `message_ids` carried, without the bytes, for a transcript:
    `{message_id: [{"id", "kind", "name", "media_type", "size", "width", "height", "detail",
    "url"}]}` (`url` set only for an image given as an `https` URL)."""
    ids = sorted(set(message_ids))
    if not ids:
        return {}
    query = (
        select(*_LISTED)
        .where(ATTACHMENTS.c.message_id.in_(ids))
        .order_by(ATTACHMENTS.c.message_id, ATTACHMENTS.c.position)
    )
    found: dict[int, list[Any]] = {}
    for row in connection.execute(query):
        found.setdefault(row.message_id, []).append(
            {
                "id": row.id,
                "kind": row.kind,
                "name": row.name,
                "media_type": row.media_type,
                "size": row.size,
                "width": row.width,
                "height": row.height,
                "detail": row.detail,
                "url": row.url,
            }
        )
    return found


def find_attachment(session: Any, attachment_id: int, owner: str | None) -> StoredAttachment:
    """The attachment `attachment_id` of a conversation of `owner`, bytes and all.

    Raises NotFound `attachment_not_found` for one that does not exist or
    is another's (the two are not told apart).
    """
    if not 1 <= attachment_id <= MAX_ID:  # beyond the column's range: PostgreSQL would refuse
        raise NotFound(
            f"No attachment {attachment_id} here.", param="id", code="attachment_not_found"
        )
    found = session.execute(
        select(StoredAttachment, Conversation.owner)
        .join(Message, Message.id == StoredAttachment.message_id)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(StoredAttachment.id == attachment_id)
    ).first()
    if found is None or found[1] != owner:
        raise NotFound(
            f"No attachment {attachment_id} here.", param="id", code="attachment_not_found"
        )
    attachment: StoredAttachment = found[0]
    return attachment


# ---------- Exports and imports ----------

_FILE_PART = re.compile(r'<file name="([^"]*)">\n(.*)\n</file>', re.DOTALL)
MAX_IMPORTED_IMAGE_BYTES = 20 * 1024 * 1024  # OpenAI's limit for one image


def markdown_line(attachments: Sequence[Attachment]) -> str:
    """An italic line naming a question's attachments, for the Markdown export ("" if none):
    `_Attached: image chart.png (image/png, 400×300 px, 12.3 KB) · file report.pdf (...)_`."""
    if not attachments:
        return ""
    named = []
    for attachment in attachments:
        about = [attachment.media_type]
        if attachment.width and attachment.height:
            about.append(f"{attachment.width}×{attachment.height} px")
        if attachment.size:
            about.append(_size(attachment.size))
        name = attachment.name or attachment.url
        named.append(f"{attachment.kind}{' ' + name if name else ''} ({', '.join(about)})")
    return "_Attached: " + " · ".join(named) + "_"


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


def imported_content(content: Any, where: str) -> tuple[str, list[StoredAttachment]] | None:
    """A `content` list of an import (OpenAI's parts, as the JSON export writes them) read
    back: its text, and its images and files as rows to store; None when `content` is no list.

    Text parts join into the text, but those `<file name="...">` parts, which become
    files (their text; a PDF's or .docx's bytes are not in an export). `image_url` parts
    with a data URL become images (checked by content), those with an `https` URL
    stay URLs. Raises BadRequest naming `where` for anything else.
    """
    if not isinstance(content, list):
        return None
    texts: list[str] = []
    rows: list[StoredAttachment] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str) and "\x00" not in part["text"]:
            found = _FILE_PART.fullmatch(part["text"])
            if found is None:
                texts.append(part["text"])
                continue
            data = found.group(2).encode()
            rows.append(
                StoredAttachment(
                    kind="file",
                    name=found.group(1)[:255],
                    media_type="text/plain",
                    size=len(data),
                    text=found.group(2),
                    data=data,
                )
            )
        elif kind == "image_url":
            rows.append(_imported_image(part.get("image_url"), f"{where}.content[{index}]"))
        else:
            raise BadRequest(
                f"{where}.content[{index}] must be a text or image_url part.", param="messages"
            )
    for position, row in enumerate(rows):
        row.position = position
    return "\n".join(texts), rows


def _imported_image(image: Any, where: str) -> StoredAttachment:
    url = image.get("url") if isinstance(image, dict) else None
    detail = image.get("detail") if isinstance(image, dict) else None
    detail = detail if detail in DETAILS else None
    if isinstance(url, str) and url.startswith("https://") and len(url) <= MAX_URL_CHARS:
        return StoredAttachment(kind="image", media_type="image/*", size=0, url=url, detail=detail)
    try:
        if not isinstance(url, str):
            raise ValueError
        data = decode_data_url(url)[1]
        if len(data) > MAX_IMPORTED_IMAGE_BYTES:
            raise ValueError
        info = sniff_image(data)
    except (ValueError, NotAnImage):
        raise BadRequest(
            f"{where} must be a PNG, JPEG, WebP or GIF data: URL (up to 20 MB) or an https URL.",
            param="messages",
        ) from None
    return StoredAttachment(
        kind="image",
        media_type=info.media_type,
        size=len(data),
        width=info.width,
        height=info.height,
        detail=detail,
        data=data,
    )
