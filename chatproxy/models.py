"""The stored conversations and their messages (SQLAlchemy 2 models; schema in `migrations/`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from chatproxy.store import db

STATUSES = ("ok", "error", "interrupted")
"""A message's status: answered (`ok`), the upstream failed (`error`), cut short (`interrupted`)."""
ROLES = ("system", "user", "assistant")
TITLE_LENGTH = 200


def utcnow() -> datetime:
    """Now, in UTC, with its time zone."""
    return datetime.now(UTC)


def new_id() -> str:
    """A conversation id: 32 random hex digits (unguessable; it is all a GET client holds)."""
    return uuid.uuid4().hex


class Conversation(db.Model):  # type: ignore[name-defined,misc]
    """One conversation: its messages, the persona and model it was started with, its owner.

    `owner` is whoever may see it: None for everyone while CHATPROXY_AUTH is open.
    """

    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_owner_updated", "owner", "updated_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    title: Mapped[str] = mapped_column(String(TITLE_LENGTH))
    persona: Mapped[str | None] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(200))
    owner: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    messages: Mapped[list[Message]] = relationship(
        back_populates="conversation",
        order_by="Message.id",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class Message(db.Model):  # type: ignore[name-defined,misc]
    """One message of a conversation, in order of `id`.

    A question (`user`) is stored before the upstream is called; its `status`
    becomes `error` (with `error_code` and `error_message`) when the upstream
    failed before answering. An answer (`assistant`) carries the model that
    wrote it, its `finish_reason`, the usage the upstream reported
    (`prompt_tokens` of the whole request, `completion_tokens`), and status
    `interrupted` when it was cut short (Stop, a closed tab, a broken stream).
    """

    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint(f"status IN {STATUSES}", name="ck_messages_status"),
        CheckConstraint(f"role IN {ROLES}", name="ck_messages_role"),
        # Ids are never reused, even after the newest message was replaced (Regenerate).
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(200))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    finish_reason: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16), default="ok")
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    conversation: Mapped[Conversation] = relationship(back_populates="messages")
