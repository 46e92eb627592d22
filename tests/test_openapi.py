"""The OpenAPI document (`/openapi.json`): valid OpenAPI 3.1, with every route, and true.

schemathesis sends a live server requests made from the document it serves, in
open mode and with an access key: no answer may be a server error or fall
outside the document (status, content type, body, headers; streamed answers
event by event). The upstream is the simulator.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx2
import hypothesis
import jsonschema_rs
import pytest
import schemathesis
from flask import Flask
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from chatproxy.access.keys import issue_key
from chatproxy.config import load_settings
from chatproxy.personas import load_personas
from chatproxy.web.openapi import VERSION, build_document
from chatproxy.web.openapi.schemas import CONVERSATION_ID_PATTERN
from tests.conftest import serve

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# A chat model and a legacy completion model (the simulator serves each on its own endpoint).
MODELS = "gpt-4o-mini,gpt-4o,gpt-3.5-turbo-instruct"
# Short questions keep a GET's URL within the server's request line, whatever the characters.
SETTINGS = {"CHATPROXY_MODELS": MODELS, "CHATPROXY_MAX_INPUT_CHARS": "1000"}
AUTOMATIC_METHODS = {"HEAD", "OPTIONS"}  # werkzeug answers these for every route


def document_of(app: Flask) -> dict[str, Any]:
    return app.test_client().get("/openapi.json").get_json()  # type: ignore[no-any-return]


def references(value: Any) -> Iterator[dict[str, Any]]:
    """Every object with a `$ref` in `value`, except inside schemas (where siblings count)."""
    if isinstance(value, dict):
        if "$ref" in value:
            yield value
        for key, item in value.items():
            if key != "schema":
                yield from references(item)
    elif isinstance(value, list):
        for item in value:
            yield from references(item)


def openapi_path(rule: str) -> str:
    """A werkzeug rule as an OpenAPI path: `/v1/models/<path:model>` -> `/v1/models/{model}`."""
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)


@pytest.mark.parametrize("auth", ["open", "keys"])
def test_the_document_is_valid_openapi_3_1(make_app: Callable[..., Flask], auth: str) -> None:
    document = document_of(make_app(CHATPROXY_AUTH=auth, **SETTINGS))
    assert document["openapi"].startswith("3.1.")
    assert document["info"]["version"] == VERSION
    schemathesis.openapi.from_dict(document).validate()  # the OpenAPI 3.1 meta-schema
    for name, schema in document["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name  # JSON Schema 2020-12
    # Beside a `$ref` outside schemas, OpenAPI 3.1 ignores all but `summary` and `description`.
    for where in ("paths", "parameters", "responses", "headers"):
        part = document if where == "paths" else document["components"]
        for ref in references(part[where]):
            assert set(ref) <= {"$ref", "summary", "description"}, ref


def test_every_route_is_in_the_document_with_its_methods(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    paths = document_of(app)["paths"]
    served: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint != "static":
            methods = set(rule.methods or ()) - AUTOMATIC_METHODS
            served.setdefault(openapi_path(rule.rule), set()).update(methods)
    documented = {
        path: {method.upper() for method in item if method != "parameters"}
        for path, item in paths.items()
    }
    assert documented == served


def test_the_document_states_this_deployments_bounds(make_app: Callable[..., Flask]) -> None:
    app = make_app(CHATPROXY_AUTH="keys", CHATPROXY_MAX_TOKENS="512", **SETTINGS)
    document = document_of(app)
    schemas, parameters = document["components"]["schemas"], document["components"]["parameters"]
    assert parameters["input"]["schema"]["maxLength"] == 1000
    assert parameters["max_tokens"]["schema"]["maximum"] == 512
    assert schemas["ChatCompletionRequest"]["properties"]["model"]["enum"] == MODELS.split(",")
    assert schemas["ChatCompletionRequest"]["additionalProperties"] is True
    asking = document["paths"]["/callChatGPT"]["get"]
    assert {"401", "403", "429", "502", "504"} <= set(asking["responses"])
    assert asking["security"] == [{"accessKey": []}, {"accessKeyQuery": []}]
    assert "security" not in document["paths"]["/healthz"]["get"]
    assert document_of(app) == document


# --- schemathesis against a live server ------------------------------------------------


def document_for(auth: str) -> dict[str, Any]:
    """The document a server with SETTINGS and CHATPROXY_AUTH=`auth` serves.

    schemathesis needs it when tests are collected, before any server runs
    (its loader from a fixture, `schemathesis.pytest.from_fixture`, fails on
    pytest 9.2: it sets `request.node._nodeid`, gone from pytest's nodes); each
    server is checked to serve exactly this (`target_for`).
    """
    settings = load_settings({"CHATPROXY_AUTH": auth, **SETTINGS})
    return build_document(settings, tuple(load_personas(settings.personas_dir, settings.models)))


OPEN = schemathesis.openapi.from_dict(document_for("open"))
KEYS = schemathesis.openapi.from_dict(document_for("keys"))
# Per operation and mode: schemathesis's coverage cases (bounds, wrong types, methods the
# route does not take), then 25 generated ones; the same every run. The file takes about
# two minutes on 2 cores, nearly all of it in the coverage cases.
BOUNDED = hypothesis.settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
CONVERSATION_ID = re.compile(CONVERSATION_ID_PATTERN)


@dataclass
class Target:
    """A live server, and what requests to it carry: the access key, conversations to use.

    With `kept` and `deleted` set, generated conversation ids (a path's, a
    question's) are replaced by `kept` (read, renamed, regenerated, exported,
    asked in) or, to delete, `deleted`, so that those answers are checked too:
    made-up ids would all get 404. Malformed ids are left as generated (400).
    """

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    kept: str | None = None
    deleted: str | None = None

    def call(self, case: schemathesis.Case) -> schemathesis.Response:
        """Send `case` to this server."""
        if self.kept is not None:
            self._use_conversations(case)
        return case.call(base_url=self.url, headers=self.headers, timeout=30)

    def _use_conversations(self, case: schemathesis.Case) -> None:
        deleting = case.operation.definition.raw.get("operationId") == "deleteConversation"
        conversation = self.deleted if deleting else self.kept
        for container, name in (
            (case.path_parameters, "conversation_id"),
            (case.query, "conversation_id"),
            (case.headers, "X-Conversation-Id"),
            (case.body, "conversation_id"),
        ):
            if not isinstance(container, MutableMapping):
                continue
            if CONVERSATION_ID.fullmatch(str(container.get(name))):
                container[name] = conversation


def ask(url: str, headers: dict[str, str], question: str) -> str:
    """A new conversation holding one question and its answer; returns its id."""
    response = httpx2.get(
        f"{url}/callChatGPT",
        params={"input": question, "format": "json"},
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()["conversation_id"]  # type: ignore[no-any-return]


@contextmanager
def target_for(make_app: Callable[..., Flask], auth: str) -> Iterator[tuple[Target, Flask]]:
    """A live server with SETTINGS and CHATPROXY_AUTH=`auth`, checked to serve `document_for`."""
    with serve(make_app(CHATPROXY_AUTH=auth, **SETTINGS)) as server:
        assert httpx2.get(f"{server.url}/openapi.json").json() == document_for(auth)
        yield Target(server.url), server.app


@pytest.fixture(scope="module")
def open_target(make_app: Callable[..., Flask]) -> Iterator[Target]:
    """CHATPROXY_AUTH=open, with two conversations that exist (see Target)."""
    with target_for(make_app, "open") as (target, _):
        target.kept, target.deleted = (ask(target.url, {}, text) for text in ("kept", "deleted"))
        yield target


@pytest.fixture(scope="module")
def keys_target(make_app: Callable[..., Flask]) -> Iterator[Target]:
    """CHATPROXY_AUTH=keys, with a valid key in `Authorization`; conversation ids are made up."""
    with target_for(make_app, "keys") as (target, app):
        with app.app_context():
            # A limit, so that the X-RateLimit-* headers are sent (and checked); never reached.
            key = issue_key(f"openapi-{uuid.uuid4().hex[:10]}", rpm=1_000_000)
        target.headers = {"Authorization": f"Bearer {key}"}
        yield target


def expected_server_error(case: schemathesis.Case, response: schemathesis.Response) -> bool:
    """A 502 that is right: the upstream failed on what the client asked for.

    chatproxy answers an upstream 404 or 5xx with 502 by design (docs/choices.md):
    CHATPROXY_MODELS holds chat and legacy models, so a request may name a model of
    the other endpoint, and the upstream answers 404 (as OpenAI does).
    """
    if response.status_code != 502:
        return False
    error = response.json()["error"]
    return error["code"] == "upstream_not_found" and "Did you mean to use v1/" in error["message"]


def check(case: schemathesis.Case, target: Target) -> None:
    """Send `case`; the answer must be no server error and conform to the document."""
    response = target.call(case)
    checks = CHECKS
    if expected_server_error(case, response):
        checks = [check for check in CHECKS if check is not not_a_server_error]
    case.validate_response(response, checks=checks)


@OPEN.parametrize()
@BOUNDED
def test_open_mode_answers_as_the_document_says(
    case: schemathesis.Case, open_target: Target
) -> None:
    check(case, open_target)


@KEYS.parametrize()
@BOUNDED
def test_keys_mode_answers_as_the_document_says(
    case: schemathesis.Case, keys_target: Target
) -> None:
    check(case, keys_target)


STREAMED = [
    ("/callChatGPT", "GET", {"query": {"input": "hello", "stream": "1"}}),
    (
        "/callChatGPT",
        "GET",
        {"query": {"input": "hello [[sim: reasoning=reasoning_content]]", "stream": "1"}},
    ),
    (
        "/v1/chat/completions",
        "POST",
        {
            "body": {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": True,
            }
        },
    ),
    (
        "/v1/completions",
        "POST",
        {"body": {"model": "gpt-3.5-turbo-instruct", "prompt": "hi", "stream": True}},
    ),
    ("/v1/responses", "POST", {"body": {"model": "gpt-4o-mini", "input": "hi", "stream": True}}),
]


@pytest.mark.parametrize(("path", "method", "parts"), STREAMED)
def test_streamed_answers_are_checked_event_by_event(
    keys_target: Target, path: str, method: str, parts: dict[str, Any]
) -> None:
    case = KEYS[path][method].Case(**parts)
    response = keys_target.call(case)
    assert response.headers["content-type"][0].startswith("text/event-stream")
    case.validate_response(response, checks=CHECKS)
    # An event the document does not describe fails the check.
    tampered = response.content.replace(b'"content"', b'"contents"', 1)
    tampered = tampered.replace(b'"object":"', b'"object":"x', 1)
    assert tampered != response.content
    broken = schemathesis.Response(
        response.status_code, response.headers, tampered, response.request, 0.0, verify=True
    )
    with pytest.raises(FailureGroup) as failed:
        case.validate_response(broken, checks=[response_schema_conformance])
    # The event's shape, or the JSON its `data` holds (a Responses event's).
    assert re.search(r"SSE event (payload )?violates", str(failed.value.exceptions[0]))
