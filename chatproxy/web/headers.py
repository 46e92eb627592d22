"""Security headers on every response (a strict Content-Security-Policy and friends), and
redirects that never name a host the client made up."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, Response, request
from werkzeug.routing import RequestRedirect

# The page loads only its own files and talks only to this server; it has no
# inline script or style (templates/index.html), so this policy holds. Images may be
# `data:` (a pasted screenshot, before it is sent) or `blob:` (a stored one, fetched with
# the access key, which an <img> cannot send): both are made by the page itself.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def register_security_headers(app: Flask) -> None:
    """Add SECURITY_HEADERS to every response that does not set them itself."""

    @app.after_request
    def add_security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


def register_relative_redirects(app: Flask) -> None:
    """Send routing's redirects (`//callChatGPT` to `/callChatGPT`, a missing trailing slash)
    with a relative `Location`: path and query only.

    Werkzeug builds them from the request's `Host` header, which is the
    client's to write (or X-Forwarded-Host's, behind a trusted proxy): a
    forged one would send the client, or a cache in between, elsewhere.
    Register after the request log, so that these answers are logged too.
    """

    @app.before_request
    def redirect_relatively() -> Response | None:
        redirect = request.routing_exception
        if not isinstance(redirect, RequestRedirect):
            return None
        target = urlsplit(redirect.new_url)
        # One leading slash: `//host/...` would be a URL of another host, relative or not.
        location = "/" + target.path.lstrip("/") + (f"?{target.query}" if target.query else "")
        return Response(status=redirect.code, headers={"Location": location})
