"""The LangGraph adapter's errors: refinements of the core errors, so a caller that handles
``VersionConflict`` or ``LeaseHeld`` handles these too. Imports nothing from LangGraph."""

from __future__ import annotations

import os
from typing import Any

from ...errors import LeaseHeld, VersionConflict


class CheckpointConflict(VersionConflict):
    """A checkpoint was refused because its parent is not the thread's head: another run moved
    the thread on since this run read it (the run that got this error wrote nothing further).

    Facts: ``thread_id``, ``checkpoint_ns``, ``expected`` (the parent this run built on),
    ``actual`` (the head now), ``checkpoint_id`` (the refused checkpoint), ``key`` (the head ref).
    """

    recover = ("re-run on the thread's current state (invoke again without a checkpoint_id), or run "
               "the graph through coherent_graph so concurrent runs on one thread wait or are refused "
               "up front")


class ThreadBusy(LeaseHeld):
    """Another run holds the thread: ``coherent_graph`` refused to start a second concurrent run.

    Facts: ``thread_id``, ``key`` (the thread lease), ``holder`` (the run that holds it: host, pid
    and run id), ``expires_at`` (backend clock, epoch seconds; renewed while that run is alive),
    ``acquired_at``.
    """

    recover = ("retry once the running invocation has finished, or use on_busy='wait' to queue "
               "behind it")


def require_coordinator(coordinator: Any, who: str) -> None:
    """Refuse what is not a Coordinator when wrapping, rather than with an AttributeError at the
    first put or node, far from the mistake."""
    from ...coordinator import Coordinator

    if not isinstance(coordinator, Coordinator):
        raise TypeError(f"{who} needs a Coordinator (Coordinator.open(root)), not {type(coordinator).__name__} "
                        f"{coordinator!r}")


def state_place(coordinator: Any) -> tuple[str, str] | None:
    """Where a coordinator's backend keeps its state, as far as can be told without asking it: the
    embedded database's file, or the PostgreSQL schema (None: a backend of another kind). One
    schema name on two servers cannot be told apart from the URLs, which may spell one server
    several ways, so it compares equal."""
    backend = coordinator.backend
    path, schema = getattr(backend, "path", None), getattr(backend, "schema", None)
    if backend.name == "sqlite" and isinstance(path, str):
        return ("sqlite", os.path.realpath(path))
    if backend.name == "postgresql" and isinstance(schema, str):
        return ("postgresql", schema)
    return None


def place_text(place: tuple[str, str]) -> str:
    return f"database {place[1]}" if place[0] == "sqlite" else f"PostgreSQL schema {place[1]!r}"


__all__ = ["CheckpointConflict", "ThreadBusy"]
