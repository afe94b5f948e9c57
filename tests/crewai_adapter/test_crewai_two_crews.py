"""Two crews in two processes doing read-then-write changes to one file.

Both read before either writes (a barrier after the first read makes the race certain). With the
stock FileReadTool/FileWriterTool both write the same next value and an increment is lost. With the
coherent read and write tools the later write is refused (the file changed since it was read), the
model reads again and redoes it: the final count is exact.

The same holds when the file does not exist yet: two crews that both saw it absent and then create
it do not replace each other's file; the later one is refused, reads the first's and adds to it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from agent_coherence import Coordinator
from conftest import FORK

from .conftest import after_fork_in_child, run_children, tool_results

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ROUNDS = 4


def count_up(root: str, holder: str, coherent: bool, barrier: Any, rounds: int) -> None:
    """A crew whose model reads the counter, writes counter + 1, and repeats ``rounds`` times."""
    after_fork_in_child()
    from crewai_tools import FileReadTool, FileWriterTool

    from agent_coherence.adapters.crewai import CoherentFileReadTool, CoherentFileWriterTool
    from agent_coherence.adapters.crewai.scripted import ScriptedLLM, run_crew

    coord = Coordinator.open(root) if coherent else None
    if coord is not None:
        tools: list[Any] = [CoherentFileReadTool(coordinator=coord, holder=holder),
                            CoherentFileWriterTool(coordinator=coord, holder=holder)]
    else:
        tools = [FileReadTool(base_dir=root), FileWriterTool(base_dir=root)]
    state = {"asked": "", "done": 0, "first_read": True}

    def read() -> Any:
        state["asked"] = "read"
        return [("read_a_files_content", {"file_path": "counter.txt"})]

    def script(messages: list[dict[str, Any]]) -> Any:
        results = tool_results(messages)
        if not results:
            return read()
        last = results[-1]
        if state["asked"] == "read":
            value = int(last.split("\n", 1)[0])
            extra = {}
            if "version " in last:
                extra["expected_version"] = int(last.split("this is version ", 1)[1].split(" ", 1)[0])
            if state["first_read"]:
                state["first_read"] = False
                barrier.wait(timeout=20)  # both have read before either writes
            state["asked"] = "write"
            return [("file_writer_tool", {"filename": "counter.txt", "content": str(value + 1),
                                          "overwrite": True, **extra})]
        if last.startswith("Content successfully written"):
            state["done"] += 1
            if state["done"] == rounds:
                return "done"
        return read()  # after a success, or a refused write: read again

    run_crew(ScriptedLLM(script), tools, role=holder)
    if coord is not None:
        coord.close()
    os._exit(0 if state["done"] == rounds else 3)


def race(root: Path, coherent: bool) -> int:
    barrier = FORK.Barrier(2)
    children = [FORK.Process(target=count_up, args=(str(root), f"crewai:crew-{i}", coherent, barrier, ROUNDS))
                for i in range(2)]
    assert run_children(children) == [0] * len(children)
    return int((root / "counter.txt").read_text())


def test_stock_tools_lose_an_increment(work: Path) -> None:
    root = work / "root"
    (root / "counter.txt").write_text("0")
    final = race(root, coherent=False)
    assert final < 2 * ROUNDS, final  # both wrote 1 after reading 0: at least one increment lost


@pytest.mark.contract  # the coordination also runs on PostgreSQL
def test_coherent_tools_lose_nothing(work: Path) -> None:
    root = work / "root"
    with Coordinator.open(root) as coord:
        coord.write("counter.txt", b"0", holder="setup")
    final = race(root, coherent=True)
    assert final == 2 * ROUNDS
    with Coordinator.open(root) as coord:
        writes = [e for e in coord.journal.history("counter.txt") if e.kind == "write"]
        assert len(writes) == 1 + 2 * ROUNDS  # the setup write, then one version per increment
        refused = coord.journal.count("conflict.view") + coord.journal.count("conflict.version")
        assert refused >= 1  # the race was real: a write based on a stale read was refused
        coord.journal.verify()


def add_section(root: str, holder: str, barrier: Any) -> None:
    """A crew whose model reads report.md (absent at first), adds its own section and writes it
    back, reading again after a refused write."""
    after_fork_in_child()
    from agent_coherence.adapters.crewai import CoherentFileReadTool, CoherentFileWriterTool
    from agent_coherence.adapters.crewai.scripted import ScriptedLLM, run_crew

    coord = Coordinator.open(root)
    tools = [CoherentFileReadTool(coordinator=coord, holder=holder),
             CoherentFileWriterTool(coordinator=coord, holder=holder)]
    state = {"asked": "read", "first_read": True, "done": False}

    def script(messages: list[dict[str, Any]]) -> Any:
        results = tool_results(messages)
        if not results or state["asked"] == "wrote" and not results[-1].startswith("Content successfully"):
            state["asked"] = "read"
            return [("read_a_files_content", {"file_path": "report.md"})]
        last = results[-1]
        if state["asked"] == "read":
            body = "" if "does not exist" in last else last.rpartition("\n[agent-coherence:")[0]
            if state["first_read"]:
                state["first_read"] = False
                barrier.wait(timeout=20)  # both saw the file absent before either creates it
            state["asked"] = "wrote"
            return [("file_writer_tool", {"filename": "report.md", "content": f"{body}## {holder}\n",
                                          "overwrite": True})]
        state["done"] = True
        return "done"

    run_crew(ScriptedLLM(script), tools, role=holder)
    coord.close()
    os._exit(0 if state["done"] else 3)


def test_two_crews_creating_one_file_keep_both_sections(work: Path) -> None:
    root = work / "root"
    Coordinator.open(root).close()
    barrier = FORK.Barrier(2)
    holders = [f"crewai:crew-{i}" for i in range(2)]
    children = [FORK.Process(target=add_section, args=(str(root), holder, barrier)) for holder in holders]
    assert run_children(children) == [0, 0]
    sections = (root / "report.md").read_text().splitlines()
    assert sorted(sections) == [f"## {holder}" for holder in holders]  # the later creator read the first's
    with Coordinator.open(root) as coord:
        assert coord.journal.count("conflict.view") == 1
