"""Tests for the maildir-style spool and the single-file materialized delivery.

Multi-process tests use real processes (``fork``) and cross-check per-process result files with
exact counts. The naive baseline shows what happens to ``sorted(glob(...), key=getmtime)`` plus
read+unlink on a directory that is being drained, without the layer.
"""

from __future__ import annotations

import errno
import glob
import json
import multiprocessing
import os
import pathlib
import random
import shutil
import tempfile
import time

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agent_coherence import faults
from agent_coherence.durable import sha256_hex
from agent_coherence.errors import ChannelError, DurabilityError, PathOutsideRoot, StaleReceipt
from agent_coherence.spool import (
    Claimed,
    SlotOccupied,
    Spool,
    consume_materialized,
    materialize,
    new_name,
    parse_claim_name,
)

CTX = multiprocessing.get_context("fork")
WAIT = 120  # seconds: the most any barrier or join may wait before the test fails


def _generations(spool: Spool) -> list[str]:
    return sorted(os.listdir(spool.new_dir))


def _run(processes: list) -> None:
    for process in processes:
        process.start()
    for process in processes:
        process.join(WAIT)
    for process in processes:
        if process.is_alive():
            process.kill()
    assert [p.exitcode for p in processes] == [0] * len(processes)


def _dump(path: str, value: object) -> None:
    with open(path, "w") as handle:
        json.dump(value, handle)


def _load(path: str) -> object:
    with open(path) as handle:
        return json.load(handle)


# --- basic semantics ----------------------------------------------------------------------------


def test_put_claim_ack_in_put_order(tmp_path):
    spool = Spool(tmp_path / "q")
    names = [spool.put(b"m%d" % i) for i in range(5)]
    assert names == sorted(names) and len(set(names)) == 5
    assert spool.depth() == 5 and spool.in_flight() == 0

    first = spool.claim("agent-1")
    assert isinstance(first, Claimed)
    assert (first.name, first.data, first.consumer) == (names[0], b"m0", "agent-1")
    assert os.path.dirname(first.path) == spool.cur_dir
    name, generation, consumer, claimed_ns = parse_claim_name(os.path.basename(first.path))
    assert (name, generation, consumer) == (names[0], first.generation, "agent-1")
    assert abs(claimed_ns / 1e9 - time.time()) < 60 and first.claimed_at == claimed_ns / 1e9
    assert spool.depth() == 4 and spool.in_flight() == 1

    spool.ack(first)
    assert not os.path.exists(first.path) and spool.in_flight() == 0
    rest = [spool.claim("agent-1") for _ in range(4)]
    assert [c.data for c in rest] == [b"m1", b"m2", b"m3", b"m4"]
    assert spool.claim("agent-1") is None
    for claimed in rest:
        spool.ack(claimed)
    with pytest.raises(StaleReceipt):
        spool.ack(rest[0])  # acked twice


def test_two_instances_never_take_the_same_message(tmp_path):
    a, b = Spool(tmp_path / "q"), Spool(tmp_path / "q")
    names = {a.put(b"x%d" % i) for i in range(10)}
    taken = []
    while (claimed := (a if len(taken) % 2 else b).claim("c%d" % (len(taken) % 2))) is not None:
        taken.append(claimed.name)
    assert sorted(taken) == sorted(names)


def test_ack_keep_moves_to_done(tmp_path):
    spool = Spool(tmp_path / "q")
    spool.put(b"keep me", name="task-1")
    claimed = spool.claim("a")
    spool.ack(claimed, keep=True)
    with open(os.path.join(spool.done_dir, "task-1"), "rb") as handle:
        assert handle.read() == b"keep me"
    assert spool.in_flight() == 0 and spool.depth() == 0


def test_release_puts_the_message_back_under_its_name(tmp_path):
    spool = Spool(tmp_path / "q")
    name = spool.put(b"retry me")
    first = spool.claim("a")
    spool.release(first)
    assert spool.depth() == 1 and spool.in_flight() == 0
    second = Spool(tmp_path / "q").claim("b")
    assert (second.name, second.data, second.consumer) == (name, b"retry me", "b")
    with pytest.raises(StaleReceipt):
        spool.release(first)
    with pytest.raises(ChannelError):
        spool.ack(first)


def test_requeue_stale_returns_old_claims_and_stale_ack_raises(tmp_path):
    spool = Spool(tmp_path / "q", claim_timeout=30.0)
    old_name = spool.put(b"slow")
    spool.put(b"fast")
    slow = spool.claim("slow-agent")
    fast = spool.claim("fast-agent")
    assert spool.requeue_stale() == 0  # nothing is older than 30 s yet
    assert spool.requeue_stale(now=time.time() + 31) == 2
    assert spool.in_flight() == 0 and spool.depth() == 2
    assert spool.requeue_stale(now=time.time() + 31) == 0

    with pytest.raises(ChannelError) as info:
        spool.ack(slow)
    assert isinstance(info.value, StaleReceipt)
    assert info.value.message_id == old_name and "requeue_stale" in str(info.value)

    again = Spool(tmp_path / "q").claim("other")
    assert (again.name, again.data) == (old_name, b"slow")
    spool.ack(again)
    with pytest.raises(StaleReceipt):
        spool.ack(fast)


def test_a_claimed_file_placed_by_hand_with_a_tilde_in_its_name_is_counted_and_requeued(tmp_path):
    """claim() takes any file in new/ (a shell producer may mv one in): its claim in cur/ must
    parse back, or requeue_stale would leave it there for good after its consumer died."""
    spool = Spool(tmp_path / "q", claim_timeout=30.0)
    spool.put(b"first")
    generation = _generations(spool)[0]
    pathlib.Path(spool.new_dir, generation, "notes.md~").write_bytes(b"by hand")
    first = spool.claim("a")
    assert first.data == b"first"
    spool.ack(first)
    held = spool.claim("crashed-agent")
    assert (held.name, held.data) == ("notes.md~", b"by hand")
    assert spool.in_flight() == 1
    assert spool.requeue_stale(now=time.time() + 31) == 1
    assert (spool.in_flight(), spool.depth()) == (0, 1)
    again = spool.claim("b")
    assert (again.name, again.data) == ("notes.md~", b"by hand")
    spool.ack(again)


def test_a_file_placed_by_hand_whose_name_is_too_long_to_claim_does_not_block_the_others(tmp_path, caplog):
    spool = Spool(tmp_path / "q")
    generation = "0" * 12
    os.makedirs(os.path.join(spool.new_dir, generation))
    long_name = "0" + "x" * 240  # fits new/, but not with the claim's suffix in cur/
    pathlib.Path(spool.new_dir, generation, long_name).write_bytes(b"by hand")
    name = spool.put(b"queued")
    with caplog.at_level("WARNING", logger="agent_coherence.channels"):
        claimed = spool.claim("c")
        assert claimed.name == name
        assert spool.claim("c") is None
    spool.ack(claimed)
    assert any(long_name in record.getMessage() for record in caplog.records)
    assert (spool.depth(), spool.in_flight()) == (1, 0)  # left where it was, and counted there


@pytest.mark.parametrize("now, error", [("x", TypeError), (True, TypeError), (float("nan"), ValueError),
                                        (float("inf"), ValueError), (-1.0, ValueError)])
def test_requeue_stale_refuses_a_time_that_is_not_one_and_moves_nothing(tmp_path, now, error):
    spool = Spool(tmp_path / "q", claim_timeout=30.0)
    spool.put(b"held")
    spool.claim("agent")
    with pytest.raises(error, match="now must be"):
        spool.requeue_stale(now=now)
    assert spool.in_flight() == 1 and spool.depth() == 0


def test_vanished_candidates_are_skipped(tmp_path):
    spool = Spool(tmp_path / "q")
    names = [spool.put(b"%d" % i) for i in range(6)]
    assert spool.claim("a").name == names[0]  # the batch now holds names[1:]
    generation = _generations(spool)[0]
    for name in names[1:4]:
        os.unlink(os.path.join(spool.new_dir, generation, name))
    assert [spool.claim("a").name for _ in range(2)] == names[4:]
    assert spool.claim("a") is None


def test_names_and_consumers_are_validated(tmp_path):
    spool = Spool(tmp_path / "q")
    assert spool.put(b"one", name="job-42.v1") == "job-42.v1"
    with pytest.raises(ChannelError, match="already pending"):
        spool.put(b"two", name="job-42.v1")
    for bad in ("", "../x", "a/b", "a~b", ".hidden", "x" * 300, 7):
        with pytest.raises(ChannelError, match="invalid message name") as caught:
            spool.put(b"x", name=bad)
        assert caught.value.facts == {"setting": "name", "value": bad}  # as errors.py promises
    for bad in ("", "a~b", "a/b", "a b", None):
        with pytest.raises(ChannelError, match="invalid consumer") as caught:
            spool.claim(bad)
        assert caught.value.facts == {"setting": "consumer", "value": bad}
    assert spool.claim("ok").data == b"one"
    assert os.listdir(spool.tmp_dir) == []


@pytest.mark.parametrize("step", ["open_temp", "write", "fsync", "rename"])
def test_put_failure_raises_and_leaves_nothing(tmp_path, step):
    spool = Spool(tmp_path / "q")
    with faults.inject(step, errno.EIO), pytest.raises(DurabilityError) as info:
        spool.put(b"lost?")
    assert info.value.step == step and info.value.errno == errno.EIO
    assert spool.depth() == 0 and os.listdir(spool.tmp_dir) == []
    assert spool.claim("a") is None


def test_put_with_unconfirmed_directory_fsync_says_the_message_may_be_delivered(tmp_path):
    spool = Spool(tmp_path / "q")
    with faults.inject("fsync_dir", errno.EIO), pytest.raises(DurabilityError) as info:
        spool.put(b"maybe")
    assert info.value.step == "fsync_dir" and "may be delivered" in info.value.detail
    assert spool.claim("a").data == b"maybe"


def test_bad_settings_and_a_garbled_counter(tmp_path):
    for bad in ({"claim_timeout": 0}, {"rotate_every": 0}, {"batch_size": 0}):
        with pytest.raises(ChannelError):
            Spool(tmp_path / "bad", **bad)
    spool = Spool(tmp_path / "q", rotate_every=2)
    with open(os.path.join(spool.directory, "seq"), "w") as handle:
        handle.write("garbage, not a number")
    spool.put(b"a")
    spool.put(b"b")
    spool.put(b"c")
    assert _generations(spool) == ["000000000000", "000000000001"]
    with open(os.path.join(spool.directory, "seq")) as handle:
        assert handle.read() == "3"


class SpoolModel(RuleBasedStateMachine):
    """Two instances on one directory against a model: pending, claimed, and stale receipts."""

    def __init__(self):
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="spool-model-")
        make = lambda: Spool(self.directory, claim_timeout=60.0, rotate_every=3, batch_size=2)
        self.spools = [make(), make()]
        self.pending: dict[str, bytes] = {}
        self.claimed: list[Claimed] = []
        self.stale: list[Claimed] = []

    def teardown(self):
        shutil.rmtree(self.directory, ignore_errors=True)

    @rule(data=st.binary(max_size=20))
    def put(self, data):
        self.pending[self.spools[0].put(data)] = data

    @rule(which=st.integers(0, 1))
    def claim(self, which):
        item = self.spools[which].claim(f"c{which}")
        if not self.pending:
            assert item is None
            return
        assert item is not None and self.pending.pop(item.name) == item.data
        self.claimed.append(item)

    @precondition(lambda self: self.claimed)
    @rule(index=st.integers(0, 100), keep=st.booleans())
    def ack(self, index, keep):
        self.spools[index % 2].ack(self.claimed.pop(index % len(self.claimed)), keep=keep)

    @precondition(lambda self: self.claimed)
    @rule(index=st.integers(0, 100))
    def release(self, index):
        item = self.claimed.pop(index % len(self.claimed))
        self.spools[1].release(item)
        self.pending[item.name] = item.data
        self.stale.append(item)

    @rule()
    def requeue_everything(self):
        assert self.spools[1].requeue_stale(now=time.time() + 61) == len(self.claimed)
        self.pending.update((item.name, item.data) for item in self.claimed)
        self.stale += self.claimed
        self.claimed = []

    @precondition(lambda self: self.stale)
    @rule(index=st.integers(0, 100))
    def ack_stale(self, index):
        with pytest.raises(StaleReceipt):
            self.spools[0].ack(self.stale[index % len(self.stale)])

    @precondition(lambda self: self.pending)
    @rule(index=st.integers(0, 100))
    def delete_behind_the_back(self, index):
        name = sorted(self.pending)[index % len(self.pending)]
        (path,) = glob.glob(os.path.join(self.directory, "new", "*", name))
        os.unlink(path)
        del self.pending[name]

    @invariant()
    def counts_match(self):
        assert self.spools[0].depth() == len(self.pending)
        assert self.spools[1].in_flight() == len(self.claimed)


SpoolModel.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
test_spool_against_model = pytest.mark.slow(SpoolModel.TestCase)


# --- rotation -----------------------------------------------------------------------------------


def test_rotation_starts_new_generations_and_claimers_remove_drained_ones(tmp_path):
    spool = Spool(tmp_path / "q", rotate_every=3)
    names = [spool.put(b"%d" % i) for i in range(7)]
    assert _generations(spool) == ["000000000000", "000000000001", "000000000002"]
    sizes = [len(os.listdir(os.path.join(spool.new_dir, g))) for g in _generations(spool)]
    assert sizes == [3, 3, 1]

    claimed = []
    while (item := spool.claim("a")) is not None:
        claimed.append(item)
        spool.ack(item)
    assert [c.name for c in claimed] == names  # oldest generation first, put order within
    assert [c.generation for c in claimed] == ["000000000000"] * 3 + ["000000000001"] * 3 + [
        "000000000002"
    ]
    assert _generations(spool) == ["000000000002"]  # drained old ones removed, newest kept

    more = [spool.put(b"late%d" % i) for i in range(3)]  # 8th..10th puts: generations 2 and 3
    assert _generations(spool) == ["000000000002", "000000000003"]
    assert [spool.claim("a").name for _ in range(3)] == more


def test_put_recreates_a_generation_removed_while_empty(tmp_path):
    spool = Spool(tmp_path / "q", rotate_every=100)
    spool.put(b"first")
    spool.ack(spool.claim("a"))
    os.rmdir(os.path.join(spool.new_dir, "000000000000"))  # as a claimer would
    name = spool.put(b"second")
    released = spool.claim("a")
    os.rmdir(os.path.join(spool.new_dir, "000000000000"))
    spool.release(released)  # the generation is re-created for the returned message too
    assert (spool.claim("b").name, spool.depth()) == (name, 0)


# --- several processes --------------------------------------------------------------------------


def _requeue_worker(directory, barrier, out):
    spool = Spool(directory, claim_timeout=5.0)
    barrier.wait(WAIT)
    _dump(out, spool.requeue_stale(now=time.time() + 60))


def test_requeue_stale_from_several_processes_moves_each_claim_once(tmp_path):
    directory = str(tmp_path / "q")
    spool = Spool(directory, claim_timeout=5.0, rotate_every=500)
    source = _source_file(tmp_path, b"stale")
    for _ in range(2000):
        _bulk_put(spool, source)
    while spool.claim("dead-agent") is not None:
        pass
    assert spool.in_flight() == 2000
    barrier = CTX.Barrier(3)
    outs = [str(tmp_path / f"requeued-{i}.json") for i in range(3)]
    _run([CTX.Process(target=_requeue_worker, args=(directory, barrier, o)) for o in outs])
    counts = [_load(o) for o in outs]
    assert sum(counts) == 2000
    assert spool.in_flight() == 0 and spool.depth() == 2000


# Fast setup. Creating a file on this ext4 VM costs 45 us to over 1 ms (inode allocation slows
# down after mass deletions); a hard link costs ~35 us. So bulk messages are hard links to a pool
# of distinct source files: each one is still its own directory entry, claimed, read and unlinked
# on its own, which is all the spool ever deals with.


def _source_file(directory, data: bytes) -> str:
    path = os.path.join(str(directory), f"source-{sha256_hex(data)[:16]}")
    with open(path, "wb") as handle:
        handle.write(data)
    return path


def _bulk_put(spool: Spool, source: str) -> tuple[str, str]:
    """Test setup only: put() without fsyncs, a hard link to ``source`` written into tmp/."""
    name = new_name()
    temp = os.path.join(spool.tmp_dir, name)
    os.link(source, temp)
    return spool._deliver(temp, name, exclusive=False, sync=False), name


def _populate_worker(directory, sources, count, out):
    spool, loaded = Spool(directory), []
    for i in range(count):
        source = sources[i % len(sources)]
        generation, name = _bulk_put(spool, source)
        loaded.append([generation, name, source])
    _dump(out, loaded)


def _consumer_worker(directory, consumer, barrier, producer_done, out):
    spool = Spool(directory)
    claimed = []
    barrier.wait(WAIT)
    finished = False
    while True:
        item = spool.claim(consumer)
        if item is None:
            if finished:  # this empty claim started after the churn process had finished
                break
            finished = producer_done.is_set()
            if not finished:
                time.sleep(0.001)
            continue
        claimed.append([item.name, item.data.decode()])
        spool.ack(item)
    _dump(out, claimed)


def _churn_worker(directory, victims, barrier, producer_done, out):
    """Delete ``victims`` from new/ (behind the layer's back) while adding new messages."""
    spool = Spool(directory)
    deleted, missed, added = [], [], []
    barrier.wait(WAIT)
    started = time.perf_counter()
    for start in range(0, len(victims), 100):
        for generation, name in victims[start : start + 100]:
            try:
                os.unlink(os.path.join(spool.new_dir, generation, name))
                deleted.append(name)
            except FileNotFoundError:
                missed.append(name)  # already claimed
        for i in range(5):
            data = b"added:%d:%d" % (start, i)
            added.append([spool.put(data), data.decode()])
    producer_done.set()
    _dump(out, {"deleted": deleted, "missed": missed, "added": added,
                "seconds": time.perf_counter() - started})


@pytest.mark.slow
def test_acceptance_100k_four_consumers_with_concurrent_deletes_and_puts(tmp_path):
    total, consumers = 100_000, 4
    directory = str(tmp_path / "q")
    spool = Spool(directory)
    started = time.perf_counter()
    pool = tmp_path / "sources"
    pool.mkdir()
    sources = [_source_file(pool, b"payload %d" % i) for i in range(500)]
    content = {source: pathlib.Path(source).read_text() for source in sources}
    parts = [str(tmp_path / f"populated-{i}.json") for i in range(2)]  # 2 cores: 2 loaders
    loaders = [CTX.Process(target=_populate_worker, args=(directory, sources, total // 2, part))
               for part in parts]
    _run(loaders)
    loaded = [item for part in parts for item in _load(part)]
    pending = [(generation, name) for generation, name, _ in loaded]
    populated = time.perf_counter()
    assert spool.depth() == total and len(_generations(spool)) == 10

    victims = random.Random(7).sample(pending, 10_000)
    barrier, done = CTX.Barrier(consumers + 1), CTX.Event()
    outs = [str(tmp_path / f"consumer-{i}.json") for i in range(consumers)]
    churn_out = str(tmp_path / "churn.json")
    processes = [
        CTX.Process(target=_consumer_worker, args=(directory, f"c{i}", barrier, done, out))
        for i, out in enumerate(outs)
    ]
    churn_args = (directory, victims, barrier, done, churn_out)
    processes.append(CTX.Process(target=_churn_worker, args=churn_args))
    _run(processes)
    drained = time.perf_counter()

    churn = _load(churn_out)
    deleted, missed = set(churn["deleted"]), set(churn["missed"])
    expected = {name: content[source] for _, name, source in loaded if name not in deleted}
    expected.update(dict(churn["added"]))
    per_consumer = [_load(out) for out in outs]
    claimed = [name for result in per_consumer for name, _ in result]

    assert len(deleted) + len(missed) == 10_000 and deleted and len(churn["added"]) == 500
    assert len(claimed) == len(set(claimed)), "a message was claimed twice"
    assert len(claimed) == total - len(deleted) + 500
    assert set(claimed) == set(expected)  # every surviving and every added message, nothing else
    assert deleted.isdisjoint(claimed) and missed <= set(claimed)
    assert all(dict(result).items() <= expected.items() for result in per_consumer)
    assert all(len(result) > 0 for result in per_consumer)
    assert spool.depth() == 0 and spool.in_flight() == 0
    assert len(_generations(spool)) == 1
    print(
        f"\n100k spool: populate {populated - started:.1f}s, "
        f"4 consumers + churn {drained - populated:.1f}s (churn alone {churn['seconds']:.1f}s), "
        f"claims per consumer {[len(r) for r in per_consumer]}, deleted {len(deleted)}"
    )


# --- the naive baseline: the same kind of drain without the layer -------------------------------


def _naive_worker(directory, barrier, out):
    processed, errors = [], []
    barrier.wait(WAIT)
    for _ in range(1000):
        try:
            paths = sorted(glob.glob(os.path.join(directory, "*")), key=os.path.getmtime)
        except FileNotFoundError as exc:
            errors.append(f"sort: {exc}")  # the crash seen in production
            continue
        if not paths:
            break
        for path in paths:
            try:
                with open(path, "rb") as handle:
                    handle.read()
                processed.append(os.path.basename(path))
                os.unlink(path)
            except FileNotFoundError as exc:
                errors.append(f"process: {exc}")
                break  # naive code would have crashed here; relist instead
    _dump(out, {"processed": processed, "errors": errors})


def test_naive_glob_sort_drain_crashes_or_processes_twice(tmp_path):
    problems, source = [], _source_file(tmp_path, b"x")
    for attempt in range(3):  # bounded: in practice the first attempt always shows the race
        directory = tmp_path / f"naive-{attempt}"
        directory.mkdir()
        for i in range(5000):  # hard links: equal mtimes, but getmtime still stats every path
            os.link(source, directory / f"{i:06d}.msg")
        barrier = CTX.Barrier(2)
        outs = [str(tmp_path / f"naive-{attempt}-{i}.json") for i in range(2)]
        _run([CTX.Process(target=_naive_worker, args=(str(directory), barrier, o)) for o in outs])
        results = [_load(o) for o in outs]
        processed = [name for r in results for name in r["processed"]]
        errors = [e for r in results for e in r["errors"]]
        twice = len(processed) - len(set(processed))
        problems = errors + [f"{twice} files processed twice"] * bool(twice)
        if problems:
            break
    assert problems, "the naive drain showed neither a crash nor a double delivery"


# --- materialize: one delivery as one file -------------------------------------------------------


def test_materialize_writes_header_and_refuses_to_overwrite_unconsumed(tmp_path):
    path = str(tmp_path / "next_task.md")
    assert materialize(b"# Do the thing\n", path, message_id="msg-1") == path
    with open(path, "rb") as handle:
        assert handle.read() == b"<!-- agent-coherence message-id: msg-1 -->\n# Do the thing\n"

    with pytest.raises(SlotOccupied) as info:
        materialize(b"other", path, message_id="msg-2")
    assert isinstance(info.value, ChannelError)
    assert (info.value.path, info.value.existing_message_id, info.value.message_id) == (
        path, "msg-1", "msg-2",
    )
    assert consume_materialized(path) == ("msg-1", b"# Do the thing\n")
    assert not os.path.exists(path) and consume_materialized(path) is None

    materialize(b"two", path, message_id="msg-2")
    materialize(b"three", path, message_id="msg-3", force=True)
    assert consume_materialized(path) == ("msg-3", b"three")
    leftovers = [n for n in os.listdir(tmp_path) if n != ".next_task.md.ac-lock"]
    assert leftovers == []


def test_materialize_failure_raises_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "next_task.md"
    path.write_bytes(b"consumed\n")
    with faults.inject("fsync", errno.ENOSPC), pytest.raises(DurabilityError) as info:
        materialize(b"new", str(path), message_id="m-1")
    assert info.value.step == "fsync" and path.read_bytes() == b"consumed\n"
    assert sorted(os.listdir(tmp_path)) == [".next_task.md.ac-lock", "next_task.md"]


def test_materialize_replaces_a_file_without_header(tmp_path):
    path = tmp_path / "next_task.md"
    path.write_bytes(b"done, thanks\n")  # consumed by editing it
    assert consume_materialized(str(path)) is None and path.read_bytes() == b"done, thanks\n"
    materialize(b"new work", str(path), message_id="m-9")
    assert consume_materialized(str(path)) == ("m-9", b"new work")


def test_materialize_refuses_paths_outside_root_and_bad_ids(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "escape")
    written = materialize(b"x", "inbox/next.md", message_id="m", root=str(root))
    assert written == str(root / "inbox" / "next.md")
    assert consume_materialized("inbox/next.md", root=str(root)) == ("m", b"x")
    for bad in ("../outside.md", str(tmp_path / "outside.md"), "escape/next.md"):
        with pytest.raises(PathOutsideRoot):
            materialize(b"x", bad, message_id="m", root=str(root))
    assert sorted(os.listdir(tmp_path / "elsewhere")) == []
    for bad_id in ("", "has space", "a-->b", "line\nbreak"):
        with pytest.raises(ChannelError, match="invalid message_id"):
            materialize(b"x", str(tmp_path / "f.md"), message_id=bad_id)


def _consume_rounds(path, rounds, barrier, out):
    got, errors = [], []
    for _ in range(rounds):
        barrier.wait(WAIT)  # the parent has materialized this round's message
        try:
            result = consume_materialized(path)
        except Exception as exc:  # recorded: the barrier protocol carries on, the test says why
            errors.append(repr(exc))
        else:
            got.append(None if result is None else result[0])
        barrier.wait(WAIT)  # round over
    _dump(out, {"got": [g for g in got if g is not None], "errors": errors})


def test_consume_materialized_race_exactly_one_reader_gets_each_message(tmp_path):
    path, rounds = str(tmp_path / "next_task.md"), 100
    barrier = CTX.Barrier(3)
    outs = [str(tmp_path / f"reader-{i}.json") for i in range(2)]
    readers = [CTX.Process(target=_consume_rounds, args=(path, rounds, barrier, o)) for o in outs]
    for reader in readers:
        reader.start()
    for r in range(rounds):
        materialize(b"task %d" % r, path, message_id=f"m-{r}", force=True)
        barrier.wait(WAIT)
        barrier.wait(WAIT)
    for reader in readers:
        reader.join(WAIT)
    assert [reader.exitcode for reader in readers] == [0, 0]
    first, second = (_load(o) for o in outs)
    assert first["errors"] + second["errors"] == []
    assert set(first["got"]).isdisjoint(second["got"]), "both readers consumed one message"
    assert sorted(first["got"] + second["got"]) == sorted(f"m-{r}" for r in range(rounds))
    assert not os.path.exists(path)


def test_a_put_of_a_str_is_queued_as_utf8(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.put("tâche")
    claimed = spool.claim("c")
    assert claimed is not None and claimed.data == "tâche".encode()
