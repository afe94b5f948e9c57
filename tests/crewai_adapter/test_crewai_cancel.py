"""A cancelled async tool call (``arun``, the task awaiting it cancelled, as ``asyncio.timeout``
does) while a step of it still runs in a worker thread, which cannot be stopped: what the step
takes is given back after the step, never beside it, and a step that writes has ended when the
``CancelledError`` comes out, so the leases and the recorded versions are consistent.

A clean-up run beside the step misses what the step takes later: a ``coherent_tool`` call
cancelled while its thread waits for a file's lease lets the cancellation out, the thread then
gets the lease, starts renewing it, and nobody ever releases it: every later call on the file is
refused ``LeaseHeld`` for as long as the process lives. And a ``CoherentFileWriterTool`` call
cancelled mid-write comes out with the write still in flight (its intent pending, the lease held)
and its outcome still open.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent_coherence import Coordinator, faults
from conftest import wait_for_offloaded_steps

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def async_writer(root: Path, started: threading.Event | None = None) -> Any:
    from crewai.tools import tool

    @tool("Async Writer")
    async def write_file(path: str, content: str) -> str:
        """Write a file asynchronously."""
        (root / path).write_text(content)
        if started is not None:
            started.set()
            await asyncio.sleep(30)  # cancelled here
        return "written"

    return write_file


def test_a_call_cancelled_while_waiting_for_the_lease_leaves_no_lease(work: Path, wcoord: Coordinator) -> None:
    from agent_coherence.adapters.crewai import coherent_tool

    root = work / "root"
    waiting = coherent_tool(async_writer(root), wcoord, base_dir=str(root), holder="crewai:a", lease_wait=5)

    async def cancel_while_waiting() -> None:
        other = wcoord.acquire("b.txt", "another-writer", ttl=60)
        task = asyncio.ensure_future(waiting.arun(path="b.txt", content="y"))
        await asyncio.sleep(0.3)  # the call's thread waits for the lease
        task.cancel()
        await asyncio.sleep(0.2)  # a clean-up that does not wait for the thread has run by now
        wcoord.release(other)  # the thread gets the lease
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_while_waiting())
    wait_for_offloaded_steps()  # a thread left running would hold the lease by now
    assert wcoord.leases() == []
    assert not (root / "b.txt").exists() and wcoord.version("b.txt") is None  # the tool never ran
    prompt = coherent_tool(async_writer(root), wcoord, base_dir=str(root), holder="crewai:a", lease_wait=0)
    assert asyncio.run(prompt.arun(path="b.txt", content="y")) == "written"  # not LeaseHeld
    assert wcoord.version("b.txt").version == 1 and wcoord.leases() == []  # type: ignore[union-attr]


def test_a_call_cancelled_inside_the_tool_records_what_it_wrote_and_gives_the_lease_back(
        work: Path, wcoord: Coordinator) -> None:
    from agent_coherence.adapters.crewai import coherent_tool

    root = work / "root"
    started = threading.Event()
    wrapped = coherent_tool(async_writer(root, started), wcoord, base_dir=str(root), holder="crewai:a")

    async def cancel_inside() -> None:
        task = asyncio.ensure_future(wrapped.arun(path="c.txt", content="half"))
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert wcoord.leases() == []

    asyncio.run(cancel_inside())
    info = wcoord.version("c.txt")
    assert info is not None and info.version == 1  # the bytes it left on disk, recorded
    assert wcoord.read("c.txt").data == b"half" and not wcoord.read("c.txt").foreign_edit


def test_a_file_writer_call_cancelled_mid_write_has_ended_when_the_cancellation_comes_out(
        work: Path, wcoord: Coordinator) -> None:
    from agent_coherence.adapters.crewai import CoherentFileWriterTool

    root = work / "root"
    writer = CoherentFileWriterTool(coordinator=wcoord, base_dir=str(root), holder="crewai:w")
    committing = threading.Event()

    def slow_commit(step: str) -> None:
        committing.set()
        time.sleep(0.5)

    async def cancel_mid_write() -> None:
        task = asyncio.ensure_future(writer.arun(filename="d.txt", content="the report", overwrite=True))
        await asyncio.to_thread(committing.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert wcoord.backend.get_intent("d.txt") is None  # no write of the call still in flight
        assert wcoord.leases() == []

    with faults.inject("commit", slow_commit):
        asyncio.run(cancel_mid_write())
    info = wcoord.version("d.txt")
    assert info is not None and info.version == 1 and (root / "d.txt").read_text() == "the report"
    assert "successfully" in writer.run(filename="d.txt", content="again", overwrite=True)
