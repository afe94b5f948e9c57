"""Fault injection seam for tests: make a named step of a write fail or pause.

Steps named by the write path: ``intent``, ``open_temp``, ``write``, ``fsync``, ``rename``,
``fsync_dir``, ``commit``, ``read_back``. Production code calls :func:`check` before each step;
with no fault planned this is one dict lookup.

In-process::

    with faults.inject("fsync", errno.EIO):
        coord.write(...)          # raises DurabilityError(step="fsync")

Across processes, set ``AGENT_COHERENCE_FAULTS`` before the process starts, e.g.
``"rename:EIO"``, ``"write:ENOSPC"``, ``"commit:sleep=0.05"`` (several separated by commas).
"""

from __future__ import annotations

import errno as _errno
import os
import time
from contextlib import contextmanager
from typing import Callable, Iterator

_Action = Callable[[str], None]
_plan: dict[str, _Action] = {}


def _raise_errno(code: int) -> _Action:
    def act(step: str) -> None:
        raise OSError(code, f"{os.strerror(code)} (injected at {step})")

    return act


def _sleep(seconds: float) -> _Action:
    def act(step: str) -> None:
        time.sleep(seconds)

    return act


def check(step: str) -> None:
    """Run the fault planned for ``step``, if any."""
    action = _plan.get(step)
    if action is not None:
        action(step)


@contextmanager
def inject(step: str, error: int | Callable[[str], None]) -> Iterator[None]:
    """Plan a fault for ``step`` while the block runs: an errno to raise, or a callable."""
    action = _raise_errno(error) if isinstance(error, int) else error
    previous = _plan.get(step)
    _plan[step] = action
    try:
        yield
    finally:
        if previous is None:
            _plan.pop(step, None)
        else:
            _plan[step] = previous


def _load_from_env() -> None:
    spec = os.environ.get("AGENT_COHERENCE_FAULTS", "")
    for item in filter(None, (part.strip() for part in spec.split(","))):
        step, _, what = item.partition(":")
        if what.startswith("sleep="):
            _plan[step] = _sleep(float(what[len("sleep="):]))
        elif hasattr(_errno, what):
            _plan[step] = _raise_errno(getattr(_errno, what))


_load_from_env()
