"""An interrupt at every point CPython can deliver one inside a call into the package.

CPython runs a signal handler (and so raises KeyboardInterrupt) only at its checks: on entry to a
function, and when a call has just returned, before the caller uses the result. A real SIGINT
lands at one of those points at random; :func:`interrupt_points` lands one at each of them in
turn, deterministically, through ``sys.setprofile``:

- before each call the package makes (the call does not happen), and
- after each call returned (its effect happened, its result is lost),

for calls made from the package's own frames. The interpreter's calls of a ``with`` block's
``__enter__`` and ``__exit__`` are left out: no check separates them from the block (CPython's
window there is not the package's to close).

Only the thread that runs the action is interrupted, as a signal only interrupts the main thread.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Iterator

import agent_coherence

PACKAGE = os.path.dirname(agent_coherence.__file__)
_CALL_EVENTS = {"call", "c_call", "return", "c_return"}


class Landed:
    """Where one interrupt landed, and what the action did with it."""

    def __init__(self, point: int) -> None:
        self.point = point
        self.where = ""
        self.raised: BaseException | None = None  # what came out of the action (None: it finished)

    @property
    def came_out_as_itself(self) -> bool:
        """The interrupt came out of the action unchanged, or CPython dropped it: one that lands
        in a garbage-collection or weakref callback run inside a package frame is printed
        ("Exception ignored in ...") and lost, as a real SIGINT there would be."""
        return self.raised is None or isinstance(self.raised, KeyboardInterrupt)

    def __repr__(self) -> str:
        return f"interrupt {self.point} at {self.where}: {type(self.raised).__name__}"


def _interrupt_at(point: int, landed: Landed) -> Callable[..., None]:
    seen = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal seen
        if event not in _CALL_EVENTS:
            return
        caller = frame.f_back if event in ("call", "return") else frame
        if caller is None or not caller.f_code.co_filename.startswith(PACKAGE):
            return
        name = getattr(arg, "__name__", "") if event.startswith("c_") else frame.f_code.co_name
        if (name == "__exit__" and event in ("call", "c_call")) or \
                (name == "__enter__" and event in ("return", "c_return")):
            return
        seen += 1
        if seen == point:
            sys.setprofile(None)
            where = os.path.relpath(caller.f_code.co_filename, PACKAGE)
            landed.where = f"{where}:{caller.f_lineno} in {caller.f_code.co_name}, {event} {name}"
            raise KeyboardInterrupt(f"interrupt point {point}")

    return profile


def interrupt_points(action: Callable[[], object], limit: int = 5000) -> Iterator[Landed]:
    """Run ``action`` once per interrupt point, interrupted there; yield where each interrupt
    landed and what came out. Stops after the first run that finishes without reaching its point
    (every point has been tried). The caller checks the state after each run (before the next)."""
    for point in range(1, limit + 1):
        landed = Landed(point)
        sys.setprofile(_interrupt_at(point, landed))
        try:
            action()
        except BaseException as error:  # noqa: B036 - what the action let out is the finding
            landed.raised = error
        finally:
            sys.setprofile(None)
        if landed.where == "":
            if landed.raised is not None:  # failed on its own, before reaching the point
                raise landed.raised
            return  # ran to the end: the previous run was at its last point
        yield landed
    raise AssertionError(f"more than {limit} interrupt points: raise the limit")
