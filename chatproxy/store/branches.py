"""A conversation's branches: its messages as a tree, and the branch that is current.

Each message names the one it follows (`parent_id`). A question edited and
sent again is a new question beside the old one (same parent), and an answer
regenerated a new answer beside the old one (same question): the versions at
a turn are siblings, all kept, in the order they were written (ids only grow).

The current branch is the path from the first message down to the
conversation's `current_message_id`, then on below it through the newest
reply at each step (so an answer stored under the current question is on it
without a write); with no current message it starts at the newest first
message. It is what the page shows, what the upstream is sent as history and
what the Markdown export holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session, scoped_session

from chatproxy.errors import BadRequest, NotFound
from chatproxy.store.models import Conversation, Message

# A session: Flask-SQLAlchemy's `db.session` in a request, or one of our own.
AnySession = Session | scoped_session[Any]
MAX_MESSAGE_ID = 2**63 - 1  # beyond any id a database hands out (and BIGINT's range)


class Tree:
    """A conversation's messages by id and by the message they follow (siblings in id order)."""

    def __init__(self, messages: Sequence[Message]) -> None:
        self.by_id = {message.id: message for message in messages}
        self.children: dict[int | None, list[Message]] = {}
        for message in sorted(messages, key=lambda m: m.id):
            parent = message.parent_id if message.parent_id in self.by_id else None
            self.children.setdefault(parent, []).append(message)

    def siblings(self, message: Message) -> list[Message]:
        """The versions at `message`'s turn: the messages of its role that follow the same one,
        oldest first.

        Of its role: a question sent while the answer before it was still being written
        follows that answer's question too, and is no version of the answer.
        """
        parent = message.parent_id if message.parent_id in self.by_id else None
        return [m for m in self.children.get(parent, [message]) if m.role == message.role]

    def path_to(self, message: Message | None) -> list[Message]:
        """The messages from the first down to `message`, both included (empty for None)."""
        path: list[Message] = []
        seen: set[int] = set()
        while message is not None and message.id not in seen:
            seen.add(message.id)
            path.append(message)
            message = self.by_id.get(message.parent_id) if message.parent_id is not None else None
        path.reverse()
        return path

    def newest_leaf(self, message: Message) -> Message:
        """The message reached from `message` by taking the newest reply until there is none."""
        while self.children.get(message.id):
            message = self.children[message.id][-1]
        return message

    def branch_through(self, message: Message | None) -> list[Message]:
        """The branch that goes through `message`: down to it, then on by the newest replies.

        None: the branch of the newest first message (empty when there is none).
        """
        if message is None:
            roots = self.children.get(None)
            if not roots:
                return []
            message = roots[-1]
        path = self.path_to(message)
        while self.children.get(path[-1].id):
            path.append(self.children[path[-1].id][-1])
        return path


def current_branch(conversation: Conversation) -> list[Message]:
    """`conversation`'s current branch, first message first (module doc)."""
    tree = Tree(conversation.messages)
    current = conversation.current_message_id
    return tree.branch_through(tree.by_id.get(current) if current is not None else None)


def parse_message_id(value: object, param: str) -> int:
    """A message id given by a client (an integer, or its digits); raises BadRequest (`param`)."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_MESSAGE_ID:
        raise BadRequest(
            f"'{param}' must be the id of a message of the conversation (a positive integer).",
            param=param,
            code="invalid_message_id",
        )
    return value


def find_message(conversation: Conversation, message_id: int, param: str) -> Message:
    """The message `message_id` of `conversation`; raises NotFound `message_not_found`."""
    for message in conversation.messages:
        if message.id == message_id:
            return message
    raise NotFound(
        f"No message {message_id} in this conversation.", param=param, code="message_not_found"
    )


def edited_question(conversation: Conversation, message_id: int) -> Message:
    """The question that `edit_of` names in `conversation`: the one a new version stands beside.

    Raises NotFound `message_not_found` for a message not in it, BadRequest
    `not_a_question` for one that is not a question.
    """
    message = find_message(conversation, message_id, "edit_of")
    if message.role != "user":
        raise BadRequest(
            "'edit_of' must name a question (a message with role 'user'); to answer a question "
            "again, regenerate it.",
            param="edit_of",
            code="not_a_question",
        )
    return message


def choose_branch(session: AnySession, conversation: Conversation, message_id: int) -> None:
    """Make the branch through message `message_id` the current one, and commit.

    The current message becomes the newest leaf below it (a turn's sibling
    chosen shows the latest of its own later turns). Raises NotFound
    `message_not_found` for a message not in `conversation`.
    """
    message = find_message(conversation, message_id, "message_id")
    conversation.current_message_id = Tree(conversation.messages).newest_leaf(message).id
    session.commit()  # not `updated_at`: looking at another version changes nothing in it
