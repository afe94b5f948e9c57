"""LangGraph adapter: one writer per thread, fenced checkpoints, node hooks, a version-checked store.

    from agent_coherence import Coordinator
    from agent_coherence.adapters.langgraph import coherent_graph

    coord = Coordinator.open(".")
    app = coherent_graph(builder.compile(checkpointer=saver), coord)   # saver: any BaseCheckpointSaver
    app.invoke(inputs, {"configurable": {"thread_id": "t1"}})           # a second concurrent run: ThreadBusy

Importing this package imports no LangGraph: each name below loads its module on first use
(the ``langgraph`` extra provides the framework). See docs/langgraph.md for
what is enforced, what is only detected, and the limits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...lazy import lazy_getattr

_EXPORTS = {
    "CoherentCheckpointer": "checkpointer",
    "coherent_graph": "graph",
    "CoherentGraph": "graph",
    "coherent_node": "nodes",
    "coherent_nodes": "nodes",
    "current_node": "nodes",
    "NodeHandle": "nodes",
    "CoherentStore": "store",
    "VersionedItem": "store",
    "VersionedSearchItem": "store",
    "CheckedPutOp": "store",
    "CheckpointConflict": "errors",
    "ThreadBusy": "errors",
    "thread_lease_key": "keys",
    "head_ref_name": "keys",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .checkpointer import CoherentCheckpointer
    from .errors import CheckpointConflict, ThreadBusy
    from .graph import CoherentGraph, coherent_graph
    from .keys import head_ref_name, thread_lease_key
    from .nodes import NodeHandle, coherent_node, coherent_nodes, current_node
    from .store import CheckedPutOp, CoherentStore, VersionedItem, VersionedSearchItem


__getattr__ = lazy_getattr(globals(), _EXPORTS)


def __dir__() -> list[str]:
    return __all__
