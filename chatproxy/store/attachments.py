"""Attachments kept with their questions: written with the question, read back for history,
the transcript and `/api/attachments/ID`.

Rows of `attachments` (`models.StoredAttachment`). The bytes are read only
where they are sent (a question's history upstream, the attachment itself);
a transcript lists what each question carried without them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, select

from chatproxy.attachments import Attachment
from chatproxy.errors import NotFound
from chatproxy.store.models import Conversation, Message, StoredAttachment

ATTACHMENTS = StoredAttachment.__table__
_INSERT_ATTACHMENT = ATTACHMENTS.insert()
# Everything but the bytes: what a transcript lists.
_LISTED = [column for column in ATTACHMENTS.c if column.name not in ("data", "text")]


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
