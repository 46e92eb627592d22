"""The JSON Schemas of chatproxy's OpenAPI document (`chatproxy.web.openapi`): bodies and events.

Plain dicts in JSON Schema 2020-12, as OpenAPI 3.1 takes it. The bounds come
from the app's settings (`Bounds`), so the document says what this deployment
enforces: its models, its `max_tokens` cap, its longest question. The `/v1`
bodies, which chatproxy passes on, describe the important fields of the OpenAI
API reference (https://platform.openai.com/docs/api-reference) and allow any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chatproxy.questions import (
    FALSE_WORDS,
    MAX_STOP_SEQUENCES,
    NUMBER_RANGES,
    REASONING_EFFORTS,
    TRUE_WORDS,
)
from chatproxy.store.models import ROLES

Schema = dict[str, Any]

OPENAI_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
CONVERSATION_ID_PATTERN = "^[0-9a-fA-F]{32}$"
STOP_CHARS = 100  # longest stop sequence /callChatGPT takes (chatproxy.questions._stop)


@dataclass(frozen=True)
class Bounds:
    """What the document depends on: this app's settings and personas."""

    models: tuple[str, ...]
    chat_models: tuple[str, ...]  # those `/callChatGPT` takes: no legacy completion models
    default_model: str
    max_tokens: int
    max_input_chars: int
    persona_ids: tuple[str, ...]
    keys_required: bool
    # Patterns of CHATPROXY_UPSTREAMS that admit models not listed (Settings.model_patterns).
    model_patterns: tuple[str, ...] = ()

    def model_enum(self, names: Sequence[str]) -> dict[str, Any]:
        """`{"enum": names}` for a model field, or nothing while patterns admit names unlisted."""
        return {} if self.model_patterns else {"enum": list(names)}


def ref(name: str, kind: str = "schemas") -> Schema:
    """A `$ref` to `#/components/{kind}/{name}`."""
    return {"$ref": f"#/components/{kind}/{name}"}


def nullable(schema: Schema) -> Schema:
    """`schema` or null (one without a `type`, such as a `$ref`, is wrapped in `anyOf`)."""
    if "type" not in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    kind = schema["type"]
    return {**schema, "type": [*(kind if isinstance(kind, list) else [kind]), "null"]}


def shape(**properties: Schema) -> Schema:
    """An object of exactly these properties, all required: what chatproxy itself answers."""
    return {
        "type": "object",
        "required": list(properties),
        "properties": properties,
        "additionalProperties": False,
    }


def loose(required: str = "", **properties: Schema) -> Schema:
    """An object that may have other properties; `required` names some, space-separated."""
    return {
        "type": "object",
        "required": required.split(),
        "properties": properties,
        "additionalProperties": True,
    }


def string(**keywords: Any) -> Schema:
    """A string schema with JSON Schema `keywords` (minLength, enum, ...)."""
    return {"type": "string", **keywords}


def integer(**keywords: Any) -> Schema:
    """An integer schema with JSON Schema `keywords` (minimum, maximum)."""
    return {"type": "integer", **keywords}


def number(**keywords: Any) -> Schema:
    """A number schema with JSON Schema `keywords` (minimum, maximum)."""
    return {"type": "number", **keywords}


def array(items: Schema, **keywords: Any) -> Schema:
    """An array of `items`, with JSON Schema `keywords` (minItems, maxItems)."""
    return {"type": "array", "items": items, **keywords}


def list_of(item: Schema) -> Schema:
    """`{"object": "list", "data": [item, ...]}`, as OpenAI's lists are."""
    return shape(object={"const": "list"}, data=array(item))


def json_data(schema: Schema) -> Schema:
    """An SSE event's `data`: a string holding JSON that `schema` describes."""
    return string(contentMediaType="application/json", contentSchema=schema)


BOOLEAN: Schema = {"type": "boolean"}
TIME = string(format="date-time")
COST = nullable(number(minimum=0, description="USD; null without a price for the model"))
COUNT = integer(minimum=0)
ID = string(pattern=CONVERSATION_ID_PATTERN)


# --- Questions (/callChatGPT, regenerate) ---------------------------------------------


def question_fields(bounds: Bounds) -> dict[str, Schema]:
    """The schema of each `/callChatGPT` parameter as a query string or form sends it."""
    fields: dict[str, Schema] = {
        "input": string(
            minLength=1,
            maxLength=bounds.max_input_chars,
            pattern=r"\S",
            description="The question (not blank). Longer: 400 `string_above_max_length`.",
        ),
        "model": string(
            **bounds.model_enum([*bounds.chat_models, ""]),
            description="One of CHATPROXY_MODELS (403 `model_not_allowed` for others, or for "
            "one the caller's key may not use), not a legacy completion model (400 "
            "`model_not_supported`). Default (or empty): the persona's model, "
            f"else `{bounds.default_model}`.",
        ),
        "persona": string(
            enum=[*bounds.persona_ids, ""],
            description="A persona's id (`GET /api/personas`; those made in the console, "
            "not listed here, too); empty means none. "
            "Unknown: 400 `persona_not_found`.",
        ),
        "system": string(maxLength=bounds.max_input_chars, description="A system prompt."),
    }
    for name, (low, high) in NUMBER_RANGES.items():
        fields[name] = number(minimum=low, maximum=high)
    fields["max_tokens"] = integer(
        minimum=1,
        maximum=bounds.max_tokens,
        description="Longest answer in tokens (default and cap: CHATPROXY_MAX_TOKENS). With the "
        "question it must fit the model's context window (400 `context_length_exceeded`).",
    )
    sequence = string(minLength=1, maxLength=STOP_CHARS)
    fields["stop"] = {
        "anyOf": [sequence, array(sequence, minItems=1, maxItems=MAX_STOP_SEQUENCES)],
        "description": f"Up to {MAX_STOP_SEQUENCES} stop sequences (repeat `stop=` in a query "
        "string or form).",
    }
    fields["reasoning_effort"] = string(
        enum=[*REASONING_EFFORTS, ""],
        description="How hard a reasoning model thinks, for the models that take it "
        "(CHATPROXY_REASONING_MODELS; others: 400 `unsupported_parameter`).",
    )
    fields["stream"] = string(
        enum=[word for word in TRUE_WORDS + FALSE_WORDS if word],
        description="Answer with server-sent events; case-insensitive.",
    )
    fields["format"] = string(
        enum=["text", "json", "sse"],
        description="`text` (the answer only), `json` or `sse`; by default from `Accept`.",
    )
    fields["conversation_id"] = string(
        pattern=CONVERSATION_ID_PATTERN,
        description="Go on with this conversation's current branch (its persona and model "
        "apply unless others are named); unknown: 404 `conversation_not_found`.",
    )
    fields["edit_of"] = {
        "anyOf": [integer(minimum=1), string(pattern=r"^\s*[0-9]+\s*$")],
        "description": "With `conversation_id`: the id of an earlier question this one is a new "
        "version of. It is stored beside it (the old one and what followed it are kept, as "
        "siblings) and becomes the current branch; the history sent is the branch before it. "
        "404 `message_not_found` for a message not in the conversation, 400 `not_a_question` "
        "for an answer.",
    }
    return fields


def question_body(bounds: Bounds, *, form: bool, regenerate: bool = False) -> Schema:
    """A `/callChatGPT` body: a form (text values) or a JSON object (typed values).

    `regenerate` leaves out `input` and `conversation_id` (the conversation has them).
    """
    fields = question_fields(bounds)
    if not form:
        fields["stream"] = {"anyOf": [BOOLEAN, fields["stream"]]}
        # In JSON, null stands for a parameter not given.
        fields = {
            name: schema if name == "input" else {"anyOf": [schema, {"type": "null"}]}
            for name, schema in fields.items()
        }
    if regenerate:
        del fields["input"], fields["conversation_id"], fields["edit_of"]
    return loose("" if regenerate else "input", **fields)


def _answer_schemas() -> dict[str, Schema]:
    """A question's answer as JSON, and as SSE events (`chatproxy.web.sse`)."""
    answer = shape(
        answer=string(),
        reasoning=nullable(string(description="The model's reasoning, when it sent any.")),
        model=nullable(string()),
        usage=nullable(ref("Usage")),
        finish_reason=nullable(string()),
        cost=COST,
        conversation_id=ID,
        message_id=nullable(integer()),
        stored=BOOLEAN,
    )
    done = loose(
        "finish_reason usage model cost",
        finish_reason=nullable(string()),
        usage=nullable(ref("Usage")),
        model=nullable(string()),
        cost=COST,
        conversation_id=ID,
        message_id=nullable(integer()),
        stored=BOOLEAN,
        reasoning_seconds=number(
            minimum=0, description="How long the reasoning streamed before the answer started."
        ),
    )
    events = {
        "reasoning": shape(content=string()),
        "delta": shape(content=string()),
        "done": done,
        "error": ref("Error"),
    }
    return {
        "Usage": loose(
            "prompt_tokens completion_tokens total_tokens",
            prompt_tokens=COUNT,
            completion_tokens=COUNT,
            total_tokens=COUNT,
        ),
        "Answer": answer,
        "AnswerEvent": {
            "description": "`event: reasoning` per piece of the model's reasoning and "
            "`event: delta` per piece of the answer, then `event: done` or `event: error`, "
            "data in JSON; a comment line (`: keep-alive`) while the upstream is silent.",
            "oneOf": [
                loose("event data", event={"const": name}, data=json_data(schema))
                for name, schema in events.items()
            ],
        },
    }


# --- The page's lists, usage, health -----------------------------------------------------


def _service_schemas() -> dict[str, Schema]:
    persona = shape(
        id=string(),
        name=nullable(string()),
        description=nullable(string()),
        model=nullable(string()),
        messages=array(shape(role=string(enum=list(ROLES)), content=string())),
    )
    day = shape(
        date=string(format="date"),
        requests=COUNT,
        prompt_tokens=COUNT,
        completion_tokens=COUNT,
        total_tokens=COUNT,
        cost=number(minimum=0),
    )
    key = shape(
        name=string(description="The access key's name; `open` while CHATPROXY_AUTH=open."),
        rpm=nullable(COUNT),
        tpm=nullable(COUNT),
        tokens_per_day=nullable(COUNT),
        usd_per_day=nullable(number(minimum=0)),
        models=nullable(array(string())),
    )
    return {
        "PersonaList": list_of(persona),
        "ModelChoiceList": list_of(shape(id=string(), default=BOOLEAN)),
        "UsageDay": day,
        "UsageReport": shape(key=key, today=ref("UsageDay"), days=array(ref("UsageDay"))),
        "Health": shape(status={"const": "ok"}),
        "Readiness": shape(
            status=string(enum=["ready", "not ready"]),
            checks={"type": "object", "additionalProperties": string()},
            simulator=BOOLEAN,
        ),
    }


def component_schemas(bounds: Bounds) -> dict[str, Schema]:
    """Every schema of `components.schemas` but `/v1`'s (`v1_schemas`) and the conversations'
    (`conversation_schemas`), by name."""
    error = shape(
        message=string(), type=string(), param=nullable(string()), code=nullable(string())
    )
    return {
        "Error": shape(error=error),
        **_answer_schemas(),
        "Question": question_body(bounds, form=False),
        "QuestionForm": question_body(bounds, form=True),
        "RegenerateOptions": question_body(bounds, form=False, regenerate=True),
        "RegenerateOptionsForm": question_body(bounds, form=True, regenerate=True),
        **_service_schemas(),
    }
