"""KeyboardInterrupt at every point one can land inside an operation (see interrupt_points.py):
after each, the state is consistent and the next operation goes through at once.

A real SIGINT lands at one of these points at random (tests/test_interrupts.py sends real ones);
here each point is tried in turn. For a write: the interrupt comes out as itself, no intent and no
temp file stay, the record agrees with the bytes on disk, and no lease taken for the write is left.
Before this, an interrupt landing after ``begin_write`` returned but before the write's undo
handler was entered (hashing the old bytes, say) left the intent: every writer of the key was then
refused ("still in flight") for the interrupted process's lifetime.

Not checked: a file descriptor may leak when the interrupt lands right after ``os.open`` returned
(the descriptor is lost with the result), as with any Python code that opens files.
"""

from __future__ import annotations

from typing import Any

import pytest

from agent_coherence import Coordinator

from channel_scan import ScanReference
from pg_channel_scan import PostgresScanReference
from conftest import temp_files
from interrupt_points import Landed, interrupt_points

pytestmark = pytest.mark.contract  # the write path above the backend must hold on each

KEY = "notes/plan.md"
OLD = b"the committed plan\n"
NEW = b"the next plan\n" * 40


def assert_write_left_consistent(coord: Coordinator, root, key: str, landed: Landed,
                                 own_leases: int = 0) -> None:
    assert landed.came_out_as_itself, landed
    assert coord.backend.get_intent(key) is None, landed
    assert not temp_files(root), landed
    assert len(coord.leases()) == own_leases, landed
    path = root / key
    snapshot = coord.read(key)
    assert not snapshot.foreign_edit, landed
    info = coord.version(key)
    on_disk = path.read_bytes() if path.exists() else None
    assert (info.version if info else 0) == snapshot.version, landed
    assert on_disk in (OLD, NEW, None), landed


def counts(stats: dict[str, Any]) -> dict[str, Any]:
    """Channel figures without the ages (taken a moment apart, they differ)."""
    if isinstance(stats, dict):
        return {k: counts(v) for k, v in stats.items() if not k.endswith("_age")}
    return stats


def test_an_interrupted_overwrite_is_undone_or_complete_at_every_point(quiet_coord, root):
    coord = quiet_coord
    coord.write(KEY, OLD, holder="h")
    points = 0
    for landed in interrupt_points(lambda: coord.write(KEY, NEW, holder="h")):
        points += 1
        assert_write_left_consistent(coord, root, KEY, landed)
        assert coord.write(KEY, OLD, holder="h").version >= 2  # the key is free at once
    assert points > 100  # the engine reached the whole write
    coord.journal.verify()


def test_an_interrupted_first_write_leaves_no_file_or_a_whole_one_at_every_point(quiet_coord, root):
    coord = quiet_coord
    keys = iter(f"new/{n}/plan.md" for n in range(100_000))
    current = [""]

    def first_write() -> None:
        current[0] = next(keys)
        coord.write(current[0], NEW, holder="h")

    for landed in interrupt_points(first_write):
        assert_write_left_consistent(coord, root, current[0], landed)
        coord.write(current[0], NEW, holder="h")
    coord.journal.verify()


def test_an_interrupted_delete_keeps_the_file_or_removes_it_at_every_point(quiet_coord, root):
    coord = quiet_coord
    coord.write(KEY, OLD, holder="h")
    for landed in interrupt_points(lambda: coord.delete(KEY, holder="h")):
        assert_write_left_consistent(coord, root, KEY, landed)
        if not (root / KEY).exists():
            coord.write(KEY, OLD, holder="h")
    coord.journal.verify()


def test_an_interrupted_write_under_a_lease_keeps_the_lease_at_every_point(quiet_coord, root):
    coord = quiet_coord
    coord.write(KEY, OLD, holder="h")
    lease = coord.acquire(KEY, "h", ttl=600)
    for landed in interrupt_points(lambda: coord.write(KEY, NEW, lease=lease)):
        assert_write_left_consistent(coord, root, KEY, landed, own_leases=1)
        coord.write(KEY, OLD, lease=lease)
    coord.journal.verify()


def test_an_interrupted_acquire_or_release_leaves_one_lease_or_none_at_every_point(quiet_coord):
    coord = quiet_coord

    def acquire_and_release() -> None:
        coord.release(coord.acquire(KEY, "h", ttl=600))

    for landed in interrupt_points(acquire_and_release):
        assert landed.came_out_as_itself, landed
        held = coord.leases()
        assert [lease.holder for lease in held] in ([], ["h"]), landed
        for lease in held:  # a grant whose result was lost: held by "h" until its ttl
            coord.release(lease)
        acquire_and_release()
    coord.journal.verify()


@pytest.mark.parametrize("durability", ["fast", "durable"])
def test_an_interrupted_round_trip_keeps_the_channel_figures_right_at_every_point(quiet_coord, durability):
    coord = quiet_coord
    channel = coord.channel("tasks", durability=durability, visibility_timeout=600)
    scan = PostgresScanReference if coord.backend.name == "postgresql" else ScanReference
    reference = scan(coord.backend)

    def round_trip() -> None:
        channel.send({"task": "next"})
        delivery = channel.receive("worker")
        assert delivery is not None
        channel.ack(delivery)

    sent = 0
    for landed in interrupt_points(round_trip):
        assert landed.came_out_as_itself, landed
        assert counts(coord.backend.channel_stats("tasks")) == counts(reference.channel_stats("tasks")), landed
        sent += 1
        round_trip()  # the channel works at once
    assert sent > 20


def test_interrupted_batch_operations_keep_the_channel_figures_right_at_every_point(quiet_coord):
    coord = quiet_coord
    channel = coord.channel("batch", durability="durable", visibility_timeout=600, max_attempts=2)
    scan = PostgresScanReference if coord.backend.name == "postgresql" else ScanReference
    reference = scan(coord.backend)

    def batch_trip() -> None:  # send_many is run before each, uninterrupted (send: above)
        deliveries = channel.receive_many("worker", max_messages=2)
        assert len(deliveries) == 2
        channel.ack_many(deliveries[:1])
        channel.nack(deliveries[1])  # attempt 1 of 2: back to ready

    def figures(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        return counts(coord.backend.channel_stats(name)), counts(reference.channel_stats(name))

    channel.send_many([{"n": 1}, {"n": 2}])
    points = 0
    for landed in interrupt_points(batch_trip):
        points += 1
        assert landed.came_out_as_itself, landed
        for name in ("batch", "batch.dead"):
            mine, scanned = figures(name)
            assert mine == scanned, (landed, name)
        while deliveries := channel.receive_many("worker", max_messages=10):  # drain: the channel works
            channel.ack_many(deliveries)
        channel.send_many([{"n": 1}, {"n": 2}])
        batch_trip()
        channel.ack_many(channel.receive_many("worker", max_messages=10))
        channel.send_many([{"n": 1}, {"n": 2}])  # for the next run
    assert points > 50
