"""Which upstream server the current request asked last: the request log names it.

A context variable, so each request (a thread, or a greenlet under gevent)
sees its own; set by `Upstream._send` before each server is tried, so after
a failover it names the server that answered, after a failure the last one
that failed.
"""

from __future__ import annotations

from contextvars import ContextVar

_asked: ContextVar[str | None] = ContextVar("chatproxy_upstream_asked", default=None)


def note_asked(name: str) -> None:
    """Record that the current request is asking the upstream server `name`."""
    _asked.set(name)


def last_asked() -> str | None:
    """The name of the upstream server the current request asked last, or None."""
    return _asked.get()


def forget_asked() -> None:
    """A new request begins (a kept-alive connection serves several in one greenlet)."""
    _asked.set(None)
