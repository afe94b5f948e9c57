"""Run one call on a helper thread while the caller does other I/O.

A confirmed write needs two independent flushes before its rename: the temp file's fsync and the
database's (making the write's intent durable). Each costs a device cache flush; issued one after
the other they add up, issued together the device serves them at once. ``Overlap.start`` hands the
database call to a daemon thread (the GIL is released during both fsync and SQLite's commit) and
returns a handle the caller waits on before it renames.

One daemon thread per process, created on first use and again after ``fork``.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any, Callable


class Pending:
    """The result of a call running on the helper thread."""

    __slots__ = ("_done", "_error", "_result")

    def __init__(self) -> None:
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._result: Any = None

    def _finish(self, result: Any, error: BaseException | None) -> None:
        self._result, self._error = result, error
        self._done.set()

    def wait(self) -> Any:
        """Block until the call finished; return its result or raise its exception."""
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result


class Overlap:
    """A single helper thread that runs calls handed to it, one at a time, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = -1
        self._requests: queue.SimpleQueue[tuple[Callable[[], Any], Pending]] | None = None

    def start(self, call: Callable[[], Any]) -> Pending:
        pending = Pending()
        self._queue().put((call, pending))
        return pending

    def _queue(self) -> "queue.SimpleQueue[tuple[Callable[[], Any], Pending]]":
        with self._lock:
            if self._requests is None or self._pid != os.getpid():
                self._requests = queue.SimpleQueue()
                self._pid = os.getpid()
                threading.Thread(target=self._serve, args=(self._requests,), name="agent-coherence-sync",
                                 daemon=True).start()
            return self._requests

    @staticmethod
    def _serve(requests: "queue.SimpleQueue[tuple[Callable[[], Any], Pending]]") -> None:
        while True:
            call, pending = requests.get()
            try:
                pending._finish(call(), None)
            except BaseException as error:  # handed to the waiting caller, never lost
                pending._finish(None, error)
