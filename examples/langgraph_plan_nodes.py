"""A planner and three workers share ``plan.md``: plain LangGraph nodes beside node hooks.

The planner writes the plan; three workers run in parallel (one superstep) and each checks off its
item and appends a line to the plan's log. The first attempt of every worker fails after its write,
the way a dropped connection would, and ``RetryPolicy`` runs it again. Plain Python nodes, no model.

Stock nodes: the parallel read-modify-writes overwrite each other (items stay unchecked, lines go
missing, the file can even end up with pieces of two writes) and every retry writes again. With ``coherent_node(writes=["plan.md"])`` each worker holds the
lease on plan.md while it runs and writes through the coordinator; the retried attempt gets the
first attempt's receipt back instead of writing again. Every item checked, every line once::

    python examples/langgraph_plan_nodes.py [--root DIR]

``run(base)`` returns the two plans, for ``examples/demo.py``.
"""

from __future__ import annotations

import argparse
import operator
import os
import sys
import tempfile
import time
from typing import Annotated, Any, Callable, TypedDict

ITEMS = ("gather sources", "draft answer", "review tone")
PLAN = "plan.md"


class Work(TypedDict):
    done: Annotated[list, operator.add]


def initial_plan() -> str:
    return "# Plan\n" + "".join(f"- [ ] {item}\n" for item in ITEMS) + "\n## Log\n"


def check_off(item: str) -> Callable[[bytes], bytes]:
    def change(old: bytes) -> bytes:
        time.sleep(0.05)  # the worker thinks between reading the plan and writing it back
        text = old.decode().replace(f"- [ ] {item}", f"- [x] {item}")
        return (text + f"- {item}: done\n").encode()
    return change


def build(hooked: bool, root: str, writes: list[str]) -> Any:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import RetryPolicy

    from agent_coherence import Coordinator
    from agent_coherence.adapters.langgraph import coherent_graph, coherent_node, current_node

    path = os.path.join(root, PLAN)
    attempts: dict[str, int] = {}

    def planner(state: Work) -> dict[str, list[str]]:
        if hooked:
            current_node().write(PLAN, initial_plan())
        else:
            with open(path, "w") as handle:
                handle.write(initial_plan())
        return {"done": []}

    def worker(item: str) -> Callable[[Work], dict[str, list[str]]]:
        def node(state: Work) -> dict[str, list[str]]:
            if hooked:
                receipt = current_node().update(PLAN, check_off(item))
                if not current_node().replayed:
                    writes.append(f"{item} v{receipt.version}")
            else:
                writes.append(item)
                with open(path, "rb") as handle:
                    new = check_off(item)(handle.read())
                with open(path, "wb") as handle:
                    handle.write(new)
            attempts[item] = attempts.get(item, 0) + 1
            if attempts[item] == 1:
                raise ConnectionError("connection dropped after the write")  # RetryPolicy retries it
            return {"done": [item]}
        node.__name__ = "worker"
        return node

    def hook(fn: Callable[..., Any]) -> Callable[..., Any]:
        return coherent_node(writes=[PLAN])(fn) if hooked else fn

    graph = StateGraph(Work)
    graph.add_node("planner", hook(planner))
    retry = RetryPolicy(initial_interval=0.01, jitter=False)
    for n, item in enumerate(ITEMS):
        graph.add_node(f"worker{n}", hook(worker(item)), retry_policy=retry)
        graph.add_edge("planner", f"worker{n}")
        graph.add_edge(f"worker{n}", END)
    graph.add_edge(START, "planner")
    compiled = graph.compile(checkpointer=InMemorySaver())
    return coherent_graph(compiled, Coordinator.open(root)) if hooked else compiled


def run(base: str) -> dict[str, str]:
    plans = {}
    for label, hooked in (("stock nodes", False), ("coherent_node", True)):
        root = os.path.join(base, label.replace(" ", "-"))
        os.makedirs(root, exist_ok=True)
        writes: list[str] = []
        build(hooked, root, writes).invoke({"done": []}, {"configurable": {"thread_id": "report"}})
        with open(os.path.join(root, PLAN)) as handle:
            plans[label] = handle.read()
        text = plans[label]
        print(f"--- {label}: {text.count('- [x]')} of {len(ITEMS)} items checked, "
              f"{text.count(': done')} log lines, {len(writes)} worker writes for {len(ITEMS)} pieces of work")
        print(text.rstrip())
    return plans


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="work directory (default: a new temporary one)")
    options = parser.parse_args(argv)
    plans = run(options.root or tempfile.mkdtemp(prefix="langgraph-plan-"))
    fixed = plans["coherent_node"]
    ok = fixed.count("- [x]") == len(ITEMS) and all(fixed.count(f"- {item}: done") == 1 for item in ITEMS)
    print("\ncoherent_node: every item checked, every write once." if ok
          else "\ncoherent_node: UNEXPECTED plan, see above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
