"""Two FileWriterTool calls on one file in one model turn: CrewAI runs them in parallel threads.

Stock: both calls tell the model "Content successfully written" and one write is gone without a
trace (sometimes the file even mixes both writes' bytes). Coherent: the calls run one after the
other; the file always holds one complete payload; every success the model was told of is a
version in the journal; the later call either fails visibly or writes a newer version.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from agent_coherence import Coordinator

from .conftest import tool_results

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SUCCESS = "Content successfully written to plan.md"
FIRST, SECOND = "first " * 300, "second " * 400  # different sizes, so a torn file shows


def one_turn(tools: list[Any], calls: list[tuple[str, dict[str, Any]]]) -> tuple[list[str], Any]:
    """Run a crew whose model asks for ``calls`` in one turn; (what the model was told, output)."""
    from agent_coherence.adapters.crewai.scripted import ScriptedLLM, run_crew

    told: list[str] = []

    def script(messages: list[dict[str, Any]]) -> Any:
        results = tool_results(messages)
        if not results:
            return calls
        told.extend(results)
        return "done"

    output = run_crew(ScriptedLLM(script), tools)
    return told, output


def write(content: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    return ("file_writer_tool", {"filename": "plan.md", "content": content, "overwrite": True, **extra})


def test_stock_file_writer_loses_a_write_every_time(work: Path) -> None:
    from crewai_tools import FileWriterTool

    root = work / "root"
    trials, lost, torn = 20, 0, 0
    for _ in range(trials):
        (root / "plan.md").unlink(missing_ok=True)
        told, _ = one_turn([FileWriterTool(base_dir=str(root))], [write(FIRST), write(SECOND)])
        final = (root / "plan.md").read_text()
        assert told == [SUCCESS, SUCCESS]  # both calls reported success...
        lost += final in (FIRST, SECOND)   # ...but only one payload survived, and nothing says so
        torn += final not in (FIRST, SECOND)
    assert lost + torn == trials, (lost, torn)


@pytest.mark.contract  # the coordination also runs on PostgreSQL
def test_coherent_writer_serialises_and_records_every_success(work: Path, wcoord: Coordinator) -> None:
    from agent_coherence.adapters.crewai import CoherentFileWriterTool

    root = work / "root"
    tool = CoherentFileWriterTool(coordinator=wcoord, base_dir=str(root), holder="crewai:writer")
    payloads = {hashlib.sha256(p.encode()).hexdigest(): p for p in (FIRST, SECOND)}
    conflicts = both_written = 0
    for trial in range(50):
        current = wcoord.version("plan.md")
        base = current.version if current else 0
        # Half the trials base both writes on the version read: the later one must conflict.
        extra = {"expected_version": base} if trial % 2 and base else {}
        told, output = one_turn([tool], [write(FIRST, **extra), write(SECOND, **extra)])
        final = (root / "plan.md").read_text()
        assert final in (FIRST, SECOND), f"trial {trial}: torn file ({len(final)} bytes)"
        writes = [e for e in wcoord.journal.history("plan.md") if e.kind == "write" and e.data["version"] > base]
        assert len(writes) == told.count(SUCCESS), (trial, told)
        assert {payloads[e.data["sha256"]] for e in writes} <= {FIRST, SECOND}
        last = max(writes, key=lambda e: e.data["version"])
        assert payloads[last.data["sha256"]] == final  # the file holds the newest recorded version
        if len(writes) == 2:
            both_written += 1
            assert [e.data["version"] for e in writes] == [base + 1, base + 2]
        else:
            conflicts += 1
            assert len(writes) == 1 and extra, (trial, told)
            failure = [r for r in told if r != SUCCESS]
            assert len(failure) == 1 and "(code: VersionConflict)" in failure[0], told
            assert [f.failure.code for f in output.tool_failures] == ["VersionConflict"]
    assert conflicts == 25 and both_written == 25, (conflicts, both_written)


@pytest.mark.contract  # the coordination also runs on PostgreSQL
def test_a_wrapped_stock_writer_serialises_its_parallel_calls(work: Path, wcoord: Coordinator) -> None:
    from crewai_tools import FileWriterTool

    from agent_coherence.adapters.crewai import coherent_tool

    root = work / "root"
    tool = coherent_tool(FileWriterTool(base_dir=str(root)), wcoord, holder="crewai:writer")
    shas = {hashlib.sha256(p.encode()).hexdigest() for p in (FIRST, SECOND)}
    for trial in range(20):
        seq = wcoord.journal.count()
        told, _ = one_turn([tool], [write(FIRST if trial % 2 else SECOND), write(SECOND if trial % 2 else FIRST)])
        final = (root / "plan.md").read_text()
        assert told == [SUCCESS, SUCCESS] and final in (FIRST, SECOND), trial  # one whole payload
        recorded = [e for e in wcoord.journal.history("plan.md") if e.kind == "write.crewai" and e.seq > seq]
        assert {e.data["sha256"] for e in recorded} <= shas and recorded  # each write that changed it
        assert wcoord.version("plan.md").sha256 == hashlib.sha256(final.encode()).hexdigest()  # type: ignore[union-attr]
        assert wcoord.leases() == []
