"""The order of a confirmed write's durable steps.

The version commit does not flush; the write's durability rests on the intent being flushed before
anything visible changes on disk (the flush mode), or on the temp file carrying its stamp (the
stamp mode, see docs/concepts.md). These tests pin that order down: at the rename (and at a delete's
unlink) the intent is already synced, and a commit that never happens is rolled forward by
recovery to exactly the version the receipt would have named.
"""

from __future__ import annotations

import os
import sqlite3

import pytest

from agent_coherence import Coordinator, faults, stamps
from agent_coherence.backends import default_database


def _intent_rows(root: str) -> list[tuple]:
    with sqlite3.connect(default_database(root)) as conn:
        return conn.execute("SELECT key, synced FROM intents").fetchall()


def test_the_intent_is_durable_before_the_rename(coord: Coordinator) -> None:
    """The flush mode (no user xattrs): the intent is flushed before the rename."""
    coord.write_mode = "flush"
    seen: list[list[tuple]] = []
    with faults.inject("rename", lambda step: seen.append(_intent_rows(coord.root))):
        coord.write("plan.md", b"v1", holder="planner")
    assert seen == [[("plan.md", 1)]]
    assert _intent_rows(coord.root) == []


def test_the_temp_file_is_stamped_before_the_rename(coord: Coordinator) -> None:
    """The stamp mode: the intent is not flushed; the file being renamed carries its stamp."""
    if stamps.mode(coord.root) != "stamp":
        pytest.skip("no user xattrs here")
    seen: list[tuple] = []

    def at_rename(step: str) -> None:
        intent = coord.backend.get_intent("plan.md")
        assert intent is not None
        temp = os.path.join(coord.root, os.path.basename(intent.temp_path))
        stamp = stamps.decode(os.getxattr(temp, stamps.ATTRIBUTE))
        seen.append((_intent_rows(coord.root), stamp and (stamp.intent_id, stamp.version)))
        seen.append((intent.intent_id, intent.new_version))

    with faults.inject("rename", at_rename):
        coord.write("plan.md", b"v1", holder="planner")
    (rows, stamped), expected = seen
    assert rows == [("plan.md", 0)] and stamped == expected


def test_the_intent_is_durable_before_a_delete(coord: Coordinator, monkeypatch: pytest.MonkeyPatch) -> None:
    coord.write("plan.md", b"v1", holder="planner")
    seen: list[list[tuple]] = []
    real_unlink = os.unlink

    def spying_unlink(path: str, *args: object, **kwargs: object) -> None:
        if path.endswith("plan.md"):
            seen.append(_intent_rows(coord.root))
        real_unlink(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "unlink", spying_unlink)
    coord.delete("plan.md", holder="planner")
    assert seen == [[("plan.md", 1)]]


def test_a_commit_that_never_happened_rolls_forward_to_the_same_version(root: str) -> None:
    """Stand-in for a power loss after the rename: the process dies before its commit."""
    coord = Coordinator.open(root)
    coord.write("plan.md", b"v1", holder="planner")
    coord.close()
    pid = os.fork()
    if pid == 0:  # the child writes v2 and dies at the commit, after the rename
        child = Coordinator.open(root)
        with faults.inject("commit", lambda step: os._exit(0)):
            child.write("plan.md", b"v2", holder="planner")
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    reopened = Coordinator.open(root)
    snapshot = reopened.read("plan.md")
    assert (snapshot.data, snapshot.version, snapshot.foreign_edit) == (b"v2", 2, False)
    assert reopened.journal.count(kind="recover.forward") == 1
