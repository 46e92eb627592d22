"""A conversation as Markdown or JSON, and a JSON export read back in.

Markdown follows the `history/*.md` files people keep from terminal chats: a
`# title`, then a `## role` heading and the text for each message; an answer's
reasoning comes first, in a `<details>` section whose summary is "Reasoning".
JSON holds OpenAI's `messages` list (`{"role", "content"}` items, ready to send
to `/v1/chat/completions`) and, beside it, `metadata`: the conversation's
title, persona, model and times, and per message (same order) its status,
model, finish_reason, tokens and time, and the model's reasoning as
`reasoning_content` (DeepSeek's name; not in `messages`, which servers such as
DeepSeek's refuse with it), with `reasoning_tokens` and `reasoning_seconds`.
Import reads `reasoning_content` there, or on a message item as other tools
keep it.

A question's images and files are in JSON as OpenAI's content parts, as
they are sent upstream (images as `data:` URLs, files as `<file name=...>`
text parts), and come back from an import (`store.attachments.imported_content`;
a file as its text). Markdown names each in an italic `_Attached: ..._` line.

A conversation with branches (`chatproxy.store.branches`) is exported as its
current branch in Markdown and in `messages`, and whole in JSON's
`metadata.tree`: every message kept, oldest first, each `{"id", "parent_id",
"role", "content"}` and the same details (ids local to the file), with
`metadata.current_message_id` naming the current branch's last message. An
import rebuilds the tree from `metadata.tree` when it is there; an export
made before branches (or any `{"messages": [...]}`) comes in as one branch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

from chatproxy.attachments import Attachment, content_parts
from chatproxy.errors import BadRequest
from chatproxy.store.attachments import imported_content, markdown_line
from chatproxy.store.branches import current_branch
from chatproxy.store.conversations import title_from
from chatproxy.store.models import (
    ROLES,
    STATUSES,
    TITLE_LENGTH,
    Conversation,
    Message,
    as_utc,
    utcnow,
)

FORMAT = "chatproxy.conversation"
MAX_IMPORTED_MESSAGES = 2000
_FILENAME_UNSAFE = re.compile(r"[^\w\-. ]+")


Attached = Mapping[int, Sequence[Attachment]]
"""A conversation's attachments by message id (`store.attachments.load_attachments`)."""


def to_markdown(conversation: Conversation, attached: Attached | None = None) -> str:
    """The conversation as Markdown: `# title`, then `## role` and the content per message.

    An answer's reasoning comes before it, in `<details>` with the summary
    `Reasoning` (GitHub and most Markdown viewers show it folded). An answer
    cut short or a question that failed says so in an italic line.
    """
    lines = [f"# {conversation.title}", ""]
    about = [f"model {conversation.model}"]
    if conversation.persona:
        about.append(f"persona {conversation.persona}")
    about.append(f"started {as_utc(conversation.created_at):%Y-%m-%d %H:%M} UTC")
    lines += ["_" + " · ".join(about) + "_", ""]
    for message in current_branch(conversation):
        lines += [f"## {message.role}", ""]
        if message.reasoning:
            lines += ["<details>", "<summary>Reasoning</summary>", ""]
            lines += [message.reasoning.strip(), "", "</details>", ""]
        lines += [message.content.rstrip(), ""]
        named = markdown_line((attached or {}).get(message.id, []))
        if named:
            lines += [named, ""]
        if message.status == "interrupted":
            lines += ["_(interrupted: the answer was cut short)_", ""]
        elif message.status == "error":
            lines += [f"_(error: {message.error_message or 'the upstream failed'})_", ""]
    return "\n".join(lines)


def to_json(conversation: Conversation, attached: Attached | None = None) -> dict[str, Any]:
    """The conversation as `{"object", "messages": [...], "metadata": {...}}` (module doc)."""
    branch = current_branch(conversation)
    attached = attached or {}

    def content(message: Message) -> Any:
        return content_parts(message.content, attached.get(message.id, []))

    return {
        "object": FORMAT,
        "messages": [{"role": m.role, "content": content(m)} for m in branch],
        "metadata": {
            "id": conversation.id,
            "title": conversation.title,
            "persona": conversation.persona,
            "model": conversation.model,
            "created_at": iso(conversation.created_at),
            "updated_at": iso(conversation.updated_at),
            "messages": [_details(m) for m in branch],
            "current_message_id": branch[-1].id if branch else None,
            "tree": [
                {
                    "id": m.id,
                    "parent_id": m.parent_id,
                    "role": m.role,
                    "content": content(m),
                    **_details(m),
                }
                for m in conversation.messages
            ],
        },
    }


def _details(message: Message) -> dict[str, Any]:
    """What JSON keeps of a message beside its role and content (`metadata.messages` items)."""
    return {
        "status": message.status,
        "model": message.model,
        "finish_reason": message.finish_reason,
        "prompt_tokens": message.prompt_tokens,
        "completion_tokens": message.completion_tokens,
        "reasoning_content": message.reasoning,
        "reasoning_tokens": message.reasoning_tokens,
        "reasoning_seconds": message.reasoning_seconds,
        "error": {"code": message.error_code, "message": message.error_message}
        if message.status == "error"
        else None,
        "created_at": iso(message.created_at),
    }


def filename(conversation: Conversation, extension: str) -> str:
    """A download's file name from the title's first words, like `谁赢了2022年世界杯.md`."""
    stem = _FILENAME_UNSAFE.sub("", conversation.title).strip()[:60] or "conversation"
    return f"{stem}.{extension}"


def from_json(data: Any, *, default_model: str, owner: str | None) -> tuple[Conversation, Message]:
    """A new conversation from an export (`to_json`) or any `{"messages": [...]}` object, and
    the last message of its current branch (to be made current once it has an id).

    `messages` items need `role` (system, user or assistant) and a string
    `content`; `metadata` is optional, and where it is missing the title
    comes from the first question and the model is `default_model`. The
    branches come from `metadata.tree` when it is a list (module doc), else
    the messages follow each other in one branch. Raises BadRequest naming
    the faulty field. Nothing is stored here.
    """
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise BadRequest(
            'An import must be a JSON object with a "messages" list.', param="messages"
        )
    items = data["messages"]
    if not items or len(items) > MAX_IMPORTED_MESSAGES:
        raise BadRequest(
            f'"messages" must hold 1 to {MAX_IMPORTED_MESSAGES} messages.', param="messages"
        )
    metadata: dict[str, Any] = data["metadata"] if isinstance(data.get("metadata"), dict) else {}
    details = metadata.get("messages")
    if not isinstance(details, list) or len(details) != len(items):
        details = [{}] * len(items)
    tree = metadata.get("tree")
    if isinstance(tree, list):
        messages, current = _tree(tree, metadata.get("current_message_id"))
    else:
        messages = [
            _message(i, item, detail)
            for i, (item, detail) in enumerate(zip(items, details, strict=True))
        ]
        for earlier, message in pairwise(messages):
            message.parent = earlier
        current = messages[-1]
    first_question = next((m.content for m in messages if m.role == "user"), "")
    title = _string(metadata, "title", TITLE_LENGTH) or title_from(first_question or "Imported")
    now = utcnow()
    conversation = Conversation(
        title=" ".join(title.split()),
        persona=_string(metadata, "persona", 100),
        model=_string(metadata, "model", 200) or default_model,
        owner=owner,
        created_at=_time(metadata.get("created_at")) or now,
        updated_at=now,
        messages=messages,
    )
    return conversation, current


def _tree(items: list[Any], current_id: Any) -> tuple[list[Message], Message]:
    """The messages of `metadata.tree`, linked to their parents, and the current branch's last.

    Each item's `parent_id` must be the `id` of an item before it (or null);
    a `current_message_id` that names none falls back to the newest branch.
    """
    if not items or len(items) > MAX_IMPORTED_MESSAGES:
        raise BadRequest(
            f'"metadata.tree" must hold 1 to {MAX_IMPORTED_MESSAGES} messages.', param="metadata"
        )
    by_id: dict[int, Message] = {}
    messages: list[Message] = []
    for index, item in enumerate(items):
        where = f"metadata.tree[{index}]"
        if not isinstance(item, dict) or not _is_id(item.get("id")) or item["id"] in by_id:
            raise BadRequest(f"{where} must have an integer id of its own.", param="metadata")
        parent_id = item.get("parent_id")
        if parent_id is not None and not (_is_id(parent_id) and parent_id in by_id):
            raise BadRequest(
                f"{where}.parent_id must be null or the id of a message before it.",
                param="metadata",
            )
        message = _message(index, item, item)
        message.parent = by_id.get(parent_id) if parent_id is not None else None
        by_id[item["id"]] = message
        messages.append(message)
    current = by_id.get(current_id) if _is_id(current_id) else None
    if current is None:  # the newest first message, down by the newest replies
        newest: dict[int | None, Message] = {}
        for message in messages:
            newest[id(message.parent) if message.parent is not None else None] = message
        current = newest[None]
        while id(current) in newest:
            current = newest[id(current)]
    return messages, current


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _message(index: int, item: Any, detail: Any) -> Message:
    where = f"messages[{index}]"
    if not isinstance(item, dict) or item.get("role") not in ROLES:
        raise BadRequest(f"{where} must have a role: {', '.join(ROLES)}.", param="messages")
    content = item.get("content")
    imported = imported_content(content, where) if item["role"] == "user" else None
    if imported is not None:
        content = imported[0]
    if not isinstance(content, str) or "\x00" in content:
        raise BadRequest(
            f"{where}.content must be a string (without NUL characters).", param="messages"
        )
    detail = detail if isinstance(detail, dict) else {}
    status = detail.get("status") if detail.get("status") in STATUSES else "ok"
    reasoning = detail.get("reasoning_content") or item.get("reasoning_content")
    if reasoning is not None and (not isinstance(reasoning, str) or "\x00" in reasoning):
        raise BadRequest(
            f"{where} reasoning_content must be a string (without NUL characters).",
            param="messages",
        )
    seconds = detail.get("reasoning_seconds")
    error = detail.get("error") if isinstance(detail.get("error"), dict) else {}
    return Message(
        role=item["role"],
        content=content,
        attachments=imported[1] if imported is not None else [],
        model=_string(detail, "model", 200),
        prompt_tokens=_tokens(detail.get("prompt_tokens")),
        completion_tokens=_tokens(detail.get("completion_tokens")),
        finish_reason=_string(detail, "finish_reason", 40),
        reasoning=reasoning or None,
        reasoning_tokens=_tokens(detail.get("reasoning_tokens")),
        reasoning_seconds=float(seconds)
        if isinstance(seconds, int | float) and not isinstance(seconds, bool) and 0 <= seconds < 1e7
        else None,
        status=status,
        error_code=_string(error, "code", 64) if status == "error" else None,
        error_message=_string(error, "message", 2000) if status == "error" else None,
        created_at=_time(detail.get("created_at")) or utcnow(),
    )


def _string(data: dict[str, Any], key: str, limit: int) -> str | None:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        return None
    return value.replace("\x00", "")[:limit]


MAX_TOKENS_STORED = 2**31 - 1  # the columns are 32-bit integers


def _tokens(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKENS_STORED:
        return value
    return None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        given = datetime.fromisoformat(value)
        moment = given.astimezone(UTC) if given.tzinfo else None
    except (ValueError, OverflowError):
        return None
    # Years the databases and ISO 8601's four digits hold; anything else is not a real time.
    return moment if moment is not None and 1000 <= moment.year <= 9999 else None


def iso(moment: datetime) -> str:
    """`moment` as ISO 8601 in UTC, like `2026-11-21T02:30:16Z`."""
    moment = as_utc(moment)
    return f"{moment.year:04d}-" + moment.strftime("%m-%dT%H:%M:%SZ")
