"""Steps that async adapter code hands to a worker thread, safe against cancellation.

``asyncio.to_thread`` cannot stop its thread: when the awaiting task is cancelled, the
``CancelledError`` comes out at once while the step goes on in the thread. A clean-up run then (a
lease given back, an undo) races the step it is meant to follow: it gives back a lease the step
has not taken yet, or releases one the step is still writing under, and the step then finishes
with nobody left to clean up after it. :func:`in_thread` lets the cancellation out only once the
step has ended, so the clean-up sees the step's final effect.

Imports only asyncio: the adapters load it, ``import agent_coherence`` does not.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, TypeVar

T = TypeVar("T")


async def in_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a worker thread, with the caller's context (as
    ``asyncio.to_thread``). If the awaiting task is cancelled while the step runs, this waits for
    the step to end (through further cancellations too) and then raises the ``CancelledError``; the
    step's own result or error is dropped, as the caller is cancelled. A cancellation therefore
    takes as long as the step: for a step waiting for a lease, up to its ``wait``."""
    return await _offloaded(None, fn, args, kwargs)


async def in_thread_undone(undo: Callable[[T], object], fn: Callable[..., T], /, *args: Any,
                           **kwargs: Any) -> T:
    """:func:`in_thread` for a step whose result the caller must give back (a call holding
    leases): cancelled, once the step has returned, ``undo(result)`` runs in a thread too and is
    waited for before the ``CancelledError`` comes out (its own error is dropped with it)."""
    return await _offloaded(undo, fn, args, kwargs)


async def _offloaded(undo: Callable[[T], object] | None, fn: Callable[..., T], args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> T:
    step = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(step)
    except asyncio.CancelledError:
        await _ended(step)
        if undo is not None and not step.cancelled() and step.exception() is None:
            await _ended(asyncio.ensure_future(asyncio.to_thread(undo, step.result())))
        raise


async def _ended(step: asyncio.Future[Any]) -> None:
    """Wait until ``step`` is done, whatever cancels the waiting meanwhile."""
    while not step.done():
        try:
            await asyncio.wait((step,))
        except asyncio.CancelledError:
            continue  # still running in its thread: what follows must come after it
    if not step.cancelled():
        step.exception()  # retrieved: the caller is cancelled, the step's error goes nowhere
