"""A progress line for long work in the command line tools.

Shown on stderr only when it is a terminal, and only once the work has run for ``delay``
seconds, so short runs, pipes and logs stay quiet; rewritten in place (carriage return) at most
every ``interval`` seconds, and cleared when the work ends.
"""

from __future__ import annotations

import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, TextIO


class Progress:
    """``update(done)`` as the work goes, ``close()`` at the end (or use it as a context manager)."""

    def __init__(self, what: str, total: int | None = None, *, stream: "TextIO | None" = None,
                 delay: float = 1.0, interval: float = 0.2, clock: "Callable[[], float]" = time.monotonic) -> None:
        self.what = what
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.delay = delay
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self._shown_at: float | None = None
        self._width = 0
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(isatty and isatty())

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if now - self.started < self.delay:
            return
        if self._shown_at is not None and now - self._shown_at < self.interval:
            return
        self._shown_at = now
        if self.total:
            text = f"{self.what}: {done}/{self.total} ({100 * done // self.total}%)"
        else:
            text = f"{self.what}: {done}"
        self._width = max(self._width, len(text))
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()

    def close(self) -> None:
        """Erase the line, if one was shown."""
        if self._shown_at is not None:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._shown_at = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
