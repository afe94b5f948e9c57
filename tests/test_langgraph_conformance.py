"""LangGraph's checkpointer conformance suite (its base capabilities, 58 tests) over
CoherentCheckpointer wrapping InMemorySaver and SqliteSaver, in its default configuration.

The suite is a library (``validate``), not a pytest plugin: each test runs it and asserts on the
report. ``strict_roots=True`` shows the clause the default relaxes: the two list tests that put
several parentless checkpoints on one thread fail under a strict head check.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest

pytest.importorskip("langgraph.checkpoint.conformance")

from langgraph.checkpoint.conformance import checkpointer_test, validate  # noqa: E402
from langgraph.checkpoint.conformance.report import ProgressCallbacks  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.checkpoint.sqlite import SqliteSaver  # noqa: E402

from agent_coherence import Coordinator  # noqa: E402
from agent_coherence.adapters.langgraph import CoherentCheckpointer  # noqa: E402


class Outcome:
    """What one ``validate`` run reported, test by test."""

    def __init__(self) -> None:
        self.results: list[tuple[str, str, bool, str | None]] = []
        self.report: Any = None

    def record(self, capability: str, test: str, passed: bool, error: str | None) -> None:
        self.results.append((capability, test, passed, error))

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r[2])

    @property
    def failed(self) -> list[str]:
        return sorted(r[1] for r in self.results if not r[2])


def run_suite(name: str, make: Callable[[], Any]) -> Outcome:
    @checkpointer_test(name=name)
    async def factory() -> AsyncIterator[Any]:
        yield make()

    outcome = Outcome()
    outcome.report = asyncio.run(validate(factory, progress=ProgressCallbacks(on_test_result=outcome.record)))
    return outcome


def test_conformance_over_in_memory_saver(coord: Coordinator) -> None:
    outcome = run_suite("Coherent(InMemorySaver)", lambda: CoherentCheckpointer(InMemorySaver(), coord))
    assert outcome.failed == [], outcome.results
    assert outcome.passed == 58
    assert outcome.report.passed_all_base()


def test_conformance_over_sqlite_saver(coord: Coordinator, tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "checkpoints.db", check_same_thread=False)
    try:
        outcome = run_suite("Coherent(SqliteSaver)", lambda: CoherentCheckpointer(SqliteSaver(conn), coord))
    finally:
        conn.close()
    assert outcome.failed == [], outcome.results
    assert outcome.passed == 58
    assert outcome.report.passed_all_base()


def test_strict_roots_fails_exactly_the_two_parentless_list_tests(coord: Coordinator) -> None:
    outcome = run_suite("Coherent(InMemorySaver, strict_roots)",
                        lambda: CoherentCheckpointer(InMemorySaver(), coord, strict_roots=True))
    assert outcome.failed == ["test_list_metadata_custom_keys", "test_list_metadata_filter_multiple_keys"]
    assert outcome.passed == 56
    assert not outcome.report.passed_all_base()
