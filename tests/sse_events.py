"""Reading SSE responses in tests: events as they arrive, with their arrival times."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx2


@dataclass
class Event:
    """One SSE event as it arrived: its name, its JSON data, and `time.monotonic()` then."""

    name: str
    data: Any
    at: float


class EventReader:
    """Turns the lines of an SSE stream into Events as they arrive (chatproxy.web.sse's format)."""

    def __init__(self) -> None:
        self.name = "message"

    def feed(self, line: str) -> Event | None:
        """The event a `data:` line completes, else None."""
        if line.startswith("event:"):
            self.name = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            return Event(self.name, json.loads(line.removeprefix("data:")), time.monotonic())
        elif not line:
            self.name = "message"
        return None


def read_events(response: httpx2.Response) -> list[Event]:
    """The events of an SSE response, each stamped with its arrival time."""
    reader = EventReader()
    return [event for line in response.iter_lines() if (event := reader.feed(line))]
