"""`/api/conversations`: list, read, rename, delete, regenerate, continue, branches, export, import.

Each client sees only its own conversations (`chatproxy.access.keys.current_owner`).
Shapes (JSON): a conversation summary is `{"id", "title", "persona",
"model", "created_at", "updated_at", "message_count", "answer_count",
"usage", "cost"}`, where
`usage` sums the answers' `prompt_tokens`, `completion_tokens` and
`total_tokens` and `cost` is their price in USD (null when no answer has a
price; both count every version kept, the branches not shown included); a
whole conversation adds `current_message_id` and `messages`, its current
branch (`chatproxy.store.branches`) oldest first, each `{"id", "parent_id",
"role", "content", "reasoning", "reasoning_seconds", "model", "status",
"finish_reason", "usage", "cost", "error", "created_at", "siblings",
"sibling_index"}` (`reasoning`: the model's, or null; an answer's `usage`
holds `completion_tokens_details.reasoning_tokens` when the upstream reported
them; `siblings`: the ids of the versions at that turn, oldest first, this
one at `sibling_index`; `attachments`: a question's images and files, each
`{"id", "kind", "name", "media_type", "size", "width", "height", "detail",
"url"}`, their bytes at `/api/attachments/ID`). Times are ISO 8601 in UTC.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import func, select

from chatproxy.access.keys import current_owner, current_policy
from chatproxy.errors import BadRequest
from chatproxy.questions import parse_question
from chatproxy.state import current_prices, current_settings
from chatproxy.store.attachments import listed_attachments, load_attachments
from chatproxy.store.branches import Tree, choose_branch, parse_message_id
from chatproxy.store.conversations import (
    clean_title,
    cut_off_answer,
    defaults_from,
    find_conversation,
    last_question,
    list_conversations,
    start_continue,
    start_regenerate,
)
from chatproxy.store.database import db
from chatproxy.store.exports import filename, from_json, iso, to_json, to_markdown
from chatproxy.store.models import Conversation, Message
from chatproxy.store.personas import all_personas
from chatproxy.tokens import cost
from chatproxy.web.ask import answer_turn, request_values, wanted_format
from chatproxy.web.passthrough import read_body

bp = Blueprint("conversations", __name__, url_prefix="/api/conversations")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


@bp.get("")
def index() -> Response:
    """The caller's conversations, most recently updated first.

    Query: `q` (text the title contains, case-insensitive), `limit` (1-200,
    default 50). `{"object": "list", "data": [summary, ...]}`.
    """
    search = request.args.get("q", "").replace("\x00", "").strip()[:200] or None
    limit = _limit(request.args.get("limit"))
    conversations = list_conversations(db.session, current_owner(), search, limit)
    totals = _totals(c.id for c in conversations)
    data = [_summary(c, totals.get(c.id)) for c in conversations]
    return jsonify(object="list", data=data)


@bp.get("/<conversation_id>")
def show(conversation_id: str) -> Response:
    """One conversation with its messages; 404 `conversation_not_found`."""
    return jsonify(_whole(_find(conversation_id)))


@bp.patch("/<conversation_id>")
def rename(conversation_id: str) -> Response:
    """Rename a conversation: JSON `{"title": str}` (1-200 characters) → its summary."""
    conversation = _find(conversation_id)
    conversation.title = clean_title(read_body(request.get_data()).get("title"))
    db.session.commit()
    return jsonify(_summary(conversation, _totals([conversation.id]).get(conversation.id)))


@bp.delete("/<conversation_id>")
def remove(conversation_id: str) -> Response:
    """Delete a conversation and its messages → 204."""
    db.session.delete(_find(conversation_id))
    db.session.commit()
    return Response(status=204)


@bp.post("/<conversation_id>/regenerate")
def regenerate(conversation_id: str) -> Response:
    """Answer the conversation's last question again (Retry after an error, or Regenerate).

    Takes `/callChatGPT`'s parameters except `input` and `conversation_id`
    (query string, form or JSON body; `stream=1` for SSE). The current
    branch's last question is asked again; the new answer is kept beside the
    answers it had (its siblings, still there) and becomes the current
    branch once stored; if the upstream fails, the branch stays as it was.
    Answers like `/callChatGPT`. Errors: 400 `nothing_to_regenerate`, 404,
    and those of `/callChatGPT`.
    """
    settings = current_policy()
    personas = all_personas()
    conversation = _find(conversation_id)
    values = {
        **defaults_from(conversation, settings, personas),
        **request_values(),
        "input": last_question(conversation).content,
    }
    question = parse_question(values, settings, wants=wanted_format(), personas=personas)
    turn = start_regenerate(db.session, conversation, question, settings)
    return answer_turn(turn, question)


@bp.post("/<conversation_id>/continue")
def continue_answer(conversation_id: str) -> Response:
    """Go on with the conversation's last answer where it was cut off (Continue).

    For an answer with `finish_reason` `length` (cut by `max_tokens`) or
    status `interrupted`. Takes `/callChatGPT`'s parameters except `input` and
    `conversation_id` (query string, form or JSON body; `stream=1` for SSE).
    The upstream gets the conversation with the answer so far as the last
    assistant message and is asked to continue
    (`chatproxy.store.conversations.start_continue`). Answers like
    `/callChatGPT` with what was added (the text, JSON `answer`, or the SSE
    deltas), `usage` and `finish_reason` of this request; the stored answer
    (same `message_id`) becomes the whole text, its usage the sum. Errors: 400
    `nothing_to_continue`, `context_length_exceeded`, 404, and those of
    `/callChatGPT`.
    """
    settings = current_policy()
    personas = all_personas()
    conversation = _find(conversation_id)
    asked, _ = cut_off_answer(conversation)
    values = {
        **defaults_from(conversation, settings, personas),
        **request_values(),
        "input": asked.content,
    }
    question = parse_question(values, settings, wants=wanted_format(), personas=personas)
    turn = start_continue(db.session, conversation, question, settings)
    return answer_turn(turn, question)


@bp.post("/<conversation_id>/current")
def switch_branch(conversation_id: str) -> Response:
    """Show another version of a turn: JSON `{"message_id": int}` → the conversation, whole.

    The branch through that message (a question's or an answer's sibling from
    `siblings`) becomes the current one, down to the newest of its later
    turns; the next question goes on from it. Errors: 400 `invalid_message_id`
    for a body without an integer `message_id`, 404 `conversation_not_found`,
    404 `message_not_found` for a message not in this conversation.
    """
    conversation = _find(conversation_id)
    message_id = parse_message_id(read_body(request.get_data()).get("message_id"), "message_id")
    choose_branch(db.session, conversation, message_id)
    return jsonify(_whole(conversation))


@bp.get("/<conversation_id>/export")
def export(conversation_id: str) -> Response:
    """Download a conversation: `format=md` (Markdown, the default) or `format=json`.

    See `chatproxy.store.exports` for both shapes; sent as an attachment named after the title.
    """
    conversation = _find(conversation_id)
    kind = request.args.get("format", "md")
    questions = [m.id for m in conversation.messages if m.role == "user"]
    attached = load_attachments(db.session.connection(), questions)
    if kind == "json":
        response = jsonify(to_json(conversation, attached))
    elif kind == "md":
        response = Response(to_markdown(conversation, attached), mimetype="text/markdown")
    else:
        raise BadRequest("'format' must be md or json.", param="format")
    response.headers["Content-Disposition"] = attachment(filename(conversation, kind))
    return response


def attachment(name: str) -> str:
    """A Content-Disposition for downloading as `name`, which may be Chinese (RFC 6266, 5987)."""
    fallback = name.encode("ascii", "replace").decode().replace("?", "_").replace('"', "")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


@bp.post("/import")
def import_conversation() -> Response:
    """Store a conversation from a JSON export (or any `{"messages": [...]}`) → 201 + it, whole.

    An export with branches (`metadata.tree`) comes back with them and the same current branch.
    """
    data = read_body(request.get_data())
    conversation, current = from_json(
        data, default_model=current_settings().model, owner=current_owner()
    )
    db.session.add(conversation)
    db.session.flush()
    conversation.current_message_id = current.id
    db.session.commit()
    return jsonify(_whole(conversation)), 201  # type: ignore[return-value]


def _find(conversation_id: str) -> Conversation:
    return find_conversation(db.session, conversation_id.lower(), current_owner())


def _limit(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_LIMIT
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_LIMIT:
        raise BadRequest(f"'limit' must be an integer from 1 to {MAX_LIMIT}.", param="limit")
    return int(value)


class _Totals:
    """Tokens and cost of a conversation's answers, and how many messages and answers it has."""

    def __init__(self) -> None:
        self.messages = self.answers = 0
        self.prompt = self.completion = 0
        self.cost: float | None = None

    def add(self, role: str, count: int, model: str | None, prompt: int, completion: int) -> None:
        self.messages += count
        if role == "assistant":
            self.answers += count
        self.prompt += prompt
        self.completion += completion
        price = cost(
            model, {"prompt_tokens": prompt, "completion_tokens": completion}, current_prices()
        )
        if price is not None:
            self.cost = (self.cost or 0.0) + price


def _totals(ids: Iterable[str]) -> dict[str, _Totals]:
    """`_Totals` per conversation in `ids`, from one grouped query."""
    wanted = list(ids)
    if not wanted:
        return {}
    query = (
        select(
            Message.conversation_id,
            Message.role,
            Message.model,
            func.count(),
            func.coalesce(func.sum(Message.prompt_tokens), 0),
            func.coalesce(func.sum(Message.completion_tokens), 0),
        )
        .where(Message.conversation_id.in_(wanted))
        .group_by(Message.conversation_id, Message.role, Message.model)
    )
    totals: dict[str, _Totals] = defaultdict(_Totals)
    for conversation_id, role, model, count, prompt, completion in db.session.execute(query):
        totals[conversation_id].add(role, count, model, int(prompt or 0), int(completion or 0))
    return totals


def _usage(prompt: int | None, completion: int | None) -> dict[str, int] | None:
    if prompt is None and completion is None:
        return None
    prompt, completion = prompt or 0, completion or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _summary(conversation: Conversation, totals: _Totals | None) -> dict[str, Any]:
    totals = totals or _Totals()
    return {
        "id": conversation.id,
        "title": conversation.title,
        "persona": conversation.persona,
        "model": conversation.model,
        "created_at": iso(conversation.created_at),
        "updated_at": iso(conversation.updated_at),
        "message_count": totals.messages,
        "answer_count": totals.answers,
        "usage": _usage(totals.prompt, totals.completion),
        "cost": round(totals.cost, 10) if totals.cost is not None else None,
    }


def _whole(conversation: Conversation) -> dict[str, Any]:
    tree = Tree(conversation.messages)
    current = conversation.current_message_id
    branch = tree.branch_through(tree.by_id.get(current) if current is not None else None)
    messages = []
    attached = listed_attachments(
        db.session.connection(), [m.id for m in branch if m.role == "user"]
    )
    for message in branch:
        siblings = [sibling.id for sibling in tree.siblings(message)]
        shown = _message(message)
        shown.update(
            siblings=siblings,
            sibling_index=siblings.index(message.id),
            attachments=attached.get(message.id, []),
        )
        messages.append(shown)
    return {
        **_summary(conversation, _totals([conversation.id]).get(conversation.id)),
        "current_message_id": branch[-1].id if branch else None,
        "messages": messages,
    }


def _message(message: Message) -> dict[str, Any]:
    usage: dict[str, Any] | None = _usage(message.prompt_tokens, message.completion_tokens)
    if usage is not None and message.reasoning_tokens is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": message.reasoning_tokens}
    return {
        "id": message.id,
        "parent_id": message.parent_id,
        "role": message.role,
        "content": message.content,
        "reasoning": message.reasoning,
        "reasoning_seconds": message.reasoning_seconds,
        "model": message.model,
        "status": message.status,
        "finish_reason": message.finish_reason,
        "usage": usage,
        "cost": cost(message.model, usage, current_prices()) if usage else None,
        "error": {"code": message.error_code, "message": message.error_message}
        if message.status == "error" or message.error_code
        else None,
        "created_at": iso(message.created_at),
    }
