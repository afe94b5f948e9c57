"""Graphs and history checks shared by the LangGraph adapter tests (plain Python nodes, no LLM).

The runs tag their input (``{"log": [name]}``), so a thread's head state says whose work it holds:
``[..., "A", "step1", "step2"]`` is run A's complete work.
"""

from __future__ import annotations

import operator
import sqlite3
import time
from typing import Annotated, Any, Callable, TypedDict

from langgraph.graph import END, START, StateGraph


class LogState(TypedDict):
    log: Annotated[list, operator.add]


def step_node(name: str, delay: float) -> Any:
    def node(state: LogState) -> dict[str, list[str]]:
        time.sleep(delay)
        return {"log": [name]}

    node.__name__ = name
    return node


def one_node_builder(name: str, node: Callable[..., Any], **options: Any) -> StateGraph:
    """START -> ``name`` -> END (``options`` go to ``add_node``, e.g. ``retry_policy``)."""
    builder = StateGraph(LogState)
    builder.add_node(name, node, **options)
    builder.add_edge(START, name)
    builder.add_edge(name, END)
    return builder


def two_step_builder(delay: float = 0.3) -> StateGraph:
    """START -> step1 -> step2 -> END, each step sleeping ``delay`` seconds."""
    builder = StateGraph(LogState)
    builder.add_node("step1", step_node("step1", delay))
    builder.add_node("step2", step_node("step2", delay))
    builder.add_edge(START, "step1")
    builder.add_edge("step1", "step2")
    builder.add_edge("step2", END)
    return builder


def run_work(name: str) -> list[str]:
    """What one complete run tagged ``name`` appends to the log."""
    return [name, "step1", "step2"]


class History:
    """The checkpoints of one thread (root namespace) as SqliteSaver stored them."""

    def __init__(self, db_path: str, thread_id: str) -> None:
        conn = sqlite3.connect(db_path)
        try:
            self.edges = conn.execute(
                "SELECT checkpoint_id, parent_checkpoint_id FROM checkpoints "
                "WHERE thread_id = ? AND checkpoint_ns = ''", (thread_id,)).fetchall()
        finally:
            conn.close()

    @property
    def ids(self) -> set[str]:
        return {cid for cid, _ in self.edges}

    @property
    def leaves(self) -> set[str]:
        parents = {parent for _, parent in self.edges if parent}
        return self.ids - parents

    @property
    def forked_parents(self) -> list[str]:
        """Checkpoints with more than one child: each one is a fork of the history."""
        children: dict[str, int] = {}
        for _, parent in self.edges:
            if parent:
                children[parent] = children.get(parent, 0) + 1
        return sorted(parent for parent, count in children.items() if count > 1)

    @property
    def roots(self) -> list[str]:
        return sorted(cid for cid, parent in self.edges if not parent)

    def is_one_chain(self) -> bool:
        return len(self.leaves) == 1 and not self.forked_parents and len(self.roots) == 1


def contains_run(log: list[Any], name: str) -> bool:
    """Whether ``log`` holds run ``name``'s complete work, in order."""
    work = run_work(name)
    return any(log[i:i + len(work)] == work for i in range(len(log)))
