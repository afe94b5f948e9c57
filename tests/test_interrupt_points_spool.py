"""KeyboardInterrupt at every point one can land inside a spool claim, release, ack and requeue
(see interrupt_points.py): after each, every message put is in exactly one place (pending in
``new/``, claimed in ``cur/`` by a claim its caller holds, or acked), nothing sits in ``cur/``
that no caller holds, and the next claim goes through at once.

Before the fix this found, an interrupt landing in ``Spool.claim`` after its rename into ``cur/``
returned (first point: the ``rename``'s return in ``claim``) left the message claimed by nobody:
in flight, and delivered to no one, until ``requeue_stale`` found it older than ``claim_timeout``
(five minutes by default).

And for ``materialize`` and ``consume_materialized``: no temp or claim file stays beside the slot,
its lock is free, the slot holds the message whole or not at all, and a retry goes through.
Without that handling, an interrupt landing in ``materialize`` between its temp file's creation and
the rename (first point: the return of ``os.open`` in ``write_temp``) leaves the temp file beside
the slot for good, and one landing after the rename leaves a retry refused ``SlotOccupied`` by its
own message; one landing in ``consume_materialized`` after its rename to the claim name (first
point: that ``rename``'s return) leaves the message in the hidden ``.ac-claim`` file, delivered to
no one.

Not checked: an interrupt landing in the caller's own code after ``claim`` returned loses the
claim as any crash does; ``requeue_stale`` brings it back after ``claim_timeout``.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import time
from pathlib import Path

import pytest

from agent_coherence.errors import SlotOccupied
from agent_coherence.spool import Claimed, Spool, consume_materialized, materialize

from interrupt_points import Landed, interrupt_points


def place_of_every_message(spool: Spool) -> tuple[list[str], list[str], list[str]]:
    """(pending, claimed, acked-and-kept) names."""
    pending = [name for generation in os.listdir(spool.new_dir)
               for name in os.listdir(os.path.join(spool.new_dir, generation))]
    claimed = [entry.split("~")[0] for entry in os.listdir(spool.cur_dir)]
    done = os.listdir(spool.done_dir) if os.path.isdir(spool.done_dir) else []
    return pending, claimed, done


def assert_each_message_in_one_place(spool: Spool, names: list[str], held: Claimed | None,
                                     landed: Landed) -> None:
    assert landed.came_out_as_itself, landed
    pending, claimed, done = place_of_every_message(spool)
    assert sorted(pending + claimed + done) == sorted(names), landed  # none lost, none twice
    held_here = held is not None and os.path.exists(held.path)
    assert len(claimed) == (1 if held_here else 0), landed  # in cur/: only a claim its caller holds
    assert os.listdir(spool.tmp_dir) == [], landed


def test_an_interrupted_claim_release_and_ack_leave_each_message_in_one_place_at_every_point(
        tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", batch_size=4)
    names = [spool.put(b"task\n") for _ in range(3)]
    held: list[Claimed | None] = [None]

    def claim_release_ack() -> None:
        held[0] = spool.claim("worker")  # the caller's hold on the claim lives outside the call
        assert held[0] is not None
        spool.release(held[0])
        held[0] = spool.claim("worker")
        assert held[0] is not None
        spool.ack(held[0], keep=True)
        held[0] = spool.claim("worker")
        assert held[0] is not None
        spool.ack(held[0])

    points = 0
    for landed in interrupt_points(claim_release_ack):
        points += 1
        kept = list(names)
        present = {name for place in place_of_every_message(spool) for name in place}
        if held[0] is not None and held[0].name not in present:
            kept.remove(held[0].name)  # acked without keep: gone, as the ack promised
        assert_each_message_in_one_place(spool, kept, held[0], landed)
        names[:] = kept
        if held[0] is not None and os.path.exists(held[0].path):
            spool.ack(held[0], keep=True)  # the claim its caller holds still acks
        held[0] = None
        names.append(spool.put(b"task\n"))  # and the spool goes on at once
        claimed = spool.claim("other")
        assert claimed is not None, landed
        spool.release(claimed)
        for name in os.listdir(spool.done_dir) if os.path.isdir(spool.done_dir) else []:
            os.unlink(os.path.join(spool.done_dir, name))  # acked: counted no more
            names.remove(name)
        while len(names) < 3:
            names.append(spool.put(b"task\n"))
    assert points > 30


def test_an_interrupted_requeue_returns_each_stale_claim_once_at_every_point(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", claim_timeout=60)
    names = [spool.put(b"task\n") for _ in range(3)]
    for _ in names:
        spool.claim("crashed")  # claims nobody will ack: stale an hour from now
    later = [time.time() + 3600]

    points = 0
    for landed in interrupt_points(lambda: spool.requeue_stale(now=later[0])):
        points += 1
        assert landed.came_out_as_itself, landed
        pending, claimed, done = place_of_every_message(spool)
        assert sorted(pending + claimed) == sorted(names) and not done, landed
        spool.requeue_stale(now=later[0])  # the rest go back at once
        assert spool.in_flight() == 0 and spool.depth() == len(names), landed
        while spool.claim("crashed") is not None:  # stale again for the next run
            pass
        later[0] = time.time() + 3600
    assert points > 5


# --- materialize / consume_materialized ----------------------------------------------------------

PAYLOAD = b"# the next task\n" * 20


def leftovers(directory: Path) -> list[str]:
    """Temp files of a materialize and claim files of a consume left beside the slot."""
    return [name for name in os.listdir(directory) if name.endswith((".ac-tmp", ".ac-claim"))]


def assert_slot_lock_free(slot: Path, landed: Landed) -> None:
    fd = os.open(slot.parent / f".{slot.name}.ac-lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pytest.fail(f"the slot's lock is still held after {landed}")
    finally:
        os.close(fd)


def test_an_interrupted_materialize_leaves_the_slot_whole_and_a_retry_goes_through_at_every_point(
        tmp_path: Path) -> None:
    slot = tmp_path / "inbox" / "next_task.md"
    slot.parent.mkdir()
    ids = (f"m-{n}" for n in itertools.count())
    current = [""]

    def materialize_next() -> None:
        current[0] = next(ids)
        materialize(PAYLOAD, slot, message_id=current[0])

    points = 0
    for landed in interrupt_points(materialize_next):
        points += 1
        assert landed.came_out_as_itself, landed
        assert leftovers(slot.parent) == [], landed
        assert_slot_lock_free(slot, landed)
        if slot.exists():  # the rename happened: the message is there, whole
            assert consume_materialized(slot) == (current[0], PAYLOAD), landed
            slot.write_bytes(PAYLOAD)  # consumed: back to a header-less file for the next run
        assert materialize(PAYLOAD, slot, message_id=current[0]) == str(slot), landed  # the retry
        assert materialize(PAYLOAD, slot, message_id=current[0]) == str(slot), landed  # and again
        assert consume_materialized(slot) == (current[0], PAYLOAD), landed
    assert points > 20


def test_a_retried_materialize_of_the_message_in_the_slot_is_confirmed_not_refused(tmp_path: Path) -> None:
    slot = tmp_path / "next_task.md"
    materialize(PAYLOAD, slot, message_id="m-1")
    assert materialize(PAYLOAD, slot, message_id="m-1") == str(slot)  # the same delivery again
    with pytest.raises(SlotOccupied) as refused:
        materialize(b"other bytes", slot, message_id="m-1")  # one id, other bytes: not the same one
    assert refused.value.existing_message_id == "m-1"
    with pytest.raises(SlotOccupied):
        materialize(PAYLOAD, slot, message_id="m-2")
    assert consume_materialized(slot) == ("m-1", PAYLOAD)


def test_an_interrupted_consume_leaves_the_message_in_the_slot_at_every_point(tmp_path: Path) -> None:
    slot = tmp_path / "next_task.md"
    ids = (f"m-{n}" for n in itertools.count())
    current = [next(ids)]
    got: list[tuple[str, bytes] | None] = [None]
    materialize(PAYLOAD, slot, message_id=current[0])

    def consume() -> None:
        got[0] = consume_materialized(slot)

    points = 0
    for landed in interrupt_points(consume):
        points += 1
        assert landed.came_out_as_itself, landed
        assert leftovers(slot.parent) == [], landed
        if got[0] is None:  # the caller did not get it: it is still in the slot, once
            assert consume_materialized(slot) == (current[0], PAYLOAD), landed  # the retry
        assert not slot.exists(), landed
        got[0] = None
        current[0] = next(ids)
        materialize(PAYLOAD, slot, message_id=current[0])
    assert points > 10
