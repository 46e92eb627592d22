"""Conversations that remember: a question is stored, answered with its history, the answer kept.

A turn goes: the question is checked and fitted with the conversation's
history into the model's window (`start_turn`, which raises before anything is
stored if it does not fit), then committed with its conversation, then the
upstream is called; the answer is kept by `chatproxy.store.answers` (saved
while it streams, stored as it ends, or the question marked `error`).
Everything here follows the current branch (`chatproxy.store.branches`): a
question goes after its last message, or beside an earlier question it edits
(`edit_of`), with the branch down to that point as history. Regenerate
answers the branch's last question again, the new answer kept beside the old
ones (which stay, reachable as siblings). Continue asks the model to go on
with the branch's last answer where it was cut off (`max_tokens`, or
interrupted) and appends what it writes to that answer.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Connection, CursorResult, Engine, bindparam, select
from sqlalchemy.orm import Session, scoped_session

from chatproxy.attachments import Attachment, content_parts
from chatproxy.config import Settings
from chatproxy.errors import BadRequest, NotFound
from chatproxy.personas import Persona
from chatproxy.questions import Question
from chatproxy.store import group_commit
from chatproxy.store.attachments import insert_attachments, load_attachments, question_ids
from chatproxy.store.branches import Tree, current_branch, edited_question
from chatproxy.store.models import TITLE_LENGTH, Conversation, Message, new_id, utcnow
from chatproxy.tokens import image_count

TITLE_CHARS = 60  # a title taken from the first question keeps this many characters
# What Continue asks after the answer so far (a user message, so that every
# OpenAI-compatible server takes it: OpenAI answers a trailing assistant message
# anew rather than going on with it). It is sent, never stored.
CONTINUE_PROMPT = (
    "Continue exactly where your previous answer stopped, mid-sentence or mid-word if "
    "that is where it stopped. Do not repeat anything, and add no preamble."
)
CONVERSATION_ID = re.compile(r"[0-9a-f]{32}")
log = logging.getLogger(__name__)
CONVERSATIONS = Conversation.__table__
MESSAGES = Message.__table__
# Built once: the columns come from each execution's parameters (`key` is the row's id),
# which spares rebuilding and re-keying a statement for every question.
_INSERT_CONVERSATION = CONVERSATIONS.insert()
_UPDATE_CONVERSATION = CONVERSATIONS.update().where(CONVERSATIONS.c.id == bindparam("key"))
_INSERT_MESSAGE = MESSAGES.insert()
_UPDATE_MESSAGE = MESSAGES.update().where(MESSAGES.c.id == bindparam("key"))
# A session: Flask-SQLAlchemy's `db.session` in a request, or one of our own.
AnySession = Session | scoped_session[Any]


@dataclass
class Turn:
    """A question stored and about to be answered: what to send upstream, where the answer goes.

    `again` marks a question asked again (Retry, Regenerate); `beside` are
    the ids of the answers it already had, kept beside the new one; `answer_id`
    is the answer's row once it was first saved while streaming. Continue
    (`start_continue`) sets `answer_id` to the answer it goes on with,
    `prefix` to that answer's text (what arrives is appended to it) and
    `prior_usage` to the usage stored with it (the new usage is added).
    `dropped_images` counts the history's images left out to fit the window.
    """

    conversation_id: str
    question_id: int
    model: str
    params: dict[str, Any]
    again: bool = False
    beside: list[int] = field(default_factory=list)
    answer_id: int | None = None
    prefix: str = ""
    prior_usage: dict[str, int] | None = None
    dropped_images: int = 0


def parse_conversation_id(value: object) -> str | None:
    """A `conversation_id` parameter checked: 32 hex digits, or None when absent.

    Raises BadRequest (param `conversation_id`) for anything else.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not CONVERSATION_ID.fullmatch(value.strip().lower()):
        raise BadRequest(
            "'conversation_id' must be the id of a conversation (32 hex digits), "
            "as returned in X-Conversation-Id.",
            param="conversation_id",
            code="invalid_conversation_id",
        )
    return value.strip().lower()


def find_conversation(session: AnySession, conversation_id: str, owner: str | None) -> Conversation:
    """The conversation `conversation_id` of `owner`; raises NotFound `conversation_not_found`.

    An id that is not 32 hex digits names no conversation: it is refused
    without a query (PostgreSQL refuses a NUL in text with an error of its own).
    """
    if not CONVERSATION_ID.fullmatch(conversation_id):
        raise NotFound(
            "No such conversation here (a conversation id is 32 hex digits).",
            param="conversation_id",
            code="conversation_not_found",
        )
    conversation = session.get(Conversation, conversation_id)
    if conversation is None or conversation.owner != owner:
        raise NotFound(
            f"No conversation {conversation_id!r} here.",
            param="conversation_id",
            code="conversation_not_found",
        )
    return conversation


def defaults_from(
    conversation: Conversation | None, settings: Settings, personas: Mapping[str, Persona]
) -> dict[str, str]:
    """The `persona` and `model` a question in `conversation` takes when it names none.

    Those no longer configured are left out (the defaults then apply).
    """
    if conversation is None:
        return {}
    defaults: dict[str, str] = {}
    if conversation.persona and conversation.persona in personas:
        defaults["persona"] = conversation.persona
    if conversation.model in settings.models:
        defaults["model"] = conversation.model
    return defaults


def start_turn(
    engine: Engine,
    question: Question,
    settings: Settings,
    conversation: Conversation | None,
    owner: str | None,
    edit_of: int | None = None,
) -> Turn:
    """Store `question` in `conversation` (a new one when None) and return the turn to answer.

    The question goes after the current branch's last message, or, with
    `edit_of` (the id of an earlier question of `conversation`), beside that
    question as its new version; either way it becomes the current branch.
    The upstream body holds the persona's messages, the system messages and
    earlier turns of the branch before it that fit (oldest dropped first),
    `question.system`, and the question. Raises BadRequest
    `context_length_exceeded` before anything is stored when the question does
    not fit, NotFound `message_not_found` or BadRequest `not_a_question` for a
    wrong `edit_of`. Commits on a connection of its own, whatever the caller's
    session holds.
    """
    before: list[Message] = []
    if conversation is not None:
        if edit_of is None:
            before = current_branch(conversation)
        else:
            edited = edited_question(conversation, edit_of)
            before = Tree(conversation.messages).path_to(edited)[:-1]
    elif edit_of is not None:
        raise BadRequest(
            "'edit_of' needs the 'conversation_id' of the question it edits.",
            param="edit_of",
            code="invalid_message_id",
        )
    parent_id = before[-1].id if before else None
    history = _history(before, load_attachments(engine, question_ids(before)))
    if question.system:
        history.system.append({"role": "system", "content": question.system})
    params = question.chat_params(settings, extra_leading=history.system, history=history.turns)
    now = utcnow()
    conversation_id = conversation.id if conversation is not None else new_id()
    persona = question.persona.id if question.persona else None

    def store(connection: Connection) -> int:
        """The question's rows (Core statements, not the ORM's unit of work: this runs for
        every question, and the ORM would take several times as long); its id."""
        parent = parent_id
        if conversation is None:
            connection.execute(
                _INSERT_CONVERSATION,
                {
                    "id": conversation_id,
                    "title": title_from(question.input),
                    "persona": persona,
                    "model": question.model,
                    "owner": owner,
                    "created_at": now,
                    "updated_at": now,
                },
            )
        if question.system:
            system = connection.execute(
                _INSERT_MESSAGE,
                {
                    "conversation_id": conversation_id,
                    "parent_id": parent,
                    "role": "system",
                    "content": question.system,
                },
            )
            parent = inserted_id(system)
        asked = connection.execute(
            _INSERT_MESSAGE,
            {
                "conversation_id": conversation_id,
                "parent_id": parent,
                "role": "user",
                "content": question.input,
                "model": question.model,
                "created_at": now,
            },
        )
        question_id = inserted_id(asked)
        insert_attachments(connection, question_id, question.attachments)
        if conversation is not None:
            # The question's persona and model are the conversation's unless it named
            # others (`defaults_from`); `persona=` empty leaves the persona. A new
            # conversation needs no current message: its branch is its only one.
            connection.execute(
                _UPDATE_CONVERSATION,
                {
                    "key": conversation_id,
                    "model": question.model,
                    "persona": persona,
                    "current_message_id": question_id,
                    "updated_at": now,
                },
            )
        return question_id

    # In one transaction with the questions that arrive at the same moment (at a
    # thousand streams, hundreds do): one commit for them all.
    question_id = group_commit.write_now(engine, store)
    # The question's own images are always sent: any missing were the history's.
    dropped = image_count(history.turns) + len(question.images) - image_count(params["messages"])
    return Turn(conversation_id, question_id, question.model, params, dropped_images=dropped)


def inserted_id(result: CursorResult[Any]) -> int:
    """The primary key of the row an INSERT made."""
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def last_question(conversation: Conversation) -> Message:
    """The current branch's last question; raises BadRequest `nothing_to_regenerate` if none."""
    for message in reversed(current_branch(conversation)):
        if message.role == "user":
            return message
    raise BadRequest(
        "This conversation has no question to answer again.", code="nothing_to_regenerate"
    )


def start_regenerate(
    session: AnySession,
    conversation: Conversation,
    question: Question,
    settings: Settings,
) -> Turn:
    """The turn that answers the current branch's last question again (Retry, Regenerate).

    `question` is that question, with the model, persona and options to ask
    it with now. The new answer is stored beside the answers it had (they
    stay, as its siblings) and becomes the current branch once stored
    (`finish_turn`). Raises BadRequest `nothing_to_regenerate` when the branch
    has no question, `context_length_exceeded` when it no longer fits.
    Commits.
    """
    messages = current_branch(conversation)
    last = last_question(conversation)
    position = messages.index(last)
    attached = load_attachments(session.connection(), question_ids(messages[: position + 1]))
    history = _history(messages[:position], attached)
    question = replace(question, attachments=attached.get(last.id, []))
    params = question.chat_params(settings, extra_leading=history.system, history=history.turns)
    answers = Tree(conversation.messages).children.get(last.id, [])
    turn = Turn(
        conversation.id,
        last.id,
        question.model,
        params,
        again=True,
        beside=[m.id for m in answers if m.role == "assistant"],
    )
    conversation.model = question.model
    conversation.updated_at = utcnow()
    session.commit()
    return turn


def cut_off_answer(conversation: Conversation) -> tuple[Message, Message]:
    """The current branch's last answer, cut off, and its question: (question, answer).

    Raises BadRequest `nothing_to_continue` unless the branch's last message
    is an answer with text that was cut off (`finish_reason` `length`, or
    status `interrupted`).
    """
    messages = current_branch(conversation)
    answer = messages[-1] if messages else None
    if (
        answer is None
        or answer.role != "assistant"
        or not answer.content
        or answer.status not in ("ok", "interrupted")
        or (answer.finish_reason != "length" and answer.status != "interrupted")
        or not any(message.role == "user" for message in messages)
    ):
        raise BadRequest(
            "Only an answer cut off (finish_reason 'length', or interrupted) can be continued, "
            "and only the conversation's last one.",
            code="nothing_to_continue",
        )
    return last_question(conversation), answer


def start_continue(
    session: AnySession,
    conversation: Conversation,
    question: Question,
    settings: Settings,
) -> Turn:
    """The turn that goes on with `conversation`'s last answer, cut off (Continue).

    `question` is the answer's question, with the model and options to ask
    with now (its input is not sent again: CONTINUE_PROMPT is ours, not bound
    by CHATPROXY_MAX_INPUT_CHARS). The upstream is sent the history before
    the answer's question, that question, the answer so far as the last
    assistant message, then CONTINUE_PROMPT as the user's. Raises BadRequest
    `nothing_to_continue` (`cut_off_answer`), and `context_length_exceeded`
    when the answer so far no longer fits with `max_tokens`. Commits.
    """
    messages = current_branch(conversation)
    asked, answer = cut_off_answer(conversation)
    attached = load_attachments(session.connection(), question_ids(messages))
    history = _history(messages[: messages.index(asked)], attached)
    so_far: list[dict[str, Any]] = [
        {"role": "user", "content": content_parts(asked.content, attached.get(asked.id, []))},
        {"role": "assistant", "content": answer.content},
    ]
    params = replace(question, input=CONTINUE_PROMPT).chat_params(
        settings, extra_leading=history.system, history=[*history.turns, *so_far]
    )
    if params["messages"][-2:-1] != so_far[1:]:  # dropped to fit the window
        raise BadRequest(
            f"The answer so far is too long to continue within {question.model}'s context "
            "window with this max_tokens. Ask for fewer max_tokens.",
            param="max_tokens",
            code="context_length_exceeded",
        )
    prior = None
    if answer.prompt_tokens is not None or answer.completion_tokens is not None:
        prior = {
            "prompt_tokens": answer.prompt_tokens or 0,
            "completion_tokens": answer.completion_tokens or 0,
        }
    turn = Turn(
        conversation.id,
        asked.id,
        question.model,
        params,
        answer_id=answer.id,
        prefix=answer.content,
        prior_usage=prior,
    )
    conversation.updated_at = utcnow()
    session.commit()
    return turn


def title_from(text: str) -> str:
    """A conversation's title from its first question: one line, at most TITLE_CHARS characters."""
    words = " ".join(text.split())
    if len(words) <= TITLE_CHARS:
        return words
    return words[: TITLE_CHARS - 1].rstrip() + "…"


def clean_title(value: object) -> str:
    """A new title as given by a client, checked; raises BadRequest (param `title`)."""
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise BadRequest("'title' must be a non-empty string without NULs.", param="title")
    title = " ".join(value.split())
    if len(title) > TITLE_LENGTH:
        raise BadRequest(
            f"'title' is {len(title)} characters long; the limit is {TITLE_LENGTH}.",
            param="title",
            code="string_above_max_length",
        )
    return title


@dataclass
class _History:
    system: list[dict[str, Any]] = field(default_factory=list)
    turns: list[dict[str, Any]] = field(default_factory=list)


def _history(
    messages: Sequence[Message], attached: Mapping[int, Sequence[Attachment]] | None = None
) -> _History:
    """What the upstream is sent of earlier `messages`.

    System messages always; a question only with the answer that follows it
    (one that failed or was never answered is left out), and that answer,
    whole or interrupted: its content only, never the model's reasoning
    (DeepSeek refuses a request that holds it). An answer broken off while
    the model still reasoned has no content: it and its question are left out.
    A question's attachments (`attached`, by message id) go with it as content parts.
    """
    attached = attached or {}
    history = _History()
    pending: Message | None = None
    for message in messages:
        if message.role == "system":
            history.system.append({"role": "system", "content": message.content})
        elif message.role == "user":
            pending = message if message.status == "ok" else None
        elif pending is not None and message.content:
            content = content_parts(pending.content, attached.get(pending.id, []))
            history.turns.append({"role": "user", "content": content})
            history.turns.append({"role": "assistant", "content": message.content})
            pending = None
    return history


def list_conversations(
    session: AnySession, owner: str | None, search: str | None, limit: int
) -> list[Conversation]:
    """`owner`'s conversations, most recently updated first, titles containing `search` if given."""
    mine = Conversation.owner.is_(None) if owner is None else Conversation.owner == owner
    query = select(Conversation).where(mine)
    if search:
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Conversation.title.ilike(f"%{escaped}%", escape="\\"))
    query = query.order_by(Conversation.updated_at.desc(), Conversation.id).limit(limit)
    return list(session.scalars(query))
