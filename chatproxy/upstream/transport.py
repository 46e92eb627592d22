"""The HTTP transport under the `openai` SDK's clients: sharded connection pools.

Used by `chatproxy.upstream.sdk` (the client when OPENAI_PROXY is set) for every
upstream server; kept apart because it is about connections and gevent, not
about what is asked. Without a proxy the lean client (`chatproxy.upstream.lean`)
keeps its own pools.
"""

from __future__ import annotations

import itertools
import select
import sys
import types

import httpcore2._utils
import httpx2

from chatproxy.config import Settings

# Idle connections kept for reuse per upstream server (the SDK's own default).
KEEPALIVE_CONNECTIONS = 100
# Connection pools per process. A pool walks all its connections whenever a
# request starts or ends; with 500 streams in one pool that walk was a fifth
# of the gateway's CPU.
POOL_SHARDS = 8


class PoolShards(httpx2.BaseTransport):
    """Spreads upstream requests round-robin over POOL_SHARDS connection pools.

    Each pool gets its share of CHATPROXY_MAX_CONNECTIONS and of the idle
    connections kept; all share one TLS context and OPENAI_PROXY.
    """

    def __init__(self, settings: Settings, shards: int = POOL_SHARDS) -> None:
        ssl_context = httpx2.create_ssl_context(trust_env=False)
        limits = httpx2.Limits(
            max_connections=-(-settings.max_connections // shards),
            max_keepalive_connections=-(-KEEPALIVE_CONNECTIONS // shards),
        )
        self._pools = [
            httpx2.HTTPTransport(
                verify=ssl_context, limits=limits, proxy=settings.openai_proxy, trust_env=False
            )
            for _ in range(shards)
        ]
        self._next_pool = itertools.cycle(self._pools).__next__

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send `request` through the next pool."""
        return self._next_pool().handle_request(request)

    def close(self) -> None:
        """Close every pool's connections."""
        for pool in self._pools:
            pool.close()


def use_real_poll_for_idle_checks() -> None:
    """Let httpcore2 check idle pooled connections with the real `select.poll`.

    Under gevent's monkey-patching, `select.poll` becomes a cooperative version
    that goes through the event loop; httpcore2 calls it with a zero timeout
    (it never blocks) for every idle connection whenever a request starts or
    ends, which made connection reuse cost more CPU than new connections.
    """
    monkey = sys.modules.get("gevent.monkey")  # imported by whoever patched
    if monkey is not None and monkey.is_module_patched("select"):
        httpcore2._utils.select = types.SimpleNamespace(  # type: ignore[assignment]
            poll=monkey.get_original("select", "poll"),
            select=monkey.get_original("select", "select"),
            POLLIN=select.POLLIN,
        )
