"""One error family, one JSON shape: OpenAI's, so OpenAI clients understand it.

Body: `{"error": {"message": str, "type": str, "param": str | None, "code": str | None}}`
(OpenAI API reference, "Error codes"). Every error a client can see goes through
`error_response`; nothing else (traceback, exception class, upstream URL, key)
ever reaches a client.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # Flask is imported where it is used: gunicorn's master reads errors only
    from flask import Flask, Response
    from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class APIError(Exception):
    """An error with an HTTP status and OpenAI's error body."""

    status = 500
    type = "server_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        """The OpenAI-shaped body: `{"error": {message, type, param, code}}`."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class BadRequest(APIError):
    """400: the request's input is missing or wrong."""

    status = 400
    type = "invalid_request_error"
    default_code = "invalid_value"


class Unauthorized(APIError):
    """401: no access key, or one this service does not know."""

    status = 401
    type = "invalid_request_error"
    default_code = "invalid_api_key"


class Forbidden(APIError):
    """403: the request is understood but not allowed (e.g. a model)."""

    status = 403
    type = "permission_error"
    default_code = "not_allowed"


class NotFound(APIError):
    """404: no such route or object."""

    status = 404
    type = "invalid_request_error"
    default_code = "not_found"


class MethodNotAllowed(APIError):
    """405: the route exists but not for this HTTP method."""

    status = 405
    type = "invalid_request_error"
    default_code = "method_not_allowed"


class Conflict(APIError):
    """409: the request clashes with another in progress (an Idempotency-Key in use)."""

    status = 409
    type = "invalid_request_error"
    default_code = "conflict"


class PayloadTooLarge(APIError):
    """413: the request body is larger than CHATPROXY_MAX_BODY_BYTES (CHATPROXY_MAX_UPLOAD_BYTES
    for an upload)."""

    status = 413
    type = "invalid_request_error"
    default_code = "request_too_large"


class Unprocessable(APIError):
    """422: well formed but not acceptable (an Idempotency-Key reused for another request)."""

    status = 422
    type = "invalid_request_error"
    default_code = "unprocessable"


class RateLimited(APIError):
    """429: too many requests; `retry_after` seconds go into `Retry-After`."""

    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class UpstreamError(APIError):
    """502: the upstream failed, refused us, or could not be reached."""

    status = 502
    type = "upstream_error"
    default_code = "upstream_error"


class UpstreamNotConfigured(APIError):
    """503: no upstream is configured (no OPENAI_API_KEY)."""

    status = 503
    type = "server_error"
    default_code = "upstream_not_configured"


class StoreUnavailable(APIError):
    """503: the database cannot be reached (or stays locked); nothing was stored or asked."""

    status = 503
    type = "server_error"
    default_code = "store_unavailable"


class UploadsBusy(APIError):
    """503: this worker holds as many attachment bytes as CHATPROXY_UPLOAD_MEMORY_BYTES allows,
    and none were let go in time; nothing was read or asked."""

    status = 503
    type = "server_error"
    default_code = "uploads_busy"


class UpstreamTimeout(APIError):
    """504: the upstream did not answer within CHATPROXY_TIMEOUT."""

    status = 504
    type = "upstream_error"
    default_code = "upstream_timeout"


_HTTP_ERRORS: dict[int, type[APIError]] = {
    400: BadRequest,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
}


def error_detail(body: object) -> dict[str, Any]:
    """The `error` object of an OpenAI error body, or {} (the SDK may give either level)."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return inner
    return {}


def error_response(error: APIError) -> Response:
    """Turn `error` into a JSON response with its status and headers."""
    from flask import jsonify

    response = jsonify(error.body())
    response.status_code = error.status
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def from_http_exception(exc: HTTPException) -> APIError:
    """Map one of werkzeug's HTTP errors (404, 405, 413, ...) to an APIError."""
    kind = _HTTP_ERRORS.get(exc.code or 500)
    if kind is None:
        error = APIError(exc.description or "Error")
        error.status = exc.code or 500
        return error
    messages = {
        404: "No such route. See the README for the routes chatproxy serves.",
        405: f"This route does not accept that HTTP method. "
        f"Allowed: {', '.join(getattr(exc, 'valid_methods', None) or [])}.",
        413: "The request body is too large (CHATPROXY_MAX_BODY_BYTES; for an upload, "
        "CHATPROXY_MAX_UPLOAD_BYTES).",
        400: "The request could not be read.",
    }
    return kind(messages[exc.code or 400])


def register_error_handlers(app: Flask) -> None:
    """Send every error, expected or not, in OpenAI's error shape."""
    from werkzeug.exceptions import HTTPException

    @app.errorhandler(APIError)
    def handle_api_error(error: APIError) -> Response:
        return error_response(error)

    @app.errorhandler(HTTPException)
    def handle_http_exception(exc: HTTPException) -> Response:
        response = error_response(from_http_exception(exc))
        if exc.code == 405:
            response.headers["Allow"] = ", ".join(getattr(exc, "valid_methods", None) or [])
        return response

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception) -> Response:
        # The traceback goes to the server log only; the client learns nothing of it.
        log.exception("unhandled error")
        return error_response(APIError("Internal server error.", code="internal_error"))
