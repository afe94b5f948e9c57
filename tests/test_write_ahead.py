"""The temp file made without a name, and a write's bytes written ahead of its intent.

Where the filesystem has ``O_TMPFILE`` a temp file has no name until it is written, stamped and
fsynced; a confirmed write in the stamp mode goes further and writes its new bytes before it
records its intent, so the disk works on them while the database does (``durable.WrittenAhead``).
These tests pin down what that must not change: nothing visible in the directory before the
intent, nothing left by a refusal (no file, no directory, no descriptor), the permission bits the
read saw, and the ordinary named temp file where unnamed files are not available.
"""

from __future__ import annotations

import gc
import os
import stat

import pytest

from agent_coherence import Coordinator, LeaseHeld, faults
from agent_coherence import durable
from agent_coherence.spool import Spool

from conftest import temp_files


def _unnamed_files_here(root) -> bool:
    try:
        os.close(os.open(str(root), os.O_TMPFILE | os.O_WRONLY, 0o600))
    except (AttributeError, OSError):
        return False
    return os.path.isdir("/proc/self/fd")


@pytest.fixture
def unnamed(root):
    if not _unnamed_files_here(root):
        pytest.skip("no O_TMPFILE on this filesystem")


def _descriptors() -> dict[str, str]:
    """This process's open descriptors: /proc/self/fd entry -> what it points at."""
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            found[f"/proc/self/fd/{fd}"] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the listing's own descriptor, closed already
    return found


def _unnamed_files_open_in(directory: str) -> list[bytes]:
    """The contents of this process's open files that live in ``directory`` with no name."""
    found = []
    for entry, target in _descriptors().items():
        if os.path.dirname(target) == directory and target.endswith("(deleted)"):
            with open(entry, "rb") as handle:
                found.append(handle.read())
    return found


def _open_fds(root) -> list[str]:
    """What this process's descriptors under ``root`` point at (the rest of the process, such as
    another test's garbage being collected, does not count)."""
    return sorted(target for target in _descriptors().values() if target.startswith(str(root)))


def test_the_new_bytes_are_on_their_way_before_the_intent_and_invisible(root, unnamed) -> None:
    with Coordinator.open(root) as coord:
        if coord.write_mode != "stamp":
            pytest.skip("the write-ahead is for the stamp mode")
        coord.write("notes/plan.md", b"v1", holder="planner")
        directory = str(root / "notes")
        seen: list[tuple[list[bytes], list[str]]] = []

        def at_intent(step: str) -> None:
            seen.append((_unnamed_files_open_in(directory), sorted(os.listdir(directory))))

        with faults.inject("intent", at_intent):
            coord.write("notes/plan.md", b"version two", holder="planner")
        assert seen == [([b"version two"], ["plan.md"])]
        assert (root / "notes/plan.md").read_bytes() == b"version two"
        assert not temp_files(root)


def test_a_refused_write_leaves_no_file_no_directory_and_no_descriptor(root, unnamed) -> None:
    with Coordinator.open(root) as coord:
        coord.write("notes/plan.md", b"v1", holder="planner")
        listing = sorted(os.listdir(root / "notes"))
        with coord.lease("notes/plan.md", "other", ttl=60), coord.lease("new/dir/x.md", "other", ttl=60):
            before = _open_fds(root)
            for _ in range(20):
                with pytest.raises(LeaseHeld):
                    coord.write("notes/plan.md", b"v2", holder="planner")
                with pytest.raises(LeaseHeld):
                    coord.write("new/dir/x.md", b"v1", holder="planner")
            assert _open_fds(root) == before
        assert sorted(os.listdir(root / "notes")) == listing
        assert not (root / "new").exists()
        assert (root / "notes/plan.md").read_bytes() == b"v1"
        assert not temp_files(root)


def test_writes_leave_no_descriptor_open(root) -> None:
    with Coordinator.open(root) as coord:
        coord.write("a.md", b"warm-up", holder="w")
        before = _open_fds(root)
        for index in range(50):
            coord.write("a.md", b"x" * index, holder="w")
            coord.write(f"d{index % 3}/b.md", b"y" * index, holder="w")
        assert _open_fds(root) == before


def test_permission_bits_changed_while_the_intent_is_recorded_are_kept(root, unnamed) -> None:
    """The bytes ahead are made with the bits seen before the intent; the replacement keeps the
    bits the read under the intent saw."""
    with Coordinator.open(root) as coord:
        coord.write("plan.md", b"v1", holder="planner")
        os.chmod(root / "plan.md", 0o640)

        def at_intent(step: str) -> None:
            os.chmod(root / "plan.md", 0o600)

        with faults.inject("intent", at_intent):
            coord.write("plan.md", b"v2", holder="planner")
        assert stat.S_IMODE(os.stat(root / "plan.md").st_mode) == 0o600
        coord.write("plan.md", b"v3", holder="planner")
        assert stat.S_IMODE(os.stat(root / "plan.md").st_mode) == 0o600


def _temp_files_at_fsync(coord: Coordinator, root, spool: Spool) -> list[int]:
    """How many temp files have a name at each fsync of a write and a spool put (a spool's temp
    files are the entries of its tmp/ directory)."""
    counts: list[int] = []

    def at_fsync(step: str) -> None:
        counts.append(len(temp_files(root)) + len(os.listdir(spool.tmp_dir)))

    with faults.inject("fsync", at_fsync):
        coord.write("plan.md", b"bytes", holder="planner")
        spool.put(b"message")
    return counts


def test_the_temp_file_has_no_name_until_it_is_fsynced(root, unnamed) -> None:
    with Coordinator.open(root) as coord:
        spool = Spool(str(root / "queue"))
        assert _temp_files_at_fsync(coord, root, spool) == [0, 0]


def test_without_unnamed_files_the_temp_file_is_named_from_the_start(root, monkeypatch) -> None:
    """A kernel or filesystem without O_TMPFILE refuses it (EISDIR, EOPNOTSUPP): an O_DIRECTORY
    open for writing is refused the same way, so the fallback is taken for real."""
    monkeypatch.setattr(durable, "_O_TMPFILE", os.O_DIRECTORY)
    with Coordinator.open(root) as coord:
        spool = Spool(str(root / "queue"))
        assert _temp_files_at_fsync(coord, root, spool) == [1, 1]
        assert (root / "plan.md").read_bytes() == b"bytes"
        assert not temp_files(root)


@pytest.mark.parametrize("step", ["open_temp", "write", "fsync"])
def test_a_failure_at_a_temp_file_step_is_reported_once_the_bytes_are_ahead(root, step) -> None:
    """The fault seam's steps still fail the write (with the bytes written ahead or not), and the
    old bytes, the version and the directory stay as they were."""
    import errno

    from agent_coherence import DurabilityError

    with Coordinator.open(root) as coord:
        coord.write("plan.md", b"v1", holder="planner")
        with faults.inject(step, errno.EIO), pytest.raises(DurabilityError) as caught:
            coord.write("plan.md", b"v2", holder="planner")
        assert caught.value.step == step
        assert (root / "plan.md").read_bytes() == b"v1"
        assert coord.version("plan.md").version == 1
        assert not temp_files(root)
        assert coord.write("plan.md", b"v2", holder="planner").version == 2


def test_doctor_reports_the_kind_of_temp_file(root, monkeypatch, capsys) -> None:
    from agent_coherence.cli import main

    main(["doctor", "--root", str(root)])
    expected = "unnamed until written" if _unnamed_files_here(root) else "named from the start"
    assert f"temp files: {expected}" in capsys.readouterr().out
    monkeypatch.setattr(durable, "_O_TMPFILE", os.O_DIRECTORY)
    main(["doctor", "--root", str(root)])
    assert "temp files: named from the start (O_TMPFILE refused: Is a directory)" in capsys.readouterr().out
    assert list(root.iterdir()) == [] or all(p.name == ".agent-coherence" for p in root.iterdir())


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


@pytest.mark.parametrize("unnamed_files", [True, False], ids=["unnamed", "named"])
@pytest.mark.parametrize("bits", [0o644, 0o664, 0o755, 0o600])
def test_a_replacement_keeps_the_files_bits_whatever_the_umask(root, monkeypatch, umask_027, unnamed_files,
                                                               bits) -> None:
    """The umask is for new files: a file that is replaced keeps its bits exactly (written ahead
    or not, unnamed or named temp file), and a new file gets 0o644 less the umask."""
    if not unnamed_files:
        monkeypatch.setattr(durable, "_O_TMPFILE", os.O_DIRECTORY)
    with Coordinator.open(root) as coord:
        coord.write("notes/plan.md", b"v1", holder="planner")
        assert stat.S_IMODE(os.stat(root / "notes/plan.md").st_mode) == 0o640
        os.chmod(root / "notes/plan.md", bits)
        coord.write("notes/plan.md", b"v2", holder="planner")
        assert stat.S_IMODE(os.stat(root / "notes/plan.md").st_mode) == bits
    durable.replace_durably(str(root / "notes/plan.md"), b"v3")
    assert stat.S_IMODE(os.stat(root / "notes/plan.md").st_mode) == bits
    durable.replace_durably(str(root / "notes/new.md"), b"v1")
    assert stat.S_IMODE(os.stat(root / "notes/new.md").st_mode) == 0o640


def _unnamed_files_leaked(action, directory: str) -> list[str]:
    """Where an interrupt landing in ``action`` left an unnamed file of ``directory`` open (each
    told once: it stays open for the rest of the test)."""
    from interrupt_points import interrupt_points

    leaks, seen = [], set()
    # What an interrupt leaves is made after this point: frozen, the heap the suite built before
    # (frameworks imported by earlier tests) is not scanned again by every point's collection.
    gc.collect()
    gc.freeze()
    try:
        for landed in interrupt_points(action):
            assert landed.came_out_as_itself, landed
            landed.raised = None  # its traceback's frames hold what they held
            gc.collect()
            # An O_TMPFILE file shows as "#<inode> (deleted)" (a replaced file's name is kept).
            left = {target for target in _descriptors().values()
                    if target.startswith(f"{directory}/#") and target.endswith("(deleted)")} - seen
            if left:
                leaks.append(landed.where)
                seen |= left
    finally:
        gc.unfreeze()
    return leaks


# Right after its open returned or at its final close, the descriptor is lost with the call, as in
# any Python code that opens files.
_INHERENT = ("c_return open", "c_call close")


def test_an_interrupt_anywhere_in_a_write_leaves_no_unnamed_file_open(root, unnamed) -> None:
    """A descriptor on an unnamed file holds the whole payload's disk space, invisible, until the
    process ends. Wherever an interrupt lands in a stamp-mode write (its bytes written ahead),
    none stays open, but at the points of ``_INHERENT``."""
    with Coordinator.open(root) as coord:
        if coord.write_mode != "stamp":
            pytest.skip("the write-ahead is for the stamp mode")
        coord.write("notes/plan.md", b"v0", holder="planner")
        count = iter(range(1, 10**6))
        leaks = _unnamed_files_leaked(
            lambda: coord.write("notes/plan.md", b"v%d" % next(count), holder="planner"), str(root / "notes"))
        assert [where for where in leaks if not where.endswith(_INHERENT)] == []
        assert not temp_files(root)


def test_an_interrupt_anywhere_in_write_temp_leaves_no_unnamed_file_open(root, unnamed) -> None:
    """The same for the ordinary temp file (an undo's replace, a path's replace)."""
    from agent_coherence.rooted import KeyFile

    (root / "notes").mkdir()
    (root / "other").mkdir()  # each its own directory: one's inherent leaks are not the other's

    def replace_by_key() -> None:
        with KeyFile(str(root), "notes/plan.md") as file:
            file.replace(b"bytes", f".plan.md.1.00000000{durable.TEMP_MARKER}")

    def replace_by_path() -> None:
        durable.replace_durably(str(root / "other/plan.md"), b"bytes")

    for action, directory in ((replace_by_key, "notes"), (replace_by_path, "other")):
        leaks = _unnamed_files_leaked(action, str(root / directory))
        assert [where for where in leaks if not where.endswith(_INHERENT)] == []
        assert not temp_files(root)


def test_a_filesystem_that_refuses_unnamed_files_is_asked_once(root, monkeypatch) -> None:
    """A refusal of O_TMPFILE (EISDIR, EOPNOTSUPP) is remembered for the filesystem's device: the
    writes after the first one go straight to a named temp file, with no failed open each."""
    monkeypatch.setattr(durable, "_O_TMPFILE", os.O_DIRECTORY)  # refused for real: see above
    attempts: list[object] = []
    real_open = os.open

    def counting_open(path, flags, *args, **kwargs):
        if flags & os.O_DIRECTORY and flags & os.O_WRONLY:
            attempts.append(path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", counting_open)
    with Coordinator.open(root) as coord:
        for index in range(10):
            coord.write("notes/plan.md", b"v%d" % index, holder="planner")
            coord.write(f"d{index % 3}/x.md", b"x", holder="planner")
        spool = Spool(str(root / "queue"))
        spool.put(b"message")
        durable.replace_durably(str(root / "plain.md"), b"plain")
        assert len(attempts) == 1
        assert (root / "notes/plan.md").read_bytes() == b"v9"
        assert not temp_files(root)
    assert os.stat(root).st_dev in durable._refused_devices
