"""The stored tables (SQLAlchemy 2 models; schema in `migrations/`): conversations, keys, usage,
reservations, idempotency keys and the owners of responses."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from chatproxy.store.database import db

STATUSES = ("ok", "error", "interrupted", "streaming")
"""A message's status: answered (`ok`), the upstream failed (`error`), cut short
(`interrupted`), or an answer still arriving (`streaming`, saved every few seconds)."""
ROLES = ("system", "user", "assistant")
IDEMPOTENCY_STATUSES = ("in_progress", "done", "too_large")
"""An idempotency key's status: its request is being answered (`in_progress`), its answer is
kept for a retry (`done`), or it was answered but too large to keep (`too_large`)."""
TITLE_LENGTH = 200


def utcnow() -> datetime:
    """Now, in UTC, with its time zone."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive one (SQLite hands times back without a zone) is taken as UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def new_id() -> str:
    """A conversation id: 32 random hex digits (unguessable; it is all a GET client holds)."""
    return uuid.uuid4().hex


class Conversation(db.Model):  # type: ignore[name-defined,misc]
    """One conversation: its messages, the persona and model it was started with, its owner.

    `owner` is whoever may see it: None for everyone while CHATPROXY_AUTH is open.
    Its messages form a tree (`Message.parent_id`): an edited question or a
    regenerated answer is a sibling of the one it stands beside.
    `current_message_id` is the message the current branch goes through (set
    when a question is asked or another branch is chosen); below it the branch
    goes on through the newest reply at each step, and None means from the
    newest first message (`chatproxy.store.branches`).
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
    # No foreign key: the two tables would each need the other's row first.
    current_message_id: Mapped[int | None] = mapped_column(Integer)
    messages: Mapped[list[Message]] = relationship(
        back_populates="conversation",
        order_by="Message.id",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class Message(db.Model):  # type: ignore[name-defined,misc]
    """One message of a conversation, in order of `id`, below the message it follows.

    `parent_id` is the message it follows (None for a conversation's first):
    questions asked again as edits, and answers regenerated, share a parent
    with the versions before them (siblings), which are all kept.

    A question (`user`) is stored before the upstream is called; its `status`
    becomes `error` (with `error_code` and `error_message`) when the upstream
    failed before answering. An answer (`assistant`) carries the model that
    wrote it, its `finish_reason`, the usage the upstream reported
    (`prompt_tokens` of the whole request, `completion_tokens`), and status
    `interrupted` when it was cut short (Stop, a closed tab, a broken stream).
    The model's reasoning is kept apart from the answer (`reasoning`, never
    sent upstream again), with the upstream's count of its tokens
    (`reasoning_tokens`, part of `completion_tokens`) and how many seconds it
    streamed before the answer started (`reasoning_seconds`).
    While it streams it is saved every CHATPROXY_CHECKPOINT_SECONDS with status
    `streaming` and `updated_at`; one left so by a worker that died is marked
    `interrupted` when a worker starts (`conversations.sweep_unfinished`).
    """

    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint(f"status IN {STATUSES}", name="ck_messages_status"),
        CheckConstraint(f"role IN {ROLES}", name="ck_messages_role"),
        # Ids are never reused (a deleted conversation's), so the newest sibling is the highest.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(200))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    finish_reason: Mapped[str | None] = mapped_column(String(40))
    reasoning: Mapped[str | None] = mapped_column(Text)
    reasoning_tokens: Mapped[int | None] = mapped_column(Integer)
    reasoning_seconds: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), default="ok")
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    conversation: Mapped[Conversation] = relationship(back_populates="messages")
    # Set by an import, which builds a tree before its rows have ids.
    parent: Mapped[Message | None] = relationship(remote_side=[id])
    # Set by an import too; questions asked store theirs with Core statements.
    attachments: Mapped[list[StoredAttachment]] = relationship(
        order_by="StoredAttachment.position", cascade="all, delete-orphan", passive_deletes=True
    )


class StoredAttachment(db.Model):  # type: ignore[name-defined,misc]
    """An image or file attached to a question (`chatproxy.attachments.Attachment`), kept with it.

    `kind` is `image` or `file`, `position` its place among the question's;
    `media_type` was read from its bytes; `data` holds the bytes (None for an
    image given as an `https` URL, kept in `url`), `size` their length;
    `width`/`height` an image's pixels, `detail` OpenAI's for it; `text` a
    file's extracted text (what the upstream is sent). Deleted with its message.
    """

    __tablename__ = "attachments"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer, default=0)
    kind: Mapped[str] = mapped_column(String(8))
    name: Mapped[str | None] = mapped_column(String(255))
    media_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(Integer, default=0)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(String(8))
    url: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    data: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)


class AccessKey(db.Model):  # type: ignore[name-defined,misc]
    """An access key of chatproxy (`cpk-...`), never OpenAI's: who may ask, and how much.

    Only the key's SHA-256 is stored (the key is 256 random bits, so no slow
    hash is needed) and its first characters (`prefix`) to find it and show
    it. A limit that is None does not apply; `models` None means all of
    CHATPROXY_MODELS. An `admin` key may also open the console (`/admin`) and
    call its API (`/api/admin/...`); its own limits still apply to its questions.
    """

    __tablename__ = "access_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    rpm: Mapped[int | None] = mapped_column(BigInteger)
    tpm: Mapped[int | None] = mapped_column(BigInteger)
    tokens_per_day: Mapped[int | None] = mapped_column(BigInteger)
    usd_per_day: Mapped[float | None] = mapped_column(Float)
    models: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class UsageDay(db.Model):  # type: ignore[name-defined,misc]
    """The usage ledger: one row per key, UTC day and model, summed as answers end.

    `key_name` is the access key's name, or `open` for questions asked while
    CHATPROXY_AUTH=open; `cost` is in USD (0 for a model without a price).
    `counted_requests` of the `requests` had no usage from the upstream (cut
    short, or a server that sends none): chatproxy counted their tokens itself.
    """

    __tablename__ = "usage_days"
    __table_args__ = (UniqueConstraint("key_name", "day", "model", name="uq_usage_days_key_day"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_name: Mapped[str] = mapped_column(String(100))
    day: Mapped[date] = mapped_column(Date)
    model: Mapped[str] = mapped_column(String(200))
    requests: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    counted_requests: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Reservation(db.Model):  # type: ignore[name-defined,misc]
    """A request's worst case held against its key's daily quotas while it is answered.

    `tokens` and `cost` (USD) are deleted when the answer's usage is written
    (`chatproxy.access.reservations`); a row whose worker died stops counting
    at `expires_at`.
    """

    __tablename__ = "reservations"
    # What a key holds is summed for every request it makes: the index holds all the sum
    # reads (`chatproxy.access.reservations`), and finds the expired rows at once.
    __table_args__ = (Index("ix_reservations_held", "key_name", "expires_at", "tokens", "cost"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_name: Mapped[str] = mapped_column(String(100))
    tokens: Mapped[int] = mapped_column(BigInteger)
    cost: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SpooledWrite(db.Model):  # type: ignore[name-defined,misc]
    """A transaction of the spool already written (`chatproxy.store.spool`): never twice."""

    __tablename__ = "spooled_writes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    written_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IdempotencyKey(db.Model):  # type: ignore[name-defined,misc]
    """A request sent with an `Idempotency-Key`: recorded before it is answered, then its answer.

    One row per caller (`owner`: the access key's name, `open` while
    CHATPROXY_AUTH is open) and `key`. `route` and `fingerprint` (the SHA-256
    of the method, route and parameters) are those of the request that first
    used the key. Once answered, `response` holds what a retry gets back,
    `content_type` saying what it is: `/callChatGPT`'s answer as JSON, or the
    upstream's body or stream bytes for `/v1`. `updated_at` is when the row was
    claimed or answered. Rows older than a day no longer count and are deleted
    lazily (`chatproxy.store.idempotency`).
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("owner", "key", name="uq_idempotency_keys_owner_key"),
        CheckConstraint(f"status IN {IDEMPOTENCY_STATUSES}", name="ck_idempotency_keys_status"),
        # Ids are never reused: a claim taken over after its worker died must not find the
        # row of the request that took it over.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(String(255))
    route: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="in_progress")
    content_type: Mapped[str | None] = mapped_column(String(100))
    response: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ResponseOwner(db.Model):  # type: ignore[name-defined,misc]
    """A response of the Responses API (`/v1/responses`) and the caller that created it.

    `response_id` is the upstream's id (`resp_...`); `owner` the access key's
    name (`open` while CHATPROXY_AUTH is open). Only its owner may retrieve,
    delete, cancel or continue it (`chatproxy.store.response_owners`).
    """

    __tablename__ = "response_owners"

    response_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    owner: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RequestLogRow(db.Model):  # type: ignore[name-defined,misc]
    """One request that reached the upstream or was refused by a limit (the request log).

    `at` is when it started; `route` the route's rule (`/v1/chat/completions`);
    `key_name` the access key's name (`open` in open mode); `model` the one
    asked for; `upstream` the server that answered (or failed last); `status`
    the HTTP status sent; `outcome` how it ended (`ok`, `client_gone`, an
    error's code); tokens as the ledger charged them; `cost` in USD;
    `ttft_ms` from the request's start to the first piece of a streamed
    answer, `total_ms` to its end. Never a question, an answer or a key.
    Written in batches (`chatproxy.store.request_log`), kept
    CHATPROXY_REQUEST_LOG_DAYS.
    """

    __tablename__ = "request_log"
    __table_args__ = (
        Index("ix_request_log_at", "at"),
        Index("ix_request_log_key_at", "key_name", "at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    request_id: Mapped[str] = mapped_column(String(64))
    key_name: Mapped[str | None] = mapped_column(String(100))
    route: Mapped[str] = mapped_column(String(100))
    model: Mapped[str | None] = mapped_column(String(200))
    upstream: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str | None] = mapped_column(String(64))
    prompt_tokens: Mapped[int | None] = mapped_column(BigInteger)
    completion_tokens: Mapped[int | None] = mapped_column(BigInteger)
    reasoning_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cost: Mapped[float | None] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    total_ms: Mapped[float] = mapped_column(Float)


class StoredPersona(db.Model):  # type: ignore[name-defined,misc]
    """A persona made in the console: `data` is the JSON a persona file would hold, checked
    by the same rules (`chatproxy.personas.persona_from`). Its id is never a file's."""

    __tablename__ = "personas"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
