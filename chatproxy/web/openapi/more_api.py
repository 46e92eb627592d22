"""The OpenAPI document's Responses API, embeddings and moderations: paths and schemas.

The bodies are the OpenAI API reference's ("Responses", "Embeddings",
"Moderations"), their important fields described with this deployment's
bounds and any other allowed, as for `/v1`'s others (`v1_schemas`).
"""

from __future__ import annotations

from chatproxy.web.openapi.components import (
    IDEMPOTENCY_ERRORS,
    JSON,
    SSE,
    UPSTREAM_ERRORS,
    Operations,
    body,
    errors,
    ok,
)
from chatproxy.web.openapi.schemas import (
    BOOLEAN,
    Bounds,
    Schema,
    array,
    integer,
    json_data,
    loose,
    nullable,
    ref,
    string,
)

RESPONSE_ID = string(pattern="^[A-Za-z0-9_-]{1,200}$")


def more_paths(ops: Operations) -> dict[str, Schema]:
    """`/v1/responses` and its `{response_id}` routes, `/v1/embeddings`, `/v1/moderations`."""
    ops = ops.tagged("openai")
    idempotent = {"Idempotent-Replayed": ref("Idempotent-Replayed", "headers")}

    def create(op_id: str, summary: str, request: str, answer: Schema) -> Schema:
        responses = {"200": answer, **errors(*UPSTREAM_ERRORS, *IDEMPOTENCY_ERRORS)}
        return {
            "post": ops.api(
                op_id,
                summary,
                responses,
                parameters=[ref("IdempotencyKey", "parameters")],
                requestBody=body((JSON, ref(request))),
            )
        }

    path_id = {
        "name": "response_id",
        "in": "path",
        "required": True,
        "schema": RESPONSE_ID,
        "description": "A response the caller's key created; any other: 404 `response_not_found`.",
    }
    include = {"name": "include", "in": "query", "schema": array(string(maxLength=200))}

    def stored(op_id: str, summary: str, schema: str, *query: Schema) -> Schema:
        answer = ok("The upstream's answer as it came", {JSON: ref(schema)})
        return ops.api(
            op_id,
            summary,
            {"200": answer, **errors(400, 404, 502, 503, 504)},
            parameters=[path_id, *query],
        )

    created = ok(
        'The upstream\'s `response` object as it came; with `"stream": true` its named '
        "events (`response.created` ... `response.completed`), or an `error` event if the "
        "stream breaks.",
        {JSON: ref("ResponseObject"), SSE: ref("ResponseEvent")},
        headers=idempotent,
    )
    page = [
        {"name": name, "in": "query", "schema": schema}
        for name, schema in (
            ("after", string(maxLength=200)),
            ("before", string(maxLength=200)),
            ("limit", integer(minimum=1, maximum=100)),
            ("order", string(enum=["asc", "desc"])),
        )
    ]
    return {
        "/v1/responses": create(
            "createResponse", "Create a model response", "ResponseRequest", created
        ),
        "/v1/responses/{response_id}": {
            "get": stored("getResponse", "A response of the caller's", "ResponseObject", include),
            "delete": stored("deleteResponse", "Delete a response", "ResponseDeleted"),
        },
        "/v1/responses/{response_id}/input_items": {
            "get": stored(
                "listInputItems", "A response's input items", "ResponseItemList", *page, include
            )
        },
        "/v1/responses/{response_id}/cancel": {
            "post": stored("cancelResponse", "Cancel a background response", "ResponseObject")
        },
        "/v1/embeddings": create(
            "createEmbedding",
            "Create embeddings",
            "EmbeddingRequest",
            ok(
                "The upstream's answer as it came", {JSON: ref("EmbeddingList")}, headers=idempotent
            ),
        ),
        "/v1/moderations": create(
            "createModeration",
            "Classify text and images (free)",
            "ModerationRequest",
            ok("The upstream's answer as it came", {JSON: ref("Moderation")}, headers=idempotent),
        ),
    }


def more_schemas(bounds: Bounds) -> dict[str, Schema]:
    """The requests and answers of `more_paths`: the important fields, any other allowed."""
    model = string(
        **bounds.model_enum(bounds.models),
        description="One of CHATPROXY_MODELS (403 `model_not_allowed` for others).",
    )
    tokens = array(integer(minimum=0), minItems=1)
    request = loose(
        "model",
        model=model,
        input={"anyOf": [string(), array({"type": "object"})]},
        instructions=nullable(string()),
        stream=nullable(BOOLEAN),
        max_output_tokens=nullable(
            integer(
                minimum=1,
                maximum=bounds.max_tokens,
                description="At most CHATPROXY_MAX_TOKENS; with none given, the cap is sent.",
            )
        ),
        previous_response_id=nullable(
            string(description="A response of the caller's key (404 otherwise).")
        ),
        background={"anyOf": [{"const": False}, {"type": "null"}]},
        tools=array({"type": "object"}),
    )
    request["description"] = (
        "OpenAI's create-response body. chatproxy checks `model`, `max_output_tokens`, "
        "`stream` and `previous_response_id`, and refuses `background` and `conversation` "
        "(400); any other field goes upstream as sent."
    )
    usage = loose("input_tokens output_tokens", input_tokens=integer(), output_tokens=integer())
    response = loose(
        "id object status",
        id=string(),
        object={"const": "response"},
        status=nullable(string()),
        model=string(),
        output=array({"type": "object"}),
        usage=nullable(usage),
    )
    event = loose(
        "type sequence_number",
        type=string(pattern="^(response\\.|error$)"),
        sequence_number=integer(),
        response=ref("ResponseObject"),
    )
    embedding = loose(
        "model input",
        model=model,
        input={"anyOf": [string(minLength=1), array(string(), minItems=1), tokens, array(tokens)]},
        encoding_format=nullable(string(enum=["float", "base64"])),
        dimensions=nullable(integer(minimum=1)),
    )
    moderation = loose(
        "input",
        model=nullable(model),
        input={
            "anyOf": [
                string(minLength=1),
                array(string(), minItems=1),
                array({"type": "object"}, minItems=1),
            ]
        },
    )
    return {
        "ResponseRequest": request,
        "ResponseObject": response,
        "ResponseEvent": loose("data", event=string(), data=json_data(event)),
        "ResponseDeleted": loose("id deleted", id=string(), deleted=BOOLEAN),
        "ResponseItemList": loose(
            "object data", object={"const": "list"}, data=array({"type": "object"})
        ),
        "EmbeddingRequest": embedding,
        "EmbeddingList": loose(
            "object data model usage",
            object={"const": "list"},
            data=array(loose("embedding index")),
            model=string(),
            usage=loose("prompt_tokens", prompt_tokens=integer()),
        ),
        "ModerationRequest": moderation,
        "Moderation": loose("id model results", results=array(loose("flagged"))),
    }
