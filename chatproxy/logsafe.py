"""Text bound for a log line, with the characters that could forge or hide a line escaped.

A request's path comes from the client: `%0D%0A` in it decodes to a line break,
which written as it is would start a log line of the client's making; other
control characters (NUL, ESC for terminal colours, DEL, the C1 range) and
Unicode's line and paragraph separators are as bad to read. Each becomes
`\\xNN` (`\\u2028`, `\\u2029`), and a backslash becomes `\\\\`, so an escape in
the log cannot be mistaken for one the client typed: as CPython's http.server
and werkzeug's development server write their request lines.
"""

from __future__ import annotations

import threading
import time

_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES.update({ord("\\"): "\\\\", 0x2028: "\\u2028", 0x2029: "\\u2029"})
_TABLE = str.maketrans(_ESCAPES)


def escape_controls(text: str) -> str:
    """`text` with control characters, line separators and backslashes escaped (see above)."""
    if text.isprintable() and "\\" not in text:
        return text  # the usual case, without building a new string
    return text.translate(_TABLE)


class Throttle:
    """Whether a warning may be logged now: each one (by its words) at most once per `seconds`.

    For failures that every request meets while they last (a database or Redis
    away): one line a minute says so, where one per request would bury the log.
    At most 100 different words are remembered; then all are forgotten.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._said_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def allows(self, words: str) -> bool:
        """True when `words` were not allowed within the last `seconds` (and now are)."""
        now = time.monotonic()
        with self._lock:
            if now - self._said_at.get(words, -self.seconds) < self.seconds:
                return False
            if len(self._said_at) >= 100:
                self._said_at.clear()
            self._said_at[words] = now
            return True
