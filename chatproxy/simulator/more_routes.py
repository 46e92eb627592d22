"""The simulator's Responses API, embeddings and moderations routes (OpenAI API reference).

- `POST /v1/responses` (whole, or streamed as named events: `responses_wire`),
  `GET` and `DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`,
  `POST /v1/responses/{id}/cancel` (400: only background responses can be
  cancelled, and the simulator makes none). Responses are kept in memory
  (the last MAX_KEPT); `previous_response_id` continues one, its turns
  counted in the prompt as OpenAI counts them.
- `POST /v1/embeddings`: a deterministic vector per input (from its text's
  hash), `float` or `base64` (little-endian float32), `dimensions` honoured;
  usage `prompt_tokens` and `total_tokens`.
- `POST /v1/moderations`: a result per input, flagged when it holds a word of
  FLAGGED_WORDS (e.g. "kill"), with OpenAI's categories and scores.

The `[[sim: ...]]` directive of the last user text applies as for chat
(latency, chunks, delay, faults, answer, words).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import time
from collections import OrderedDict
from typing import Any, Protocol

from aiohttp import web

from chatproxy.simulator import answers, checks, responses_wire, wire
from chatproxy.simulator.wire import ApiError

MAX_KEPT = 10_000  # responses kept for retrieval
EMBEDDING_MODELS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
MODERATION_MODELS = (
    "omni-moderation-latest",
    "omni-moderation-2024-09-26",
    "text-moderation-latest",
    "text-moderation-stable",
)
CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
FLAGGED_WORDS = {"kill": "violence", "murder": "violence", "hate": "hate"}


class Serving(Protocol):
    """What these routes use of the server (`chatproxy.simulator.server.Simulator`)."""

    models: tuple[str, ...] | None  # the only models it serves (`--models`), None: OpenAI's

    def _body(self, request: web.Request) -> dict[str, Any]: ...

    def _plan(self, text: str) -> tuple[Any, str]: ...

    async def _begin(
        self, request: web.Request, plan: Any, stream: bool
    ) -> web.StreamResponse | None: ...

    async def _stream(
        self, request: web.Request, events: tuple[list[bytes], list[bytes], list[bytes]], plan: Any
    ) -> web.StreamResponse: ...


class MoreRoutes:
    """The routes of the module's doc, served by `simulator` (its body checks, plans, faults
    and streaming), with the responses it made."""

    def __init__(self, simulator: Serving) -> None:
        self.simulator = simulator
        self.kept: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def add_to(self, app: web.Application) -> None:
        """Add the routes to `app`."""
        app.router.add_post("/v1/responses", self.create)
        app.router.add_get("/v1/responses/{id}", self.retrieve)
        app.router.add_delete("/v1/responses/{id}", self.delete)
        app.router.add_post("/v1/responses/{id}/cancel", self.cancel)
        app.router.add_get("/v1/responses/{id}/input_items", self.input_items)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/v1/moderations", self.moderations)

    def _found(self, request: web.Request) -> dict[str, Any]:
        ident = request.match_info["id"]
        if ident not in self.kept:
            raise ApiError(404, f"Response with id '{ident}' not found.", param="response_id")
        return self.kept[ident]

    async def create(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/responses: a `response` object, or its named SSE events."""
        sim = self.simulator
        body = sim._body(request)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "Missing required parameter: 'model'.", param="model")
        if model not in (sim.models or wire.CHAT_MODELS):
            message = f"The requested model '{model}' does not exist."
            raise ApiError(404, message, param="model", code="model_not_found")
        checks.check_number(body, "max_output_tokens", 16, 2**31)
        history: list[dict[str, Any]] = []
        previous = body.get("previous_response_id")
        if previous is not None:
            if previous not in self.kept:
                message = f"Previous response with id '{previous}' not found."
                raise ApiError(400, message, param="previous_response_id")
            history = list(self.kept[previous]["history"])
        history += responses_wire.input_messages(body)
        users = [m for m in history if m.get("role") == "user"]
        plan, _ = sim._plan(str(users[-1]["content"]) if users else "")
        stream = body.get("stream") is True
        early = await sim._begin(request, plan, stream)
        if early is not None:
            return early
        text = responses_wire.answer_of(history, body, plan.answer, plan.words)
        limit = body.get("max_output_tokens")
        text, reason, completion = wire.finish(text, {"model": model, "max_tokens": limit})
        use = responses_wire.usage(answers.prompt_tokens(history, model), completion)
        ident, created = responses_wire.new_id("resp"), int(time.time())
        status = "incomplete" if reason == "length" else "completed"
        item = responses_wire.message(responses_wire.new_id("msg"), text, "completed")
        final = responses_wire.response(ident, created, body, status, [item], use)
        history.append({"role": "assistant", "content": text})
        self.kept[ident] = {
            "response": final,
            "items": responses_wire.input_items(body),
            "history": history,
        }
        while len(self.kept) > MAX_KEPT:
            self.kept.popitem(last=False)
        pieces = answers.split_pieces(text, plan.chunks)
        if stream:
            options = body.get("stream_options") or {}
            obfuscate = options.get("include_obfuscation") is not False
            return await sim._stream(request, responses_wire.events(final, pieces, obfuscate), plan)
        await asyncio.sleep(plan.delay * len(pieces))
        return web.json_response(final, dumps=wire.dumps)

    async def retrieve(self, request: web.Request) -> web.Response:
        """GET /v1/responses/{id}: the response object, or 404."""
        return web.json_response(self._found(request)["response"], dumps=wire.dumps)

    async def delete(self, request: web.Request) -> web.Response:
        """DELETE /v1/responses/{id}: `{"id", "object": "response", "deleted": true}`, or 404."""
        ident = self._found(request)["response"]["id"]
        del self.kept[ident]
        deleted = {"id": ident, "object": "response", "deleted": True}
        return web.json_response(deleted, dumps=wire.dumps)

    async def cancel(self, request: web.Request) -> web.Response:
        """POST /v1/responses/{id}/cancel: 400, as OpenAI answers for a response not made in the
        background (the simulator makes none); 404 for an unknown id."""
        self._found(request)
        message = "Only responses created with background=true can be cancelled."
        raise ApiError(400, message, param="response_id")

    async def input_items(self, request: web.Request) -> web.Response:
        """GET /v1/responses/{id}/input_items: `{"object": "list", "data", "first_id",
        "last_id", "has_more"}`, newest first unless `order=asc`, at most `limit` (20)."""
        items = list(self._found(request)["items"])
        if request.query.get("order", "desc") != "asc":
            items.reverse()
        after = request.query.get("after")
        if after is not None:
            ids = [item["id"] for item in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        try:
            limit = min(100, max(1, int(request.query.get("limit", "20"))))
        except ValueError:
            raise ApiError(400, "Invalid 'limit': expected an integer.", param="limit") from None
        page = items[:limit]
        listed = {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > limit,
        }
        return web.json_response(listed, dumps=wire.dumps)

    async def embeddings(self, request: web.Request) -> web.Response:
        """POST /v1/embeddings: `{"object": "list", "data": [embeddings], "model", "usage"}`."""
        body = self.simulator._body(request)
        model = body.get("model")
        if model not in EMBEDDING_MODELS:
            message = f"The model `{model}` does not exist or you do not have access to it."
            raise ApiError(404, message, code="model_not_found")
        value = body.get("input")
        if value is None:
            raise ApiError(400, "Missing required parameter: 'input'.", param="input")
        inputs = [value] if isinstance(value, str) or _token_ids(value) else value
        if not isinstance(inputs, list) or not inputs or "" in inputs:
            message = "'$.input' is invalid. Please check the API reference."
            raise ApiError(400, message, param="input")
        native = EMBEDDING_MODELS[model]
        size = body.get("dimensions") or native
        if not isinstance(size, int) or not 1 <= size <= native:
            message = f"Invalid 'dimensions': expected an integer from 1 to {native}."
            raise ApiError(400, message, param="dimensions")
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise ApiError(
                400, f"Invalid 'encoding_format': '{encoding}'.", param="encoding_format"
            )
        data, used = [], 0
        for index, item in enumerate(inputs):
            if isinstance(item, str):
                used += answers.count_tokens(item, model)
            elif isinstance(item, list):
                used += len(item)
            vector = _vector(repr(item), int(size))
            embedded: Any = vector
            if encoding == "base64":
                embedded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedded})
        use = {"prompt_tokens": used, "total_tokens": used}
        result = {"object": "list", "data": data, "model": model, "usage": use}
        return web.json_response(result, dumps=wire.dumps)

    async def moderations(self, request: web.Request) -> web.Response:
        """POST /v1/moderations: `{"id", "model", "results": [{"flagged", "categories",
        "category_scores", "category_applied_input_types"}]}`, one result per input."""
        body = self.simulator._body(request)
        model = body.get("model") or MODERATION_MODELS[0]
        if model not in MODERATION_MODELS:
            message = f"The model `{model}` does not exist or you do not have access to it."
            raise ApiError(404, message, code="model_not_found")
        value = body.get("input")
        if value is None:
            raise ApiError(400, "Missing required parameter: 'input'.", param="input")
        inputs = [value] if isinstance(value, str) else value
        if not isinstance(inputs, list) or not inputs:
            raise ApiError(400, "'$.input' is invalid. Please check the API reference.")
        if any(isinstance(item, dict) for item in inputs):  # multimodal parts: one input
            texts = [" ".join(str(i.get("text", "")) for i in inputs if isinstance(i, dict))]
        else:
            texts = [str(item) for item in inputs]
        results = [_moderation(text) for text in texts]
        answer = {"id": f"modr-{responses_wire.new_id('sim')[4:]}", "model": model}
        return web.json_response({**answer, "results": results}, dumps=wire.dumps)


def _token_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, int) for v in value)


def _vector(text: str, size: int) -> list[float]:
    """A unit vector of `size` floats, the same for the same text."""
    seed = hashlib.sha256(text.encode()).digest()
    raw = [((seed[i % 32] * (i + 1) * 2654435761) % 2001 - 1000) / 1000 for i in range(size)]
    norm = sum(x * x for x in raw) ** 0.5 or 1.0
    return [round(x / norm, 6) for x in raw]


def _moderation(text: str) -> dict[str, Any]:
    """One moderation result: flagged in a category when `text` holds one of FLAGGED_WORDS."""
    lowered = text.lower()
    hit = {category for word, category in FLAGGED_WORDS.items() if word in lowered}
    return {
        "flagged": bool(hit),
        "categories": {name: name in hit for name in CATEGORIES},
        "category_scores": {name: 0.97 if name in hit else 0.0001 for name in CATEGORIES},
        "category_applied_input_types": {name: ["text"] for name in CATEGORIES},
    }
