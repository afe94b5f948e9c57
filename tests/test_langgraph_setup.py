"""What a user can get wrong setting the adapter up, and what they get: a graph compiled without a
checkpointer runs, a builder or a saver of the wrong kind is refused when wrapping, and a thread
whose history the inner saver no longer has (an InMemorySaver after a restart) starts afresh
instead of refusing every run."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph")

from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.store.memory import InMemoryStore  # noqa: E402

from agent_coherence import Coordinator  # noqa: E402
from agent_coherence.adapters.langgraph import (  # noqa: E402
    CoherentCheckpointer, CoherentStore, coherent_graph, coherent_node, current_node,
)
from conftest import FORK, schema_url  # noqa: E402
from lg_graphs import one_node_builder, step_node  # noqa: E402
from pg_server import drop_schema, fresh_schema  # noqa: E402

CONFIG: Any = {"configurable": {"thread_id": "t"}}


def test_a_graph_without_a_checkpointer_runs_through_coherent_graph(coord: Coordinator) -> None:
    # LangGraph's "sync" durability fails on a graph without a saver; the fenced default must not
    # be forced on one. Its runs still hold the thread and its hooked nodes still run.
    def hooked(state: Any) -> dict:
        current_node().write("out.txt", "x")
        return {"log": ["hooked"]}

    from agent_coherence.adapters.langgraph import coherent_nodes

    builder = coherent_nodes(one_node_builder("hooked", hooked), {"hooked": ["out.txt"]})
    app = coherent_graph(builder.compile(), coord)
    assert app.invoke({"log": []}, CONFIG) == {"log": ["hooked"]}
    assert asyncio.run(app.ainvoke({"log": []}, CONFIG)) == {"log": ["hooked"]}
    assert coord.read("out.txt").data == b"x"
    assert coord.backend.get_lease("langgraph:thread/t") is None


def test_what_is_not_a_graph_or_a_saver_is_refused_when_wrapping(coord: Coordinator) -> None:
    builder = one_node_builder("step", step_node("step", 0))
    with pytest.raises(TypeError, match="compile"):
        coherent_graph(builder, coord)
    with pytest.raises(TypeError, match="compiled LangGraph graph"):
        coherent_graph(object(), coord)
    with pytest.raises(ValueError, match="durability"):
        coherent_graph(builder.compile(checkpointer=InMemorySaver()), coord, durability="fast")
    with pytest.raises(TypeError, match="BaseCheckpointSaver"):
        CoherentCheckpointer(object(), coord)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="BaseStore"):
        CoherentStore(object(), coord)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="once"):
        CoherentStore(CoherentStore(InMemoryStore(), coord), coord)


def restarted_app(root: str, results: Any) -> None:
    """One run of an app that keeps its checkpoints in memory, in a process of its own."""
    try:
        with Coordinator.open(root) as coordinator:
            app = coherent_graph(one_node_builder("step", step_node("step", 0)).compile(checkpointer=InMemorySaver()),
                                 coordinator)
            results.put(app.invoke({"log": ["run"]}, CONFIG)["log"])
    except Exception as error:
        results.put(f"{type(error).__name__}: {error}")


def test_a_restarted_process_with_an_in_memory_saver_starts_the_thread_afresh(root: Path) -> None:
    # The coordinator's head outlives the InMemorySaver's history; kept, it refused every later
    # run of the thread (CheckpointConflict: builds on None).
    results = FORK.Queue()
    for _ in range(2):
        proc = FORK.Process(target=restarted_app, args=(str(root), results))
        proc.start()
        proc.join(60)
        assert proc.exitcode == 0
        assert results.get(timeout=5) == ["run", "step"]
    with Coordinator.open(root) as coordinator:
        kinds = [entry.kind for entry in coordinator.backend.journal_entries()]
    assert "langgraph.stale_head" in kinds


def test_a_head_the_inner_saver_lost_is_dropped_on_the_async_read_too(coord: Coordinator) -> None:
    first = InMemorySaver()
    app = coherent_graph(one_node_builder("step", step_node("step", 0)).compile(checkpointer=first), coord)
    app.invoke({"log": ["one"]}, CONFIG)
    first.delete_thread("t")  # around the wrapper: the head now names a checkpoint nobody has
    assert asyncio.run(app.ainvoke({"log": ["two"]}, CONFIG)) == {"log": ["two", "step"]}
    assert app.get_state(CONFIG).values == {"log": ["two", "step"]}


def test_a_head_a_put_moves_while_the_stale_one_is_found_is_kept(coord: Coordinator) -> None:
    # A put that moves the head between the read's look-ups and its drop stored its checkpoint
    # first (the inner put comes before the head's move): only the stale head may go.
    class RacingSaver(InMemorySaver):
        def get_tuple(self, config: Any) -> Any:
            saver.heads.reset("t", "", "moved", "test.head")  # another process's put, meanwhile
            return None

    saver = CoherentCheckpointer(RacingSaver(), coord)
    saver.heads.reset("t", "", "gone", "test.head")  # a head whose checkpoint nobody has
    assert saver.get_tuple(CONFIG) is None
    assert saver.heads.head("t") == "moved"


def test_a_checkpointer_on_another_coordinators_database_is_refused(coord: Coordinator, tmp_path: Path) -> None:
    # Its fence checks would look for the run's thread lease in the wrong database: every put was
    # refused as a lost lease ("expired"), with a hint to retry that could not help.
    builder = one_node_builder("step", step_node("step", 0))
    with Coordinator.open(tmp_path / "elsewhere") as other:
        with pytest.raises(ValueError, match="same coordinator"):
            coherent_graph(builder.compile(checkpointer=CoherentCheckpointer(InMemorySaver(), other)), coord)
    with Coordinator.open(coord.root) as same_database:
        app = coherent_graph(builder.compile(checkpointer=CoherentCheckpointer(InMemorySaver(), same_database)), coord)
        assert app.invoke({"log": []}, CONFIG) == {"log": ["step"]}


@pytest.mark.filterwarnings("ignore:`checkpoint_during` is deprecated")
def test_a_run_keeps_its_own_durability_choice_and_a_misspelt_one_is_refused(coord: Coordinator) -> None:
    # The fenced default was added beside the deprecated checkpoint_during, which LangGraph then
    # refused ("Cannot use both"); and a misspelt per-run mode ran unnoticed as "async".
    app = coherent_graph(one_node_builder("step", step_node("step", 0)).compile(checkpointer=InMemorySaver()), coord)
    assert app.invoke({"log": []}, CONFIG, checkpoint_during=True) == {"log": ["step"]}
    assert list(app.stream({"log": []}, CONFIG, checkpoint_during=False)) == [{"step": {"log": ["step"]}}]
    before = app.get_state(CONFIG).values
    with pytest.raises(ValueError, match="durability"):
        app.invoke({"log": []}, CONFIG, durability="Sync")
    with pytest.raises(ValueError, match="durability"):
        asyncio.run(app.ainvoke({"log": []}, CONFIG, durability="fast"))
    assert app.get_state(CONFIG).values == before
    assert coord.backend.get_lease("langgraph:thread/t") is None


def test_what_is_not_a_coordinator_is_refused_when_wrapping() -> None:
    # It failed with an AttributeError ('str' object has no attribute 'backend'), for the store
    # only at its first put, far from the mistake.
    compiled = one_node_builder("step", step_node("step", 0)).compile(checkpointer=InMemorySaver())
    for wrap in (lambda: CoherentCheckpointer(InMemorySaver(), ".agent-coherence"),  # type: ignore[arg-type]
                 lambda: CoherentStore(InMemoryStore(), ".agent-coherence"),  # type: ignore[arg-type]
                 lambda: coherent_graph(compiled, ".agent-coherence"),  # type: ignore[arg-type]
                 lambda: coherent_node(writes=["a"], coordinator=".agent-coherence")):  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"needs a Coordinator .*not str"):
            wrap()


@pytest.mark.parametrize("wait, error", [(-1, ValueError), (float("nan"), ValueError), ("5", TypeError)])
def test_a_wait_no_put_could_honour_is_refused_when_wrapping(coord: Coordinator, wait: Any, error: type) -> None:
    # It was accepted, and refused only at the first put, as a ValueError about "wait".
    for wrap, named in ((lambda: CoherentStore(InMemoryStore(), coord, lease_wait=wait), "lease_wait"),
                        (lambda: CoherentCheckpointer(InMemorySaver(), coord, put_lease_wait=wait), "put_lease_wait"),
                        (lambda: coherent_node(writes=["a"], coordinator=coord, lease_wait=wait), "lease_wait"),
                        (lambda: coherent_node(writes=["a"], coordinator=coord, ttl=wait), "ttl")):
        with pytest.raises(error, match=named):
            wrap()



def test_a_checkpointer_on_another_backend_or_schema_is_refused(coord: Coordinator, tmp_path: Path,
                                                                 pg_server: str, pg_url: str) -> None:
    # Only embedded databases were compared: a checkpointer on PostgreSQL under a graph on SQLite
    # (one AGENT_COHERENCE_URL missing), or on another schema, was accepted and every run then
    # failed with LeaseLost "expired", whose hint to retry could not help.
    builder = one_node_builder("step", step_node("step", 0))
    schema = fresh_schema()
    try:
        with Coordinator.open(tmp_path / "pg", url=pg_url) as on_pg, \
                Coordinator.open(tmp_path / "pg2", url=schema_url(pg_server, schema)) as on_other_schema:
            for saver_coordinator, graph_coordinator in [(on_pg, coord), (coord, on_pg), (on_other_schema, on_pg)]:
                checkpointer = CoherentCheckpointer(InMemorySaver(), saver_coordinator)
                with pytest.raises(ValueError, match="same coordinator"):
                    coherent_graph(builder.compile(checkpointer=checkpointer), graph_coordinator)
            with Coordinator.open(tmp_path / "pg3", url=pg_url) as same_schema:
                checkpointer = CoherentCheckpointer(InMemorySaver(), same_schema)
                app = coherent_graph(builder.compile(checkpointer=checkpointer), on_pg)
                assert app.invoke({"log": []}, CONFIG) == {"log": ["step"]}
    finally:
        drop_schema(pg_server, schema)


def test_a_node_given_a_coordinator_on_another_backend_is_refused(coord: Coordinator, tmp_path: Path,
                                                                  pg_url: str) -> None:
    # The node looked for the run's fence in its own coordinator's store: every run stopped at the
    # node with LeaseLost "expired", whose hint to acquire a new lease could not help.
    ran: list[str] = []

    def builder_with(node_coordinator: Coordinator) -> Any:
        @coherent_node(writes=["out.md"], coordinator=node_coordinator)
        def node(state: Any) -> dict:
            ran.append("body")
            current_node().write("out.md", "x")
            return {"log": ["node"]}

        return one_node_builder("node", node)

    with Coordinator.open(tmp_path / "pg", url=pg_url) as on_pg:
        app = coherent_graph(builder_with(on_pg).compile(checkpointer=InMemorySaver()), coord)
        with pytest.raises(ValueError, match="holds the thread"):
            app.invoke({"log": []}, CONFIG)
        assert ran == [] and coord.leases() == [] and on_pg.leases() == []
    with Coordinator.open(coord.root) as same_database:
        app = coherent_graph(builder_with(same_database).compile(checkpointer=InMemorySaver()), coord)
        assert app.invoke({"log": []}, CONFIG) == {"log": ["node"]}
        assert ran == ["body"]
