"""A full disk never wedges a key: the writer gets DurabilityError (errno ENOSPC) even when the
undo cannot be journaled either (the database is on the same full disk); the undo is retried in
the background, so once space is back the key is writable again within seconds, by this process
and by others; no byte and no version is lost.

The real tests run on a small tmpfs (mounting needs root; skipped otherwise), so ENOSPC comes
from the kernel and "database or disk is full" from SQLite itself. The fault seam only picks the
moment the disk fills. One more test, runnable anywhere, makes the undo's journal entry fail with a
busy database instead.

Without the retry, the caller got BackendUnavailable and the intent stayed, refusing the key to
every process ("still in flight") until the writer exited.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from agent_coherence import Coordinator, DurabilityError, LeaseHeld, faults

from conftest import FORK, temp_files, wait_for

KEY = "notes/plan.md"
OLD = b"the committed plan\n" * 10
NEW = b"a plan that does not fit\n" * 400
SOON = 3.0  # seconds within which a freed disk frees the key


@pytest.fixture
def small_fs(tmp_path: Path):
    mount = tmp_path / "fs"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount: Path, leave: int = 0) -> Path:
    """Fill the filesystem until ``leave`` bytes or fewer are free; returns the filler file."""
    filler = mount / f"filler-{len(list(mount.glob('filler-*')))}"
    with open(filler, "wb") as handle:
        chunk = b"\0" * 4096
        try:
            while os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize > leave + len(chunk):
                handle.write(chunk)
                handle.flush()
            handle.write(b"\0" * max(0, os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize - leave))
            handle.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


def free(mount: Path) -> None:
    for filler in mount.glob("filler-*"):
        filler.unlink()


def _write_once(root: str, result: "FORK.Queue") -> None:  # type: ignore[name-defined]
    """Write the key as a writer that retries a busy key would, for up to SOON seconds."""
    started = time.monotonic()
    try:
        with Coordinator.open(root) as coord:
            while True:
                try:
                    receipt = coord.write(KEY, b"from another process", holder="other")
                    break
                except LeaseHeld:
                    if time.monotonic() - started > SOON:
                        raise
                    time.sleep(0.05)
        result.put(("ok", receipt.version, time.monotonic() - started))
    except Exception as error:
        result.put((type(error).__name__, str(error), time.monotonic() - started))


def write_from_another_process(root) -> tuple:
    result = FORK.Queue()
    child = FORK.Process(target=_write_once, args=(str(root), result))
    child.start()
    child.join(60)
    return result.get(timeout=5)


def assert_consistent(coord, root: Path, key: str) -> None:
    snap = coord.read(key)
    info = coord.version(key)
    assert not snap.foreign_edit and snap.version == (info.version if info else 0)
    assert coord.backend.get_intent(key) is None


def filling_at(mount: Path):
    def act(step: str) -> None:
        fill(mount)

    return act


@pytest.mark.parametrize("step", ["write", "rename", "commit"])  # the moment the disk fills
def test_a_write_that_fills_the_disk_is_a_durability_error_and_frees_the_key(small_fs, step):
    root = small_fs / "root"
    coord = Coordinator.open(root)
    coord.write(KEY, OLD, holder="h")
    with faults.inject(step, filling_at(small_fs)):
        with pytest.raises(DurabilityError) as caught:
            coord.write(KEY, NEW, holder="h")
    assert caught.value.errno == errno.ENOSPC, caught.value
    # the disk still full: the old bytes are on disk or (a commit refused) come back once it is not
    free(small_fs)
    wait_for(lambda: coord.backend.get_intent(KEY) is None, timeout=SOON)
    assert (root / KEY).read_bytes() == OLD and not temp_files(root)
    assert_consistent(coord, root, KEY)
    assert coord.version(KEY).version == 1
    failed = [e.data["step"] for e in coord.journal.history(KEY) if e.kind == "write.failed"]
    assert failed == [caught.value.step]
    outcome = write_from_another_process(root)
    assert outcome[:2] == ("ok", 2) and outcome[2] < SOON, outcome
    assert coord.write(KEY, NEW, holder="h").version == 3
    coord.journal.verify()
    coord.close()


def test_the_key_is_freed_for_others_while_the_writer_lives_on(small_fs):
    """The process whose undo could not be journaled keeps running (and writing other keys);
    another process's write to the key succeeds once space is back, without waiting for it."""
    root = small_fs / "root"
    coord = Coordinator.open(root)
    coord.write(KEY, OLD, holder="h")
    with faults.inject("write", filling_at(small_fs)):
        with pytest.raises(DurabilityError):
            coord.write(KEY, NEW, holder="h")
    outcome_full = write_from_another_process(root)  # still full: refused (after retrying), but typed
    assert outcome_full[0] in ("DurabilityError", "LeaseHeld"), outcome_full
    free(small_fs)
    outcome = write_from_another_process(root)
    assert outcome[:2] == ("ok", 2) and outcome[2] < SOON, outcome
    assert coord.write("other.txt", b"still writing", holder="h").version == 1
    assert_consistent(coord, root, KEY)
    coord.close()


def test_writes_on_a_nearly_full_disk_fail_typed_and_lose_nothing(small_fs):
    """No seam at all: the disk is filled to a few levels of free space and writes of several
    sizes run into ENOSPC wherever it comes (the intent, the temp file, the commit, the undo)."""
    root = small_fs / "root"
    coord = Coordinator.open(root)
    keys = [f"k{i}.txt" for i in range(4)]
    committed: dict[str, bytes] = {}
    for key in keys:
        coord.write(key, b"start " + key.encode(), holder="h")
        committed[key] = b"start " + key.encode()
    refused = 0
    for leave in (0, 4096, 16384, 65536, 200_000):
        fill(small_fs, leave)
        for n, key in enumerate(keys):
            data = os.urandom(1024 * (1 + 30 * n))
            try:
                coord.write(key, data, holder="h")
                committed[key] = data
            except DurabilityError as error:
                assert error.errno == errno.ENOSPC, error
                refused += 1
            except Exception as error:  # LeaseHeld: an earlier undo still waiting for space
                assert type(error).__name__ == "LeaseHeld", error
                refused += 1
        free(small_fs)
        for key in keys:
            wait_for(lambda: coord.backend.get_intent(key) is None, timeout=SOON)
    assert refused > 0  # the disk did fill
    for key in keys:
        assert (root / key).read_bytes() == committed[key]
        assert_consistent(coord, root, key)
    assert not temp_files(root)
    coord.journal.verify()
    coord.close()


def test_an_undo_that_cannot_be_journaled_is_retried_until_it_can(coord, root):
    """Anywhere, without a tmpfs: ENOSPC at the rename (after the intent's flush, which runs
    alongside the temp file's write), and the database busy (another connection holds its write
    lock) when the undo is journaled."""
    coord.write(KEY, OLD, holder="h")
    coord.backend.busy_deadline = 0.2
    locked, unlock = threading.Event(), threading.Event()

    def hold_the_database() -> None:
        conn = sqlite3.connect(os.path.join(root, ".agent-coherence", "state.db"), timeout=5)
        conn.execute("BEGIN IMMEDIATE")
        locked.set()
        unlock.wait(10)
        conn.rollback()
        conn.close()

    def disk_full_and_database_busy(step: str) -> None:
        threading.Thread(target=hold_the_database, daemon=True).start()
        locked.wait(5)
        raise OSError(errno.ENOSPC, "No space left on device (injected)")

    with faults.inject("rename", disk_full_and_database_busy):
        with pytest.raises(DurabilityError) as caught:
            coord.write(KEY, NEW, holder="h")
    assert caught.value.errno == errno.ENOSPC and "retried in the background" in str(caught.value)
    assert coord.backend.get_intent(KEY) is not None  # the undo is not recorded yet
    unlock.set()
    wait_for(lambda: coord.backend.get_intent(KEY) is None, timeout=SOON)
    assert (root / KEY).read_bytes() == OLD and not temp_files(root)
    assert coord.journal.count(kind="write.failed", key=KEY) == 1
    outcome = write_from_another_process(root)
    assert outcome[:2] == ("ok", 2) and outcome[2] < SOON, outcome
    coord.journal.verify()
