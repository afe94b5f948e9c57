"""The checks a write keeps while it takes shortcuts: a key's confinement remembered per key, and
the old bytes compared with the bytes this process last wrote instead of hashed.

Remembered confinement must meet the file system as a first call would: a directory swapped for
a symlink (out of the root: refused; inside it: followed to the same key a fresh resolution
gives) or a file swapped for a directory. The old-bytes check must still catch an edit that a
metadata check would miss: same inode, same size, mtime put back.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent_coherence import Coordinator, ForeignEdit, PathOutsideRoot
from agent_coherence import last_written
from agent_coherence.last_written import LastWritten
from agent_coherence.paths import forget_key_plans, resolve_file_key

from conftest import tree_snapshot


def fresh_resolution(root: str, key: str) -> object:
    """What a first call resolves ``key`` to (the remembered string work cleared), or the refusal."""
    forget_key_plans()
    try:
        return resolve_file_key(root, key)
    except PathOutsideRoot as error:
        return ("refused", error.facts.get("reason"))


def resolution(root: str, key: str) -> object:
    try:
        return resolve_file_key(root, key)
    except PathOutsideRoot as error:
        return ("refused", error.facts.get("reason"))


def test_a_remembered_key_meets_a_swapped_in_symlink_as_a_first_call_does(coord: Coordinator, root: Path,
                                                                           tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "other").mkdir()
    coord.write("d/f.txt", b"one", holder="h")  # the key's string work is remembered now
    os.rename(root / "d", root / "d.away")

    os.symlink(outside, root / "d")  # out of the root
    before = tree_snapshot(outside)
    remembered = resolution(str(root), "d/f.txt")
    assert remembered == fresh_resolution(str(root), "d/f.txt")
    assert remembered[0] == "refused"  # type: ignore[index]
    resolution(str(root), "d/f.txt")  # remembered again
    with pytest.raises(PathOutsideRoot):
        coord.write("d/f.txt", b"two", holder="h")
    assert tree_snapshot(outside) == before == {}

    os.unlink(root / "d")
    os.symlink(root / "other", root / "d")  # inside the root: followed, as on a first call
    resolution(str(root), "d/f.txt")
    remembered = resolution(str(root), "d/f.txt")
    assert remembered == fresh_resolution(str(root), "d/f.txt")
    assert remembered.key == "other/f.txt"  # type: ignore[union-attr]


def test_a_remembered_key_whose_file_became_a_directory_is_refused(coord: Coordinator, root: Path) -> None:
    coord.write("x.txt", b"one", holder="h")
    resolution(str(root), "x.txt")
    os.unlink(root / "x.txt")
    (root / "x.txt").mkdir()
    assert resolution(str(root), "x.txt") == fresh_resolution(str(root), "x.txt") \
        == ("refused", "names a directory, not a file")


@pytest.mark.parametrize("size", [1024, 64 * 1024])
def test_an_edit_with_the_same_inode_size_and_mtime_is_still_a_foreign_edit(coord: Coordinator, root: Path,
                                                                            size: int) -> None:
    path = root / "k.bin"
    ours = os.urandom(size)
    coord.write("k.bin", ours, holder="h")
    coord.write("k.bin", ours, holder="h")  # this process now remembers these bytes under their hash
    seen = os.stat(path)
    theirs = bytearray(ours)
    theirs[size // 2] ^= 0xFF  # one byte changed in place
    with open(path, "r+b") as handle:
        handle.write(theirs)
    os.utime(path, ns=(seen.st_atime_ns, seen.st_mtime_ns))
    after = os.stat(path)
    # what a metadata witness would see: nothing changed
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (seen.st_ino, seen.st_size, seen.st_mtime_ns)
    with pytest.raises(ForeignEdit):
        coord.write("k.bin", b"new", holder="h")
    assert path.read_bytes() == bytes(theirs)  # the foreign edit is kept
    assert coord.version("k.bin").version == 2  # type: ignore[union-attr]
    snapshot = coord.read("k.bin")
    assert snapshot.foreign_edit and snapshot.data == bytes(theirs)


def test_the_same_bytes_written_back_around_the_layer_are_not_a_foreign_edit(coord: Coordinator,
                                                                            root: Path) -> None:
    coord.write("k.txt", b"same bytes", holder="h")
    (root / "k.txt").write_bytes(b"same bytes")  # a new inode, the same content
    assert not coord.read("k.txt").foreign_edit
    assert coord.write("k.txt", b"next", holder="h").version == 2


def test_bytes_written_by_another_process_are_hashed(root: Path) -> None:
    with Coordinator.open(root) as first, Coordinator.open(root) as second:
        first.write("k.txt", b"from the first", holder="a")
        second.write("k.txt", b"from the second", holder="b")
        (root / "k.txt").write_bytes(b"from the first")  # what the first remembers, not what is recorded
        with pytest.raises(ForeignEdit):
            first.write("k.txt", b"again", holder="a")


def test_the_remembered_bytes_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(last_written, "MAX_TOTAL", 10)
    monkeypatch.setattr(last_written, "MAX_ENTRY", 6)
    memory = LastWritten()
    memory.remember("big", "h0", b"1234567")  # over MAX_ENTRY: not kept
    memory.remember("a", "h1", b"12345")
    memory.remember("b", "h2", b"12345")
    memory.remember("c", "h3", b"1")  # over MAX_TOTAL: "a" goes
    assert not memory.has_hash("big", "h0", b"1234567")
    assert not memory.has_hash("a", "h1", b"12345")
    assert memory.has_hash("b", "h2", b"12345") and memory.has_hash("c", "h3", b"1")
    assert not memory.has_hash("b", "h2", b"12346")  # other bytes: unknown, hashed by the caller
    assert not memory.has_hash("b", "h9", b"12345")  # another recorded hash: unknown
