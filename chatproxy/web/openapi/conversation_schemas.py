"""The JSON Schemas of `/api/conversations` in chatproxy's OpenAPI document: a conversation's
summary, its messages (the current branch, each with its versions), and the JSON export
and import (`chatproxy.store.exports`). Plain dicts in JSON Schema 2020-12, built with
the helpers of `chatproxy.web.openapi.schemas`.
"""

from __future__ import annotations

from chatproxy.store.exports import FORMAT, MAX_IMPORTED_MESSAGES
from chatproxy.store.models import ROLES, STATUSES, TITLE_LENGTH
from chatproxy.web.openapi.schemas import (
    COST,
    COUNT,
    ID,
    TIME,
    Schema,
    array,
    integer,
    list_of,
    loose,
    nullable,
    number,
    ref,
    shape,
    string,
)


def conversation_schemas() -> dict[str, Schema]:
    """The schemas of `/api/conversations`: summaries, messages, the export, by name."""
    summary: dict[str, Schema] = {
        "id": ID,
        "title": string(maxLength=TITLE_LENGTH),
        "persona": nullable(string()),
        "model": string(),
        "created_at": TIME,
        "updated_at": TIME,
        "message_count": COUNT,
        "answer_count": COUNT,
        "usage": ref("TokenUsage"),
        "cost": COST,
    }
    error = nullable(shape(code=nullable(string()), message=nullable(string())))
    message = shape(
        id=integer(),
        parent_id=nullable(integer(description="The message it follows; null for a first one")),
        role=string(enum=list(ROLES)),
        content=string(),
        reasoning=nullable(string()),
        reasoning_seconds=nullable(number(minimum=0)),
        model=nullable(string()),
        status=string(enum=list(STATUSES)),
        finish_reason=nullable(string()),
        usage=nullable(ref("TokenUsage")),
        cost=COST,
        error=error,
        created_at=TIME,
        siblings=array(
            integer(),
            minItems=1,
            description="The ids of the versions at this turn (edits, regenerated answers), "
            "oldest first; switch with `POST .../current`",
        ),
        sibling_index=integer(minimum=0, description="This message's place in `siblings`"),
    )
    detail = shape(
        status=string(enum=list(STATUSES)),
        model=nullable(string()),
        finish_reason=nullable(string()),
        prompt_tokens=nullable(COUNT),
        completion_tokens=nullable(COUNT),
        reasoning_content=nullable(string()),
        reasoning_tokens=nullable(COUNT),
        reasoning_seconds=nullable(number(minimum=0)),
        error=error,
        created_at=TIME,
    )
    node = {
        "id": integer(),
        "parent_id": nullable(integer()),
        "role": string(enum=list(ROLES)),
        "content": string(),
    }
    metadata = shape(
        **{name: summary[name] for name in ("id", "title", "persona", "model")},
        created_at=TIME,
        updated_at=TIME,
        messages=array(detail, description="Details of `messages` (the current branch)"),
        current_message_id=nullable(integer()),
        tree=array(
            shape(**node, **detail["properties"]),
            description="Every message kept, oldest first, each with the one it follows",
        ),
    )
    plain_message = shape(role=string(enum=list(ROLES)), content=string())
    return {
        "TokenUsage": _token_usage(),
        "ConversationSummary": shape(**summary),
        "ConversationMessage": message,
        "Conversation": shape(
            **summary,
            current_message_id=nullable(
                integer(description="The last message of the current branch")
            ),
            messages=array(ref("ConversationMessage"), description="The current branch"),
        ),
        "ChooseBranch": loose(
            "message_id",
            message_id=integer(
                minimum=1, description="A message of the conversation (from `siblings`)"
            ),
        ),
        "ConversationList": list_of(ref("ConversationSummary")),
        "ConversationExport": shape(
            object={"const": FORMAT}, messages=array(plain_message), metadata=metadata
        ),
        "ConversationImport": loose(
            "messages",
            messages=array(
                {**plain_message, "additionalProperties": True},
                minItems=1,
                maxItems=MAX_IMPORTED_MESSAGES,
            ),
            metadata=_import_metadata(),
        ),
        "Rename": loose(
            "title",
            title=string(
                minLength=1,
                maxLength=TITLE_LENGTH,
                pattern=r"\S",
                description="Runs of whitespace count as one space.",
            ),
        ),
    }


def _token_usage() -> Schema:
    """Tokens of an answer or a conversation; an answer's says how many were reasoning, when
    the upstream reported them (OpenAI's `completion_tokens_details`)."""
    usage = shape(prompt_tokens=COUNT, completion_tokens=COUNT, total_tokens=COUNT)
    usage["properties"]["completion_tokens_details"] = shape(reasoning_tokens=COUNT)
    return usage


def _import_metadata() -> Schema:
    """An import's `metadata`: as in an export, each field optional.

    A value of another type, or a time without a zone, is ignored (the default applies).
    """
    detail = loose(
        status=string(enum=list(STATUSES)),
        model=string(),
        finish_reason=string(),
        prompt_tokens=COUNT,
        completion_tokens=COUNT,
        reasoning_content=string(),
        reasoning_tokens=COUNT,
        reasoning_seconds=number(minimum=0),
        error=loose(code=string(), message=string()),
        created_at=TIME,
    )
    messages = array(detail, description="One per message, in order; else all are ignored.")
    node = loose(
        "id role content",
        id=integer(),
        parent_id=nullable(integer(description="The id of an item before it")),
        role=string(enum=list(ROLES)),
        content=string(),
        **detail["properties"],
    )
    tree = array(
        node,
        minItems=1,
        maxItems=MAX_IMPORTED_MESSAGES,
        description="The whole tree (an export's); when given, it is what is imported.",
    )
    return loose(
        title=string(),
        persona=string(),
        model=string(),
        created_at=TIME,
        messages=messages,
        current_message_id=integer(),
        tree=tree,
    )
