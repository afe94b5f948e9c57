"""Faults through the injection seam: every failing step of a write raises its typed error and
leaves the old bytes, the old version, no temp file, and the failure in the journal."""

from __future__ import annotations

import errno
import hashlib
import subprocess
import sys

import pytest

from agent_coherence import DurabilityError, LeaseLost
from agent_coherence import faults

from conftest import temp_files

KEY = "notes/plan.md"
OLD = b"the committed plan\n"
NEW = b"a new plan that must not land\n" * 100

# (step, errno): each fails before the rename, except fsync_dir and read_back (after it, so the old
# bytes must be put back) and commit (after the file step, so the old bytes must be put back too).
CASES = [
    ("open_temp", errno.EACCES),
    ("write", errno.ENOSPC),
    ("write", errno.EIO),
    ("write", errno.EDQUOT),
    ("fsync", errno.EIO),
    ("rename", errno.EIO),
    ("rename", errno.EXDEV),
    ("fsync_dir", errno.EIO),
    ("read_back", errno.EIO),
    ("commit", errno.EIO),
]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_untouched(coord, root, key: str, old: bytes | None, version: int) -> None:
    path = root / key
    if old is None:
        assert not path.exists()
    else:
        assert path.read_bytes() == old
    info = coord.version(key)
    assert (info.version if info else 0) == version
    assert not temp_files(root)
    assert coord.backend.get_intent(coord.key(key)) is None
    snap = coord.read(key)
    assert snap.version == version and not snap.foreign_edit


@pytest.mark.parametrize("step,code", CASES, ids=[f"{s}-{errno.errorcode[c]}" for s, c in CASES])
def test_failed_step_raises_and_keeps_the_old_bytes(coord, root, step, code):
    coord.write(KEY, OLD, holder="h")
    with faults.inject(step, code):
        with pytest.raises(DurabilityError) as caught:
            coord.write(KEY, NEW, holder="h")
    error = caught.value
    assert (error.key, error.step, error.errno) == (KEY, step, code)
    assert error.path == str(root / KEY)
    assert_untouched(coord, root, KEY, OLD, 1)
    failed = [e for e in coord.journal.history(KEY) if e.kind == "write.failed"]
    assert [(e.holder, e.data["step"], e.data["version"]) for e in failed] == [("h", step, 1)]
    assert coord.backend.get_lease(KEY) is None  # the lease taken for the write is given back
    # the fault gone, the same write goes through
    assert coord.write(KEY, NEW, holder="h", expect_version=1).version == 2
    assert (root / KEY).read_bytes() == NEW
    coord.journal.verify()


@pytest.mark.parametrize("step", ["write", "fsync", "rename", "fsync_dir", "commit"])
def test_failed_first_write_leaves_no_file(coord, root, step):
    with faults.inject(step, errno.EIO):
        with pytest.raises(DurabilityError) as caught:
            coord.write(KEY, NEW, holder="h")
    assert caught.value.step == step
    assert_untouched(coord, root, KEY, None, 0)
    assert coord.journal.count(kind="write.failed", key=KEY) == 1


@pytest.mark.parametrize("step", ["write", "fsync", "rename", "fsync_dir", "commit"])
def test_failure_under_an_explicit_lease_keeps_the_lease(coord, root, step):
    coord.write(KEY, OLD, holder="h")
    lease = coord.acquire(KEY, "h", ttl=30)
    with faults.inject(step, errno.EIO):
        with pytest.raises(DurabilityError):
            coord.write(KEY, NEW, lease=lease)
    assert_untouched(coord, root, KEY, OLD, 1)
    held = coord.backend.get_lease(KEY)
    assert (held.holder, held.fence) == ("h", lease.fence)
    assert coord.write(KEY, NEW, lease=lease).version == 2


def test_failed_commit_by_a_lost_lease_restores_the_old_bytes(coord, root, clock):
    """The lease expires and is taken over while the file step runs: the commit is fenced."""
    coord.write(KEY, OLD, holder="h")
    lease = coord.acquire(KEY, "h", ttl=5)
    taken = []

    def lose_the_lease(step: str) -> None:
        clock.advance(10)
        taken.append(coord.acquire(KEY, "rival", ttl=30))

    with faults.inject("commit", lose_the_lease):
        with pytest.raises(LeaseLost) as caught:
            coord.write(KEY, NEW, lease=lease)
    assert (caught.value.current_holder, caught.value.current_fence) == ("rival", taken[0].fence)
    assert_untouched(coord, root, KEY, OLD, 1)
    failed = [e for e in coord.journal.history(KEY) if e.kind == "write.failed"]
    assert [e.data["step"] for e in failed] == ["commit"]


def test_delete_fault_keeps_the_file(coord, root):
    coord.write(KEY, OLD, holder="h")
    with faults.inject("commit", errno.EIO):
        with pytest.raises(DurabilityError) as caught:
            coord.delete(KEY, holder="h")
    assert caught.value.step == "commit"
    assert_untouched(coord, root, KEY, OLD, 1)


def test_fsync_dir_failing_during_the_restore_too(coord, root):
    """A persistent directory fsync failure: the restore renames the old bytes back regardless,
    and the error says the restore could not be confirmed."""
    coord.write(KEY, OLD, holder="h")
    with faults.inject("fsync_dir", errno.EIO):
        with pytest.raises(DurabilityError) as caught:
            coord.write(KEY, NEW, holder="h")
    assert caught.value.step == "fsync_dir"
    assert_untouched(coord, root, KEY, OLD, 1)
    detail = [e for e in coord.journal.history(KEY) if e.kind == "write.failed"][0].data["detail"]
    assert "restoring" in detail


def test_environment_fault_plan_applies_in_a_fresh_process(root):
    code = (
        "import sys\n"
        "from agent_coherence import Coordinator, DurabilityError\n"
        f"coord = Coordinator.open({str(root)!r})\n"
        "try:\n"
        "    coord.write('a.txt', b'x', holder='h')\n"
        "except DurabilityError as e:\n"
        "    print(e.step, e.errno)\n"
        "    sys.exit(0)\n"
        "sys.exit(3)\n"
    )
    env = {"AGENT_COHERENCE_FAULTS": "rename:ENOSPC,commit:sleep=0.01", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["rename", str(errno.ENOSPC)]
    assert not (root / "a.txt").exists() and not temp_files(root)


def test_read_back_mismatch_is_a_durability_error(coord, root):
    """The bytes read back are not the bytes written (a lying disk, a concurrent clobber)."""
    coord.write(KEY, OLD, holder="h")

    def corrupt(step: str) -> None:
        (root / KEY).write_bytes(b"garbage")

    with faults.inject("read_back", corrupt):
        with pytest.raises(DurabilityError) as caught:
            coord.write(KEY, NEW, holder="h")
    assert caught.value.step == "read_back" and "read back" in caught.value.detail
    assert_untouched(coord, root, KEY, OLD, 1)


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM, errno.EROFS])
@pytest.mark.parametrize("step", ["open_temp", "rename"])
def test_a_write_refused_by_permissions_says_so_in_its_hint(coord, root, step, code):
    # the default hint, "free space or fix the disk", sends someone after the wrong problem
    coord.write("a.txt", b"old", holder="h")
    with faults.inject(step, code):
        with pytest.raises(DurabilityError) as caught:
            coord.write("a.txt", b"new", holder="h")
    assert caught.value.errno == code and caught.value.step == step
    assert "permissions" in caught.value.recover and "free space" not in caught.value.recover
    assert (root / "a.txt").read_bytes() == b"old" and coord.read("a.txt").version == 1


def test_a_full_disk_keeps_its_hint(coord, root):
    with faults.inject("write", errno.ENOSPC):
        with pytest.raises(DurabilityError) as caught:
            coord.write("a.txt", b"new", holder="h")
    assert "free space" in caught.value.recover
