"""A directory on a key's path swapped for a symlink to outside the root, while writes and reads
run: not one byte is written outside the root and not one byte from outside is read.

A racer process keeps renaming ``root/d`` away, putting a symlink to ``outside`` in its place, and
putting the directory back; writer processes write ``d/...`` keys (some in subdirectories that
must be created) and read a key whose twin outside holds a secret. The key check passes while
``d`` is real; the swap lands between that check and the file steps. The landed code, which did
the file steps by path, put files outside within seconds (run this file with the old code to see
it); walking from the root by directory descriptors with O_NOFOLLOW, none can.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from agent_coherence import CoherenceError, Coordinator

from conftest import FORK, temp_files, tree_snapshot

SECRET = b"outside secret\n"


def _race(root: str, outside: str, stop) -> None:  # type: ignore[no-untyped-def]
    os.chdir(root)
    n = 0
    while not stop.is_set():
        n += 1
        away = f"d.away{n}"
        try:
            os.rename("d", away)
        except OSError:
            continue
        try:
            os.symlink(outside, "d")
            time.sleep(0.0002)
            os.unlink("d")
        except OSError:
            pass  # a writer created a real d meanwhile: leave both, race on with it
        try:
            os.rename(away, "d")
        except OSError:
            pass


def _write_and_read(root: str, seconds: float, results) -> None:  # type: ignore[no-untyped-def]
    outcome: dict[str, int] = {}
    leaked = 0
    deadline = time.monotonic() + seconds
    with Coordinator.open(root) as coord:
        i = 0
        while time.monotonic() < deadline:
            i += 1
            key = f"d/w{os.getpid()}-{i}.txt" if i % 2 else f"d/s{i % 5}/w{os.getpid()}-{i}.txt"
            try:
                coord.write(key, b"payload %d\n" % i, holder=f"w{os.getpid()}")
                outcome["written"] = outcome.get("written", 0) + 1
            except CoherenceError as error:
                outcome[type(error).__name__] = outcome.get(type(error).__name__, 0) + 1
            except Exception as error:
                outcome["untyped " + type(error).__name__] = outcome.get("untyped " + type(error).__name__, 0) + 1
            try:
                if coord.read("d/secret.txt").data == SECRET:
                    leaked += 1
            except CoherenceError:
                pass
            except Exception as error:
                outcome["untyped read " + type(error).__name__] = 1
    results.put((outcome, leaked))


def race(base: Path, seconds: float, writers: int = 2) -> tuple[dict[str, int], int, list[str], Path]:
    root, outside = base / "root", base / "outside"
    (root / "d").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    Coordinator.open(root).close()
    with Coordinator.open(root) as coord:
        coord.write("d/secret.txt", b"inside\n", holder="h")
    before = tree_snapshot(outside)
    stop, results = FORK.Event(), FORK.Queue()
    racer = FORK.Process(target=_race, args=(str(root), str(outside), stop))
    procs = [FORK.Process(target=_write_and_read, args=(str(root), seconds, results)) for _ in range(writers)]
    racer.start()
    for proc in procs:
        proc.start()
    totals: dict[str, int] = {}
    leaked = 0
    try:
        for _ in procs:
            outcome, leaks = results.get(timeout=seconds + 60)
            leaked += leaks
            for name, count in outcome.items():
                totals[name] = totals.get(name, 0) + count
    finally:
        stop.set()
        racer.join(10)
        for proc in procs:
            proc.join(10)
    after = tree_snapshot(outside)
    landed_outside = sorted(set(after) - set(before)) + [p for p in before if after.get(p) != before[p]]
    return totals, leaked, landed_outside, root


def check(base: Path, seconds: float) -> None:
    totals, leaked, landed_outside, root = race(base, seconds)
    print(f"\n{seconds:.0f} s of racing: {totals}, reads of the outside secret: {leaked}, "
          f"files outside: {len(landed_outside)}")
    assert landed_outside == []
    assert leaked == 0
    assert not [name for name in totals if name.startswith("untyped")], totals
    assert totals.get("written", 0) > 50 and totals.get("PathOutsideRoot", 0) > 0, totals  # it did race
    assert not temp_files(root)
    with Coordinator.open(root) as coord:
        assert coord.backend.list_intents() == []
        coord.journal.verify()


def test_a_directory_swapped_for_a_symlink_never_redirects_a_byte(tmp_path):
    check(tmp_path, seconds=5.0)


@pytest.mark.slow
def test_a_directory_swapped_for_a_symlink_never_redirects_a_byte_long(tmp_path):
    check(tmp_path, seconds=15.0)  # 40 s runs gave the same: nothing outside
