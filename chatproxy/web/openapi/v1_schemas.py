"""The JSON Schemas of `/v1`'s requests and answers in the OpenAPI document.

chatproxy passes these bodies on, so they describe the important fields of the
OpenAI API reference (https://platform.openai.com/docs/api-reference), with
this deployment's bounds, and allow any other.
"""

from __future__ import annotations

from chatproxy.questions import MAX_STOP_SEQUENCES, NUMBER_RANGES
from chatproxy.web.openapi.schemas import (
    BOOLEAN,
    OPENAI_ROLES,
    Bounds,
    Schema,
    array,
    integer,
    json_data,
    list_of,
    loose,
    nullable,
    number,
    ref,
    shape,
    string,
)


def v1_schemas(bounds: Bounds) -> dict[str, Schema]:
    """Requests and answers of `/v1`: the important fields, any other allowed."""
    limit = nullable(
        integer(
            minimum=1,
            maximum=bounds.max_tokens,
            description="At most CHATPROXY_MAX_TOKENS; with no limit given, the cap is sent.",
        )
    )
    common: dict[str, Schema] = {
        "model": string(
            **bounds.model_enum(bounds.models),
            description="One of CHATPROXY_MODELS (403 `model_not_allowed` for others).",
        ),
        "stream": nullable(BOOLEAN),
        "stream_options": nullable(loose(include_usage=BOOLEAN)),
        "max_tokens": limit,
        **{
            name: nullable(number(minimum=low, maximum=high))
            for name, (low, high) in NUMBER_RANGES.items()
        },
        "stop": nullable({"anyOf": [string(), array(string(), maxItems=MAX_STOP_SEQUENCES)]}),
        "n": nullable(integer(minimum=1, maximum=128)),
        "seed": nullable(integer()),
        "user": string(),
    }
    content = {"anyOf": [string(), array(loose("type", type=string())), {"type": "null"}]}
    message = loose("role", role=string(enum=list(OPENAI_ROLES)), content=content, name=string())
    chat = loose(
        "model messages",
        **common,
        messages=array(message, minItems=1),
        max_completion_tokens=limit,
        response_format=nullable(loose("type", type=string())),
        tools=array({"type": "object"}),
        tool_choice={"anyOf": [string(), {"type": "object"}]},
        logprobs=nullable(BOOLEAN),
        top_logprobs=nullable(integer(minimum=0, maximum=20)),
    )
    chat["description"] = (
        "OpenAI's create-chat-completion body. chatproxy checks `model`, `messages`, "
        "`max_tokens`, `max_completion_tokens` and `stream`; any other field goes upstream "
        "as sent, and the upstream judges it."
    )
    tokens = array(integer(minimum=0))
    prompt = {"anyOf": [string(), array(string()), tokens, array(tokens)]}
    legacy = loose(
        "model prompt",
        **common,
        prompt=prompt,
        suffix=nullable(string()),
        echo=nullable(BOOLEAN),
        best_of=nullable(integer(minimum=0, maximum=20)),
        logprobs=nullable(integer(minimum=0, maximum=5)),
    )
    legacy["description"] = (
        "OpenAI's create-completion body (legacy). Without `max_tokens`, OpenAI's default "
        "of 16 (or the cap, if lower) is sent."
    )

    def answer(*kinds: str) -> Schema:
        return loose(
            "id object created model choices",
            id=string(),
            object=string(enum=list(kinds)),
            created=integer(),
            model=string(),
            choices=array({"type": "object"}),
            usage=nullable(ref("Usage")),
        )

    chunk = answer("chat.completion.chunk", "text_completion")
    return {
        "ChatCompletionRequest": chat,
        "CompletionRequest": legacy,
        "Completion": answer("chat.completion", "text_completion"),
        "PassthroughEvent": loose(
            "data",
            event={"const": "message"},
            data={"anyOf": [{"const": "[DONE]"}, json_data({"anyOf": [chunk, ref("Error")]})]},
        ),
        "Model": shape(
            id=string(), object={"const": "model"}, created=integer(), owned_by=string()
        ),
        "ModelList": list_of(ref("Model")),
    }
