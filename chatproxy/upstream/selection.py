"""Which upstream servers to ask for one request, in which turn, and how each has been doing.

A request goes to the servers that serve its model (`ModelRoutes`, from the
`models` and `aliases` of CHATPROXY_UPSTREAMS' entries; every server when no
entry names models), first one first (or drawn by weight, with
CHATPROXY_UPSTREAM_ORDER=weight), those set aside last. A server that failed
CHATPROXY_UPSTREAM_FAILURES requests in a row that another then answered is
set aside for CHATPROXY_UPSTREAM_COOLDOWN seconds, for all its models. The
counts are per process.

Each server gets the body as it takes it (`body_for`): an alias replaced by
the server's own name for the model, `stream_options` left out for a server
that refuses it.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from chatproxy.config import Settings
from chatproxy.errors import NotFound
from chatproxy.upstream_targets import UpstreamTarget

log = logging.getLogger(__name__)


@dataclass
class Server:
    """One upstream server as this process sees it: its client and how it has been doing.

    `sender` is its HTTP client (`client.Sender`: the lean one or the SDK).
    """

    target: UpstreamTarget
    sender: Any
    failures: int = 0  # failed requests in a row
    set_aside_until: float = 0.0  # time.monotonic() when it may be asked again


class Selection:
    """The process's upstream servers, and the ones to ask for a request, in turn."""

    def __init__(self, servers: list[Server], settings: Settings) -> None:
        self.servers = servers
        self.settings = settings
        routes = settings.routes
        # None while every server serves every model: nothing is looked up per request.
        self._routes = routes if routes is not None and routes.names_models else None
        self._by_model: dict[tuple[int, ...], list[Server]] = {}

    def serving(self, model: str | None) -> list[Server]:
        """The servers that serve `model` (all of them for None), in the order configured.

        Raises NotFound (404 `model_not_found`, OpenAI's shape) when none does.
        """
        routes = self._routes
        if routes is None or model is None:
            return self.servers
        indexes = routes.targets_for(model)
        found = self._by_model.get(indexes)
        if found is None:
            found = self._by_model[indexes] = [self.servers[i] for i in indexes]
        if not found:
            raise NotFound(
                f"The model {model!r} does not exist or is not available here.",
                param="model",
                code="model_not_found",
            )
        return found

    def in_turn(self, servers: list[Server]) -> list[Server]:
        """`servers` in the turn to ask them for one request: by order or drawn by weight,
        those set aside last (the one whose rest ends first, first)."""
        if len(servers) == 1:
            return servers
        if self.settings.upstream_order == "weight":
            # Weighted sampling without replacement (Efraimidis and Spirakis).
            servers = sorted(
                servers, key=lambda s: random.random() ** (1 / s.target.weight), reverse=True
            )
        now = time.monotonic()
        ready = [server for server in servers if server.set_aside_until <= now]
        resting = [server for server in servers if server.set_aside_until > now]
        return ready + sorted(resting, key=lambda server: server.set_aside_until)

    def answered(self, server: Server, failed: list[Server]) -> None:
        """`server` answered after the `failed` ones did not: they count a failure each."""
        for other in failed:
            self._failed(other)
        server.failures, server.set_aside_until = 0, 0.0

    def _failed(self, server: Server) -> None:
        """Count a failure of `server` where another answered; set it aside after
        CHATPROXY_UPSTREAM_FAILURES in a row."""
        server.failures += 1
        if server.failures < self.settings.upstream_failures:
            return
        now = time.monotonic()
        if server.set_aside_until <= now:
            cooldown = self.settings.upstream_cooldown
            log.warning(
                "upstream %s set aside for %g s after %d failures in a row",
                server.target.name,
                cooldown,
                server.failures,
            )
            server.set_aside_until = now + cooldown


def body_for(body: dict[str, Any], target: UpstreamTarget) -> dict[str, Any]:
    """`body` as `target` takes it: its own name for an alias of the model, no
    `stream_options` when it refuses them; `body` itself when nothing changes."""
    if target.stream_options and not target.aliases:
        return body
    model = body.get("model")
    if isinstance(model, str) and (name := target.upstream_model(model)) != model:
        body = {**body, "model": name}
    if not target.stream_options and "stream_options" in body:
        body = {key: value for key, value in body.items() if key != "stream_options"}
    return body
