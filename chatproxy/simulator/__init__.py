"""The OpenAI-compatible simulator: a fake upstream for tests, the offline demo and benchmarks.

`server` serves the routes, `wire` writes OpenAI's shapes (JSON, SSE chunks,
error bodies), `dialects` other servers' ways of saying things, `answers`
makes up the answers and `command` is the command line. Run it with
`python -m chatproxy.simulator --port 8001`.
"""

from chatproxy.simulator.command import main
from chatproxy.simulator.server import Simulator

__all__ = ["Simulator", "main"]
