"""Steps that async adapter code hands to a worker thread, safe against cancellation.

``asyncio.to_thread`` cannot stop its thread: when the awaiting task is cancelled, the
``CancelledError`` comes out at once while the step goes on in the thread. A clean-up run then (a
lease given back, an undo) races the step it is meant to follow: it gives back a lease the step
has not taken yet, or releases one the step is still writing under, and the step then finishes
with nobody left to clean up after it. Two ways out, by the kind of step:

- :func:`in_thread`, for a step whose effect the caller's clean-up must come after (a write, a
  commit, a release): the cancellation comes out only once the step has ended.
- :func:`in_thread_undone`, for a step that takes something the caller would give back (leases),
  which may wait long for it: the cancellation comes out at once, and whatever the step gets is
  given back in its own thread as soon as it has it, whether or not the event loop still runs.
  Such a step runs in a thread of its own, not in the event loop's default executor: steps
  waiting for a lease would otherwise fill that pool (a few threads: cores + 4, at most 32), and
  the task holding the lease could not get a thread for the write and release they wait on.

Imports only asyncio, contextvars and threading: the adapters load it, ``import agent_coherence`` does not.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any, Callable, TypeVar

from ..logs import WARNING, log

T = TypeVar("T")
STEP_THREAD = "agent-coherence-step"  # the name of each thread ``in_thread_undone`` starts


async def in_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a worker thread, with the caller's context (as
    ``asyncio.to_thread``). If the awaiting task is cancelled while the step runs, this waits for
    the step to end (through further cancellations too) and then raises the ``CancelledError``; the
    step's own result or error is dropped, as the caller is cancelled."""
    step = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(step)
    except asyncio.CancelledError:
        while not step.done():
            try:
                await asyncio.wait((step,))
            except asyncio.CancelledError:
                continue  # still running in its thread: what follows must come after it
        if not step.cancelled():
            step.exception()  # retrieved: the caller is cancelled, the step's error goes nowhere
        raise


async def in_thread_undone(undo: Callable[[T], object], fn: Callable[..., T], /, *args: Any,
                           **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a worker thread, with the caller's context. If the awaiting
    task is cancelled first, the ``CancelledError`` comes out at once, and ``undo(result)`` runs
    once the step has returned: in the step's thread right after it, or (if it had returned
    already) in a thread of its own, before the ``CancelledError`` comes out. An error of the step
    or of ``undo`` then goes nowhere, as the caller is cancelled."""
    step = _Undoable(undo)
    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    threading.Thread(target=_run_into, args=(loop, future, step, context, fn, args, kwargs),
                     name=STEP_THREAD).start()  # joined at exit, as executor threads are
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        future.add_done_callback(_retrieve)
        if step.cancel():
            await in_thread(step.undo_result)
        raise


def _run_into(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], step: "_Undoable",
              context: contextvars.Context, fn: Callable[..., Any], args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> None:
    """Run ``step`` in this thread and hand its outcome to ``future`` on the loop's thread."""
    try:
        outcome: tuple[Any, BaseException | None] = (step.run(context, fn, args, kwargs), None)
    except BaseException as error:
        outcome = (None, error)

    def settle() -> None:
        if future.cancelled():
            return
        if outcome[1] is None:
            future.set_result(outcome[0])
        else:
            future.set_exception(outcome[1])

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:
        pass  # the loop is closed: its caller is gone, and ``step.run`` gave back what it took


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Take the outcome of a step whose caller was cancelled (else asyncio logs it as never
    retrieved): it has nobody to go to."""
    if not future.cancelled():
        future.exception()


class _Undoable:
    """One step of :func:`in_thread_undone`: who undoes its result (the step's thread, or the
    cancelled caller) is settled under a lock, so it is undone exactly once."""

    def __init__(self, undo: Callable[[Any], object]) -> None:
        self._undo = undo
        self._lock = threading.Lock()
        self._cancelled = False
        self._returned = False
        self._result: Any = None

    def run(self, context: contextvars.Context, fn: Callable[..., Any], args: tuple[Any, ...],
            kwargs: dict[str, Any]) -> Any:
        result = context.run(fn, *args, **kwargs)
        with self._lock:
            self._returned, self._result = True, result
            cancelled = self._cancelled
        if cancelled:  # the caller is gone: nobody else will give this back
            self.undo_result()
        return result

    def cancel(self) -> bool:
        """Mark the caller cancelled; True if the step returned already (the caller undoes)."""
        with self._lock:
            self._cancelled = True
            return self._returned

    def undo_result(self) -> None:
        try:
            self._undo(self._result)
        except Exception as error:  # the caller is cancelled: nobody to raise it to
            log("adapters", WARNING, "could not give back what a cancelled call's step took "
                "(its leases expire on their ttl): %s", error)
