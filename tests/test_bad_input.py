"""Bad input gets its status and OpenAI's error shape, through a real server; never a 500."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest

from tests.conftest import raw_http

TOO_LONG = "x" * 16001  # CHATPROXY_MAX_INPUT_CHARS defaults to 16000


def assert_openai_error(response: httpx2.Response, status: int, param: str | None) -> dict:
    """The response has `status` and OpenAI's error body naming `param`; returns the error."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert error["message"]
    assert "Traceback" not in response.text
    return error


@pytest.mark.parametrize(
    ("request_args", "status", "param"),
    [
        ({"params": {}}, 400, "input"),
        ({"params": {"input": ""}}, 400, "input"),
        ({"params": {"input": "   "}}, 400, "input"),
        ({"method": "POST", "json": {"input": 5}}, 400, "input"),
        ({"method": "POST", "json": {"input": ["a"]}}, 400, "input"),
        ({"method": "POST", "json": {"input": None}}, 400, "input"),
        ({"method": "POST", "data": {"input": TOO_LONG}}, 400, "input"),
        ({"params": {"input": "hi", "temperature": "hot"}}, 400, "temperature"),
        ({"params": {"input": "hi", "temperature": "2.5"}}, 400, "temperature"),
        ({"params": {"input": "hi", "temperature": "-0.1"}}, 400, "temperature"),
        ({"params": {"input": "hi", "temperature": "nan"}}, 400, "temperature"),
        ({"method": "POST", "json": {"input": "hi", "temperature": True}}, 400, "temperature"),
        ({"params": {"input": "hi", "top_p": "1.5"}}, 400, "top_p"),
        ({"params": {"input": "hi", "presence_penalty": "3"}}, 400, "presence_penalty"),
        ({"params": {"input": "hi", "frequency_penalty": "-2.5"}}, 400, "frequency_penalty"),
        ({"params": {"input": "hi", "max_tokens": "0"}}, 400, "max_tokens"),
        ({"params": {"input": "hi", "max_tokens": "-5"}}, 400, "max_tokens"),
        ({"params": {"input": "hi", "max_tokens": "many"}}, 400, "max_tokens"),
        ({"method": "POST", "json": {"input": "hi", "max_tokens": 1.5}}, 400, "max_tokens"),
        ({"params": {"input": "hi", "max_tokens": "4097"}}, 400, "max_tokens"),
        ({"method": "POST", "json": {"input": "hi", "stop": ["a"] * 5}}, 400, "stop"),
        ({"method": "POST", "json": {"input": "hi", "stop": 7}}, 400, "stop"),
        ({"params": {"input": "hi", "stream": "maybe"}}, 400, "stream"),
        ({"params": {"input": "hi", "format": "xml"}}, 400, "format"),
        ({"method": "POST", "json": {"input": "hi", "system": 1}}, 400, "system"),
        ({"params": {"input": "hi", "model": "gpt-5-ultra"}}, 403, "model"),
    ],
)
def test_bad_parameter(api_server, request_args, status, param):
    args = {"method": "GET", **request_args}
    response = httpx2.request(url=f"{api_server.url}/callChatGPT", **args)

    assert_openai_error(response, status, param)


@pytest.mark.parametrize("stream", ["0", "1"])
def test_bad_input_never_opens_a_stream(api_server, stream):
    response = httpx2.get(
        f"{api_server.url}/callChatGPT",
        params={"input": "hi", "temperature": "9", "stream": stream},
    )

    assert_openai_error(response, 400, "temperature")


def test_body_that_is_not_a_json_object(api_server):
    for body in (b"{not json", b"[1, 2]", b"[" * 100_000 + b"]" * 100_000):
        response = httpx2.post(
            f"{api_server.url}/callChatGPT",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        assert_openai_error(response, 400, None)


def test_oversized_body_is_413(make_server_with):
    server = make_server_with(CHATPROXY_MAX_BODY_BYTES="2048")

    response = httpx2.post(f"{server.url}/callChatGPT", data={"input": "x" * 5000})

    assert_openai_error(response, 413, None)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_wrong_method_is_405(api_server, method):
    response = httpx2.request(method, f"{api_server.url}/callChatGPT?input=hi")

    error = assert_openai_error(response, 405, None)
    assert "GET" in response.headers["allow"] and "POST" in response.headers["allow"]
    assert error["code"] == "method_not_allowed"


def test_unknown_route_is_404(api_server):
    response = httpx2.get(f"{api_server.url}/nope")

    assert_openai_error(response, 404, None)


@pytest.fixture(scope="module")
def keys_server(make_app):  # type: ignore[no-untyped-def]
    """A server that needs access keys, for the tests of what a key may look like."""
    from tests.conftest import serve

    with serve(make_app(CHATPROXY_AUTH="keys")) as server:
        yield server


@pytest.mark.parametrize(
    "key", ["cpk-%00abc", "cpk-abcdefgh%00ijklmnop", "%00", "cpk-%0D%0Aabcdefgh", "cpk-" + "é" * 9]
)
@pytest.mark.parametrize("path", ["/callChatGPT?input=hi", "/v1/models", "/api/conversations"])
def test_a_malformed_key_in_the_url_is_401_on_every_store(keys_server, path, key):
    """A NUL or another odd character in `?key=` is an unknown key, not a database error."""
    separator = "&" if "?" in path else "?"
    response = httpx2.get(f"{keys_server.url}{path}{separator}key={key}")

    error = assert_openai_error(response, 401, None)
    assert error["code"] == "invalid_api_key"


@pytest.mark.parametrize("conversation_id", ["%00abc", "0123456789abcdef0123456789abcde%00", "x"])
@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/regenerate"), ("GET", "/export")],
)
def test_a_malformed_conversation_id_is_404_on_every_store(
    api_server, method, suffix, conversation_id
):
    response = httpx2.request(
        method,
        f"{api_server.url}/api/conversations/{conversation_id}{suffix}",
        json={"title": "t"} if method == "PATCH" else None,
    )

    error = assert_openai_error(response, 404, "conversation_id")
    assert error["code"] == "conversation_not_found"


def test_a_nul_in_conversation_id_parameter_is_400(api_server):
    response = httpx2.get(
        f"{api_server.url}/callChatGPT", params={"input": "hi", "conversation_id": "\x00abc"}
    )

    assert_openai_error(response, 400, "conversation_id")


CHAT = '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]'


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", CHAT + ', "temperature": 1e309}'),
        ("/v1/chat/completions", CHAT + ', "temperature": -1E400}'),
        ("/v1/chat/completions", CHAT + ', "logit_bias": {"50256": 1e309}}'),
        ("/v1/chat/completions", CHAT + ', "stream": true, "top_p": 2e308}'),
        ("/v1/completions", '{"model": "gpt-4o-mini", "prompt": "hi", "temperature": 1e309}'),
        ("/callChatGPT", '{"input": "hi", "temperature": 1e309}'),
        ("/callChatGPT", '{"input": "hi", "seed": 1e309}'),
        (
            "/api/conversations/import",
            '{"messages": [{"role": "user", "content": "hi"}], "x": 1e309}',
        ),
    ],
)
def test_a_number_that_overflows_is_400(api_server, path, body):
    """Python reads 1e309 as infinity; no JSON client means that, and no upstream takes it."""
    response = httpx2.post(
        api_server.url + path, content=body, headers={"Content-Type": "application/json"}
    )

    error = assert_openai_error(response, 400, None)
    assert error["code"] == "number_too_large"


def test_an_integer_beyond_a_double_is_400(api_server):
    body = '{"input": "hi", "temperature": 1' + "0" * 400 + "}"

    response = httpx2.post(
        f"{api_server.url}/callChatGPT", content=body, headers={"Content-Type": "application/json"}
    )

    assert_openai_error(response, 400, "temperature")


def chunks(total: int, size: int = 1000) -> Iterator[bytes]:
    """A form body of `total` bytes, `input=xxx...`, sent in chunks (no Content-Length)."""
    body = b"input=" + b"x" * (total - len(b"input="))
    for start in range(0, len(body), size):
        yield body[start : start + size]


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_a_chunked_body_over_the_limit_is_413(make_server_with):
    server = make_server_with(CHATPROXY_MAX_BODY_BYTES="2048")

    response = httpx2.post(f"{server.url}/callChatGPT", content=chunks(5000), headers=FORM)

    assert response.request.headers["transfer-encoding"] == "chunked"
    error = assert_openai_error(response, 413, None)
    assert error["code"] == "request_too_large"


def test_a_chunked_body_within_the_limit_is_read_whole(make_server_with):
    server = make_server_with(CHATPROXY_MAX_BODY_BYTES="2048")
    question = b"input=" + b"y" * 1990 + b"+END&format=json"  # 2,012 bytes: the limit's own side

    response = httpx2.post(
        f"{server.url}/callChatGPT",
        content=(question[i : i + 500] for i in range(0, len(question), 500)),
        headers=FORM,
    )

    assert response.status_code == 200, response.text
    stored = httpx2.get(
        f"{server.url}/api/conversations/{response.json()['conversation_id']}"
    ).json()
    assert stored["messages"][0]["content"] == "y" * 1990 + " END"


def test_a_malformed_chunked_body_is_400(api_server):
    answer = raw_http(
        api_server.url,
        b"POST /callChatGPT HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n\r\n"
        b"zz\r\ninput=hi\r\n0\r\n\r\n",
    )

    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b'"invalid_request_error"' in answer
