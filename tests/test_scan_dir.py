"""scan_dir: entries vanishing mid-scan are skipped, never raised; ordered scans with a limit return
the smallest entries without sorting the whole directory."""

from __future__ import annotations

import os
import random

import pytest

from agent_coherence import scan_dir

from conftest import FORK

FILES = 20_000


def deleter(directory: str, names: list[str], started, done) -> None:
    random.Random(7).shuffle(names)
    started.set()
    for name in names:
        try:
            os.unlink(os.path.join(directory, name))
        except FileNotFoundError:
            pass
    done.set()


def naive_scan(directory: str) -> list[tuple[str, int]]:
    """The usual way: list, then stat each name (the TOCTOU the real scanner avoids)."""
    names = sorted(os.listdir(directory), key=lambda n: os.stat(os.path.join(directory, n)).st_mtime_ns)
    return [(n, os.stat(os.path.join(directory, n)).st_size) for n in names[:10]]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_entries_vanishing_during_the_scan_are_skipped(tmp_path):
    directory = tmp_path / "queue"
    directory.mkdir()
    names = [f"msg-{i:06d}.json" for i in range(FILES)]
    for name in names:
        with open(directory / name, "wb") as handle:
            handle.write(b"{}")
    started, done = FORK.Event(), FORK.Event()
    proc = FORK.Process(target=deleter, args=(str(directory), names, started, done))
    proc.start()
    started.wait(30)
    scans = naive_failures = 0
    try:
        while not done.is_set():
            try:
                naive_scan(str(directory))
            except FileNotFoundError:
                naive_failures += 1
            for order, limit in (("none", None), ("name", 10), ("mtime", 10), ("name", None)):
                entries = list(scan_dir(str(directory), order=order, limit=limit))
                scans += 1
                assert all(e.size == 2 and e.name.startswith("msg-") and e.inode for e in entries)
                if order == "name":
                    assert [e.name for e in entries] == sorted(e.name for e in entries)
    finally:
        proc.join(60)
    assert proc.exitcode == 0
    assert scans >= 4
    assert list(scan_dir(str(directory))) == []
    # the race is real: the list-then-stat way crashed while the scanner never did
    assert naive_failures > 0, f"the naive scan never hit a vanished file in {scans // 4} rounds"


def test_ordered_scan_with_limit_returns_the_smallest(tmp_path):
    rng = random.Random(3)
    names = [f"{rng.randrange(10**9):09d}.task" for _ in range(500)]
    mtimes = rng.sample(range(1, 10**6), len(names))
    for name, mtime in zip(names, mtimes):
        path = tmp_path / name
        path.write_bytes(name.encode())
        os.utime(path, ns=(mtime * 1000, mtime * 1000))
    (tmp_path / ".hidden").write_bytes(b"h")
    (tmp_path / "a-subdir").mkdir()
    os.utime(tmp_path / ".hidden", ns=(0, 0))

    by_mtime = [n for _, n in sorted(zip(mtimes, names))]
    assert [e.name for e in scan_dir(str(tmp_path), order="mtime", limit=7)] == by_mtime[:7]
    assert [e.name for e in scan_dir(str(tmp_path), order="name", limit=7)] == sorted(names)[:7]
    assert [e.name for e in scan_dir(str(tmp_path), order="name")] == sorted(names)
    assert [e.name for e in scan_dir(str(tmp_path), order="mtime")] == by_mtime
    assert len(list(scan_dir(str(tmp_path), limit=5))) == 5
    entry = next(scan_dir(str(tmp_path), order="mtime", limit=1))
    st = os.stat(entry.path)
    assert (entry.size, entry.mtime_ns, entry.inode) == (st.st_size, st.st_mtime_ns, st.st_ino)

    hidden = [e.name for e in scan_dir(str(tmp_path), order="mtime", limit=1, include_hidden=True)]
    assert hidden == [".hidden"]
    with_dirs = {e.name for e in scan_dir(str(tmp_path), files_only=False)}
    assert "a-subdir" in with_dirs and "a-subdir" not in {e.name for e in scan_dir(str(tmp_path))}


def test_equal_mtimes_break_ties_by_name(tmp_path):
    for name in ("c", "a", "b", "d"):
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, ns=(5, 5))
    assert [e.name for e in scan_dir(str(tmp_path), order="mtime", limit=3)] == ["a", "b", "c"]


def test_a_missing_directory_yields_nothing(tmp_path):
    assert list(scan_dir(str(tmp_path / "nope"), order="mtime", limit=3)) == []
    assert list(scan_dir(str(tmp_path / "nope"))) == []
