"""Property: however the puts of several runs interleave, every checkpoint CoherentCheckpointer
accepts stays on the head's lineage (no silent fork), and every refused put wrote nothing.

Each simulated run reads the head, then puts a chain of checkpoints, each built on its last one;
the schedule (which run puts next, when a run re-reads) is drawn by hypothesis. A refused run
re-reads the head and carries on from there, as a caller retrying on CheckpointConflict would.
The same schedule on the stock saver shows the forks it would leave.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from hypothesis import given, settings, strategies as st
import pytest

pytest.importorskip("langgraph.checkpoint.memory")

from langgraph.checkpoint.base import empty_checkpoint  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402

from agent_coherence import Coordinator  # noqa: E402
from agent_coherence.adapters.langgraph import CheckpointConflict, CoherentCheckpointer  # noqa: E402

_ids = itertools.count(1)


def new_checkpoint() -> Any:
    checkpoint = empty_checkpoint()
    checkpoint["id"] = f"1f000000-0000-6000-8000-{next(_ids):012d}"  # increasing, like uuid6
    return checkpoint


def config(thread: str, parent: str | None) -> Any:
    configurable = {"thread_id": thread, "checkpoint_ns": ""}
    if parent is not None:
        configurable["checkpoint_id"] = parent
    return {"configurable": configurable}


def play(saver: object, thread: str, schedule: list[tuple[int, bool]], runs: int) -> tuple[set[str], int]:
    """Run the schedule: (run, re-read first?) per step. Returns the accepted ids and refusals."""
    read = getattr(saver, "get_tuple")
    put = getattr(saver, "put")
    seed = put(config(thread, None), new_checkpoint(), {"source": "input", "step": -1}, {})
    accepted = {seed["configurable"]["checkpoint_id"]}
    views: list[str | None] = [seed["configurable"]["checkpoint_id"]] * runs
    refused = 0
    for run, reread in schedule:
        if reread:
            found = read(config(thread, None))
            views[run] = found.config["configurable"]["checkpoint_id"] if found else None
        checkpoint = new_checkpoint()
        try:
            stored = put(config(thread, views[run]), checkpoint, {"source": "loop", "step": 1}, {})
        except CheckpointConflict:
            refused += 1
            found = read(config(thread, None))
            views[run] = found.config["configurable"]["checkpoint_id"] if found else None
            continue
        accepted.add(stored["configurable"]["checkpoint_id"])
        views[run] = stored["configurable"]["checkpoint_id"]
    return accepted, refused


def lineage(inner: InMemorySaver, thread: str, head: str) -> set[str]:
    chain: set[str] = set()
    current: str | None = head
    while current is not None:
        chain.add(current)
        found = inner.get_tuple(config(thread, current))
        assert found is not None
        current = found.parent_config["configurable"]["checkpoint_id"] if found.parent_config else None
    return chain


schedules = st.lists(st.tuples(st.integers(0, 2), st.booleans()), min_size=1, max_size=25)


@pytest.mark.contract  # the coordination also runs on PostgreSQL
@settings(max_examples=40, deadline=None)
@given(schedule=schedules)
def test_accepted_checkpoints_never_leave_the_head_lineage(tmp_path_factory: pytest.TempPathFactory,
                                                           schedule: list[tuple[int, bool]]) -> None:
    root: Path = tmp_path_factory.mktemp("heads")
    thread = root.name  # the examples share one PostgreSQL schema: each starts a thread of its own
    with Coordinator.open(root) as coord:
        inner = InMemorySaver()
        saver = CoherentCheckpointer(inner, coord)
        accepted, _ = play(saver, thread, schedule, runs=3)
        head = saver.get_tuple(config(thread, None))
        assert head is not None
        assert accepted <= lineage(inner, thread, head.config["configurable"]["checkpoint_id"])
        stored = {t.config["configurable"]["checkpoint_id"] for t in inner.list(config(thread, None))}
        assert stored == accepted  # a refused put wrote nothing to the inner saver


def test_the_stock_saver_forks_under_the_same_kind_of_schedule() -> None:
    inner = InMemorySaver()
    accepted, refused = play(inner, "t", [(0, False), (1, False), (0, False), (1, False)], runs=2)
    head = inner.get_tuple(config("t", None))
    assert head is not None and refused == 0
    lost = accepted - lineage(inner, "t", head.config["configurable"]["checkpoint_id"])
    assert len(lost) == 2  # run 0's two checkpoints are off the head: a silent fork
