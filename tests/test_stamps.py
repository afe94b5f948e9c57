"""Stamped writes: the crash suite in both write modes, and the recovery rules of the stamp.

``AGENT_COHERENCE_XATTR=off`` forces the fallback (``flush``) mode, where the intent is flushed
before the rename; otherwise the temp file carries the ``user.agent-coherence`` stamp and the
intent is not flushed. A power loss is simulated by putting back a copy of the database taken
before the write (the unflushed transactions are what a power loss may take), with the file's
fsynced bytes and stamp kept: without the stamp rule the next read would call the confirmed write
a foreign edit.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import time

import pytest

from agent_coherence import Coordinator, ForeignEdit, durable, stamps

from conftest import temp_files
from test_crash import KEY, kill_and_reap, read_lines, writer_loop

STEPS = ("intent", "open_temp", "write", "fsync", "rename", "fsync_dir", "read_back", "commit")
RANDOM_TRIALS = 80


@pytest.fixture(params=["stamp", "flush"])
def write_mode(request, monkeypatch, root):
    if request.param == "flush":
        monkeypatch.setenv(stamps.ENVIRONMENT, "off")
    else:
        monkeypatch.delenv(stamps.ENVIRONMENT, raising=False)
    if stamps.mode(str(root)) != request.param:
        pytest.skip(f"this filesystem gives the {stamps.mode(str(root))} mode only")
    return request.param


def small_payload(seed: int, index: int) -> bytes:
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return digest * (1 + int.from_bytes(digest[:2], "big") % 4096)  # 32 B - 128 KiB


def small_writer(root: str, seed: int, start: int, fd: int, faults_plan: str) -> None:
    import importlib

    if faults_plan:
        os.environ["AGENT_COHERENCE_FAULTS"] = faults_plan
        from agent_coherence import faults
        importlib.reload(faults)
    import test_crash

    test_crash.payload = small_payload
    writer_loop(root, seed, start, fd)


@pytest.mark.parametrize("temps", ["unnamed", "named"])
def test_kill_9_at_every_step_in_both_modes(root, write_mode, temps, monkeypatch):
    """kill -9 while the writer sleeps at each step in turn, then at random instants: after the
    reopen the disk holds the last committed bytes or the in-flight write's, the record agrees,
    no intent, temp file or write lease is left, and the journal verifies. ``temps``: temp files
    made without a name (O_TMPFILE, the bytes of a stamp-mode write ahead of its intent) or, as on
    a filesystem without O_TMPFILE (which refuses it as an O_DIRECTORY open for writing is
    refused), named from the start."""
    from conftest import FORK

    if temps == "named":
        monkeypatch.setattr(durable, "_O_TMPFILE", os.O_DIRECTORY)  # inherited by the forked writers

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    with Coordinator.open(root) as coord:
        assert coord.write_mode == write_mode
        committed_index = 0
        committed_version = coord.write(KEY, small_payload(seed, 0), holder="writer").version
    next_index = 1
    plans = [(f"{step}:sleep=0.5", 0.15) for step in STEPS] + [("", rng.uniform(0, 0.02))
                                                                for _ in range(RANDOM_TRIALS)]
    outcomes = {"old": 0, "new": 0}
    for trial, (plan, delay) in enumerate(plans):
        context = f"seed={seed} trial={trial} mode={write_mode} plan={plan or 'random'}"
        read_fd, write_fd = os.pipe()
        proc = FORK.Process(target=small_writer, args=(str(root), seed, next_index, write_fd, plan))
        proc.start()
        os.close(write_fd)
        reports = bytearray()
        try:
            read_lines(read_fd, reports, until_first=True)
            time.sleep(delay)
        finally:
            kill_and_reap(proc)
        read_lines(read_fd, reports, until_first=False)
        os.close(read_fd)
        in_flight = None
        for line in reports.decode().splitlines():
            tag, *fields = line.split()
            assert tag != "X", f"{context}: {line}"
            if tag == "B":
                in_flight = int(fields[0])
            else:
                committed_index, committed_version = int(fields[0]), int(fields[1])
                in_flight, next_index = None, committed_index + 1
        with Coordinator.open(root) as coord:
            data = (root / KEY).read_bytes()
            info = coord.version(KEY)
            if data == small_payload(seed, committed_index):
                outcomes["old"] += 1
                expected = committed_version
            else:
                assert in_flight is not None and data == small_payload(seed, in_flight), context
                outcomes["new"] += 1
                expected = committed_version = committed_version + 1
                committed_index, next_index = in_flight, in_flight + 1
            assert (info.version, info.sha256) == (expected, hashlib.sha256(data).hexdigest()), context
            assert coord.backend.list_intents() == [], context
            assert coord.backend.get_lease(KEY) is None, context
            assert not temp_files(root), context
            snap = coord.read(KEY)
            assert not snap.foreign_edit and snap.version == expected, context
    with Coordinator.open(root) as coord:
        coord.journal.verify()
    assert outcomes["old"] > 0 and outcomes["new"] > 0, outcomes


def _database_copy(root, into):
    state = root / ".agent-coherence"
    shutil.rmtree(into, ignore_errors=True)
    shutil.copytree(state, into)


def _power_loss(root, saved):
    """Put the database back as it was at ``saved``, as a power loss may (the file's fsynced bytes
    and stamp stay)."""
    state = root / ".agent-coherence"
    shutil.rmtree(state)
    shutil.copytree(saved, state)


@pytest.mark.parametrize("first", [False, True])
def test_a_commit_lost_to_power_loss_is_rolled_forward_from_the_stamp(root, tmp_path, first):
    if stamps.mode(str(root)) != "stamp":
        pytest.skip("no user xattrs here")
    saved = tmp_path / "saved"
    with Coordinator.open(root) as coord:
        if not first:
            coord.write("a.txt", b"one", holder="w")
    _database_copy(root, saved)
    with Coordinator.open(root) as coord:
        receipt = coord.write("a.txt", b"two", holder="w")
    _power_loss(root, saved)
    with Coordinator.open(root) as coord:
        assert coord.backend.get_version("a.txt") != None or first
        snap = coord.read("a.txt")
        assert (snap.data, snap.version, snap.foreign_edit) == (b"two", receipt.version, False)
        assert coord.journal.count(kind="recover.stamp", key="a.txt") == 1
        assert coord.write("a.txt", b"three", holder="w").version == receipt.version + 1
        coord.journal.verify()


def test_without_the_stamp_the_same_loss_is_a_foreign_edit(root, tmp_path, monkeypatch):
    """The baseline: in the flush mode nothing on the file says what it is."""
    monkeypatch.setenv(stamps.ENVIRONMENT, "off")
    saved = tmp_path / "saved"
    with Coordinator.open(root) as coord:
        coord.write("a.txt", b"one", holder="w")
    _database_copy(root, saved)
    with Coordinator.open(root) as coord:
        coord.write("a.txt", b"two", holder="w")
    _power_loss(root, saved)
    with Coordinator.open(root) as coord:
        assert coord.read("a.txt").foreign_edit
        with pytest.raises(ForeignEdit):
            coord.write("a.txt", b"three", holder="w")


def _stamped_root(root):
    if stamps.mode(str(root)) != "stamp":
        pytest.skip("no user xattrs here")
    coord = Coordinator.open(root)
    coord.write("a.txt", b"one", holder="w")
    return coord


def test_an_in_place_edit_keeps_the_stamp_but_the_hash_decides(root):
    with _stamped_root(root) as coord:
        with open(root / "a.txt", "r+b") as handle:  # rewrite in place: the xattr stays
            handle.write(b"ONE")
        assert os.getxattr(root / "a.txt", stamps.ATTRIBUTE)
        assert coord.read("a.txt").foreign_edit
        with pytest.raises(ForeignEdit):
            coord.write("a.txt", b"two", holder="w")
        assert coord.journal.count(kind="recover.stamp") == 0


def test_a_replaced_file_or_an_old_stamp_is_foreign(root, tmp_path):
    with _stamped_root(root) as coord:
        shutil.copy2(root / "a.txt", tmp_path / "old")  # keeps the xattr of version 1
        coord.write("a.txt", b"two", holder="w")
        coord.write("a.txt", b"three", holder="w")
        os.replace(tmp_path / "old", root / "a.txt")  # a backup of version 1 put back
        assert coord.read("a.txt").foreign_edit
        (root / "a.txt").write_bytes(b"four")  # truncating rewrite by an editor
        assert coord.read("a.txt").foreign_edit
        assert coord.journal.count(kind="recover.stamp") == 0


def test_a_refused_write_whose_bytes_stayed_is_not_rolled_forward(root):
    """A write refused after its rename, whose old bytes could not be put back, leaves stamped
    bytes of the next version: its ``write.failed`` entry keeps them foreign."""
    with _stamped_root(root) as coord:
        record = coord.backend.get_version("a.txt")
        lease = coord.acquire("a.txt", "w")
        from agent_coherence.backends.base import WriteRequest
        from agent_coherence import recovery
        from agent_coherence.rooted import KeyFile

        pid, start = recovery.own_identity()
        intent = coord.backend.begin_write(WriteRequest(
            key="a.txt", holder="w", new_sha256=hashlib.sha256(b"two").hexdigest(), size=3,
            temp_path=str(root / ".a.txt.x.ac-tmp"), host=recovery.HOST, pid=pid, pid_start=start,
            fence=lease.fence, ttl=30.0, expect_version=record.version))
        with KeyFile(str(root), "a.txt") as file:
            assert file.write_temp(".a.txt.x.ac-tmp", b"two", 0o644, recovery.stamp_for(intent))
            file.rename_into_place(".a.txt.x.ac-tmp")
        coord.backend.abort_write(intent, "commit", "refused")
        assert coord.read("a.txt").foreign_edit
        assert coord.journal.count(kind="recover.stamp") == 0


def test_doctor_reports_the_write_mode(root, monkeypatch, capsys):
    from agent_coherence.cli import main

    main(["doctor", "--root", str(root)])
    expected = stamps.mode(str(root))
    assert f"write mode: {expected}" in capsys.readouterr().out
    monkeypatch.setenv(stamps.ENVIRONMENT, "off")
    main(["doctor", "--root", str(root)])
    assert "write mode: flush" in capsys.readouterr().out


def test_a_format_1_stamp_left_by_an_earlier_release_is_still_rolled_forward(root, tmp_path):
    """The same power loss, with the file carrying the JSON stamp an earlier release wrote."""
    if stamps.mode(str(root)) != "stamp":
        pytest.skip("no user xattrs here")
    saved = tmp_path / "saved"
    with Coordinator.open(root) as coord:
        first = coord.write("a.txt", b"one", holder="agent-1")
    _database_copy(root, saved)
    with Coordinator.open(root) as coord:
        receipt = coord.write("a.txt", b"two", holder="agent-1")
        current = stamps.decode(os.getxattr(root / "a.txt", stamps.ATTRIBUTE))
    assert current is not None and current.holder is None  # format 2 had no room for this holder
    old_release = stamps.encoded_by_json(current.intent_id, "a.txt", "agent-1", current.fence, receipt.version,
                                         receipt.sha256, first.sha256)
    os.setxattr(root / "a.txt", stamps.ATTRIBUTE, old_release)
    _power_loss(root, saved)
    with Coordinator.open(root) as coord:
        snap = coord.read("a.txt")
        assert (snap.data, snap.version, snap.foreign_edit) == (b"two", receipt.version, False)
        record = coord.backend.get_version("a.txt")
        assert record is not None and record.writer == "agent-1"  # format 1 keeps the holder
        assert coord.journal.count(kind="recover.stamp", key="a.txt") == 1


def _second_commit_lost(root, tmp_path, holder):
    """Write a.txt twice as ``holder``, then lose the second commit to a power loss (its stamped
    bytes stay on disk); returns the second write's receipt. Skips where there are no xattrs."""
    if stamps.mode(str(root)) != "stamp":
        pytest.skip("no user xattrs here")
    saved = tmp_path / "saved"
    with Coordinator.open(root) as coord:
        coord.write("a.txt", b"one", holder=holder)
    _database_copy(root, saved)
    with Coordinator.open(root) as coord:
        receipt = coord.write("a.txt", b"two", holder=holder)
    _power_loss(root, saved)
    return receipt


def test_a_stamp_without_its_holder_records_the_version_as_recovered(root, tmp_path):
    receipt = _second_commit_lost(root, tmp_path, "agent-1")
    with Coordinator.open(root) as coord:  # a write, not a read, finds the lost commit this time
        assert coord.write("a.txt", b"three", holder="agent-1").version == receipt.version + 1
        recovered = [e for e in coord.backend.journal_entries(key="a.txt") if e.kind == "recover.stamp"]
        assert [(e.holder, e.data.get("version")) for e in recovered] == [(stamps.RECOVERED_HOLDER, receipt.version)]
        coord.journal.verify()


def _filesystem_type(path) -> str:
    """The type of the filesystem holding ``path`` (from /proc/self/mountinfo), "" if unknown."""
    device = os.stat(path).st_dev
    wanted = f"{os.major(device)}:{os.minor(device)}"
    try:
        lines = open("/proc/self/mountinfo").read().splitlines()
    except OSError:
        return ""
    for line in lines:
        fields = line.split()
        if fields[2] == wanted and " - " in line:
            return line.split(" - ", 1)[1].split()[0]
    return ""


def test_on_ext4_the_usual_stamp_stays_in_the_inode(root):
    """ext4 gives an attribute that does not fit in the inode a 4 KiB block of its own (counted in
    st_blocks, written at every write): the usual stamp stays within the budget, and its file takes
    no more blocks than the same bytes unstamped, where a format-1 stamp takes one more."""
    if _filesystem_type(root) != "ext4" or stamps.mode(str(root)) != "stamp":
        pytest.skip("not an ext4 root with user xattrs")
    payload = os.urandom(1024)
    with Coordinator.open(root) as coord:
        for version in range(1, 4):
            coord.write("dir/plan.md", payload + bytes([version]), holder="agent-1")
            raw = os.getxattr(root / "dir" / "plan.md", stamps.ATTRIBUTE)
            assert raw[:1] != b"[" and len(raw) <= stamps.IN_INODE_BUDGET, (version, len(raw))
        stamp = stamps.decode(raw)
        assert stamp is not None
    bare, old_format = root / "bare", root / "old-format"
    for path, value in ((bare, None), (old_format, stamps.encoded_by_json(
            stamp.intent_id, "dir/plan.md", "agent-1", stamp.fence, 3, "ab" * 32, "cd" * 32))):
        with open(path, "wb") as handle:
            handle.write(payload + b"\x03")
            if value is not None:
                os.setxattr(handle.fileno(), stamps.ATTRIBUTE, value)
            os.fsync(handle.fileno())
    blocks = {name: os.stat(path).st_blocks for name, path in
              (("stamped", root / "dir" / "plan.md"), ("bare", bare), ("format 1", old_format))}
    assert blocks["stamped"] == blocks["bare"] < blocks["format 1"], blocks  # one attribute block more


def test_a_write_begun_after_the_reader_looked_keeps_the_version_it_was_given(root, tmp_path):
    """After a power loss, a reader that found the stamped bytes with no intent on the key records
    them again; a write that began in between holds an intent for that same version number, so the
    record must be refused (IntentPending), not made: two entries would then claim one version."""
    from agent_coherence import recovery
    from agent_coherence.backends.base import IntentPending, WriteRequest
    from agent_coherence.rooted import KeyFile

    _second_commit_lost(root, tmp_path, "w")
    with Coordinator.open(root, recover=False) as coord:
        record = coord.backend.get_version("a.txt")  # what the reader saw: version 1, no intent
        pid, start = recovery.own_identity()
        other = coord.backend.begin_write(WriteRequest(  # the write that began since
            key="a.txt", holder="w2", new_sha256=hashlib.sha256(b"three").hexdigest(), size=5,
            temp_path=str(root / ".a.txt.y.ac-tmp"), host=recovery.HOST, pid=pid, pid_start=start,
            fence=None, ttl=30.0, expect_version=None))
        data = (root / "a.txt").read_bytes()
        with KeyFile(str(root), "a.txt") as file, pytest.raises(IntentPending):
            recovery.forward_from_stamp(coord.backend, file, record, data, hashlib.sha256(data).hexdigest())
        assert coord.backend.get_version("a.txt") == record
        assert coord.journal.count(kind="recover.stamp") == 0
        coord.backend.abort_write(other, "test", "done")
        assert coord.read("a.txt").data == b"two"  # with the write gone, the reader records it
        assert coord.journal.count(kind="recover.stamp") == 1
        coord.journal.verify()
