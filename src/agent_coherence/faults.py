"""Fault injection seam for tests: make a named step of a write fail or pause.

Steps named by the write path (``STEPS``): ``intent``, ``open_temp``, ``write``, ``fsync``,
``rename``, ``fsync_dir``, ``commit``, ``read_back``; and by the adapters: ``langgraph.effect``
(between a node's confirmed write and the record of its receipt). Production code calls :func:`check` before
each step; with no fault planned this is one dict lookup. An unknown step or errno name is refused
(ValueError), in code and in the environment alike, so a typo cannot make a fault test pass
without testing anything.

In-process::

    with faults.inject("fsync", errno.EIO):
        coord.write(...)          # raises DurabilityError(step="fsync")

Across processes, set ``AGENT_COHERENCE_FAULTS`` before the process starts, e.g.
``"rename:EIO"``, ``"write:ENOSPC"``, ``"commit:sleep=0.05"`` (several separated by commas); a
malformed plan makes ``import agent_coherence.faults`` (and so every write path) raise.
"""

from __future__ import annotations

import errno as _errno
import os
import time
from contextlib import contextmanager
from typing import Callable, Iterator

STEPS = ("intent", "open_temp", "write", "fsync", "rename", "fsync_dir", "commit", "read_back",
         "langgraph.effect")
ENV = "AGENT_COHERENCE_FAULTS"

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


def _known_step(step: str) -> str:
    if step not in STEPS:
        raise ValueError(f"unknown fault step {step!r}; the steps are: {', '.join(STEPS)}")
    return step


@contextmanager
def inject(step: str, error: int | Callable[[str], None]) -> Iterator[None]:
    """Plan a fault for ``step`` while the block runs: an errno to raise, or a callable."""
    _known_step(step)
    if isinstance(error, bool) or not (callable(error) or isinstance(error, int)):
        raise TypeError(f"a fault is an errno (int) or a callable, not {type(error).__name__}")
    if isinstance(error, int) and error not in _errno.errorcode:
        raise ValueError(f"unknown errno {error}")
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


def parse(spec: str) -> dict[str, _Action]:
    """The plan a ``AGENT_COHERENCE_FAULTS`` value describes. Raises ValueError on any item that
    is not ``<step>:<ERRNO name>`` or ``<step>:sleep=<seconds>``."""
    plan: dict[str, _Action] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        step, _, what = item.partition(":")
        where = f"{ENV} item {item!r}"
        if step not in STEPS:
            raise ValueError(f"{where}: unknown step {step!r}; the steps are: {', '.join(STEPS)}")
        if what.startswith("sleep="):
            try:
                seconds = float(what[len("sleep="):])
            except ValueError:
                raise ValueError(f"{where}: sleep= needs a number of seconds") from None
            if not seconds >= 0:
                raise ValueError(f"{where}: sleep= needs a number of seconds, 0 or more")
            plan[step] = _sleep(seconds)
        elif what.isupper() and isinstance(getattr(_errno, what, None), int):
            plan[step] = _raise_errno(getattr(_errno, what))
        else:
            raise ValueError(f"{where}: {what!r} is neither an errno name (EIO, ENOSPC, ...) nor sleep=<seconds>")
    return plan


_plan.update(parse(os.environ.get(ENV, "")))
