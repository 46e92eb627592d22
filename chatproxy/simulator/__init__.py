"""The OpenAI-compatible simulator: a fake upstream for tests, the offline demo and benchmarks.

`server` serves the routes, `wire` writes OpenAI's shapes (JSON, SSE chunks,
error bodies) and `answers` makes up the answers. Run it with
`python -m chatproxy.simulator --port 8001`.
"""

from chatproxy.simulator.server import Simulator, main

__all__ = ["Simulator", "main"]
