"""How the simulator answers one request: its options, with the request's `[[sim: ...]]`
directive applied (the keys are listed in `chatproxy.simulator.server` and docs/simulator.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chatproxy.simulator import answers, dialects, reasoning, wire
from chatproxy.simulator.wire import ApiError

# Faults answered with an OpenAI error body, then those that break the connection or stream.
FAULTS = (
    *wire.ERROR_FAULTS,
    *dialects.CONTEXT_FAULTS,
    "hang",
    "reset",
    "reset_mid_stream",
    "malformed_chunk",
)
DIRECTIVE_KEYS = {"fault", "times", "chunks", "delay", "latency", "answer", "words", "dialect"}
DIRECTIVE_KEYS |= {"reasoning", "thought"}  # chatproxy.simulator.reasoning


@dataclass(frozen=True)
class Plan:
    """How to answer one request: the server's options with its directive applied."""

    latency: float
    chunks: int | None
    delay: float
    fault: str | None = None
    answer: str | None = None
    words: int | None = None
    dialect: str = "openai"
    reasoning: str | None = None  # a dialect of `chatproxy.simulator.reasoning`
    thought: int | None = None  # words of reasoning


def plan_for(found: dict[str, Any], default: Plan, fault: str | None) -> tuple[Plan, int]:
    """`default` with the directive's keys `found` applied, and its `times` (0: always);
    raises ApiError 400 for a key or value the simulator does not know."""
    bad = (
        set(found) - DIRECTIVE_KEYS
        or found.get("fault", FAULTS[0]) not in FAULTS
        or found.get("answer", answers.ANSWERS[0]) not in answers.ANSWERS
        or found.get("dialect", "openai") not in dialects.DIALECTS
        or found.get("reasoning", reasoning.DIALECTS[0]) not in reasoning.DIALECTS
    )
    try:
        # Bounded like any input: no answer of a million words or chunks.
        plan = Plan(
            latency=min(float(found.get("latency", default.latency)), 600),
            chunks=min(int(found["chunks"]), 10_000) if "chunks" in found else default.chunks,
            delay=min(float(found.get("delay", default.delay)), 60),
            fault=found.get("fault", fault),
            answer=found.get("answer"),
            words=min(int(found["words"]), 50_000) if "words" in found else None,
            dialect=found.get("dialect", "openai"),
            reasoning=found.get("reasoning"),
            thought=min(int(found["thought"]), 50_000) if "thought" in found else None,
        )
        times = int(found.get("times", 0))
    except ValueError:
        bad = True
    if bad:
        raise ApiError(400, f"Invalid simulator directive: {found}", param="messages")
    return plan, times
