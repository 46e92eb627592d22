"""Bad input gets its status and OpenAI's error shape, through a real server; never a 500."""

from __future__ import annotations

import httpx2
import pytest

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
