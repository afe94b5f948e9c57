"""Crash safety: ``kill -9`` at random instants during ``write()`` of 1-8 MiB payloads.

A child process writes one artifact in a loop (payload ``i`` is generated from a seed, so the
parent knows every valid content) and reports ``begin i`` / ``end i version`` through a pipe. The
parent kills it at a random instant, reopens the root (recovery runs on open) and checks: the file
holds exactly the last committed bytes or the in-flight write's bytes, never torn or empty; the
recorded version and hash match the disk; no temp file and no intent remain.

Some trials widen the window between rename and commit with the fault seam
(``AGENT_COHERENCE_FAULTS=commit:sleep=0.02``), and the test checks that recovery actually rolled
some of those writes forward.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import random
import select
import signal
import subprocess
import sys
import time

import pytest

from agent_coherence import Coordinator

from conftest import FORK, temp_files

KEY = "data/blob.bin"
MIB = 1 << 20
TRIALS = 200
COMMIT_WINDOW = "commit:sleep=0.02"
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def payload(seed: int, index: int) -> bytes:
    """Payload ``index`` of the run: 1-8 MiB, different from its neighbours in every KiB."""
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    size = MIB + int.from_bytes(digest[:4], "big") % (7 * MIB + 1)
    block = digest * 32  # 1 KiB
    return (block * (size // len(block) + 1))[:size]


def writer_loop(root: str, seed: int, start: int, fd: int) -> None:
    """Write payloads ``start, start+1, ...`` forever, reporting each through ``fd``."""
    try:
        with Coordinator.open(root) as coord:
            for index in range(start, start + 100_000):
                data = payload(seed, index)
                os.write(fd, f"B {index}\n".encode())
                receipt = coord.write(KEY, data, holder="writer")
                os.write(fd, f"E {index} {receipt.version}\n".encode())
    except BaseException as error:  # a report, then a hard exit: never return into pytest
        os.write(fd, f"X {error!r}\n".encode())
    os._exit(1)


def forked_writer(root: str, seed: int, start: int, fd: int, commit_window: bool) -> None:
    if commit_window:  # as a fresh process would: load the fault plan from the environment
        os.environ["AGENT_COHERENCE_FAULTS"] = COMMIT_WINDOW
        from agent_coherence import faults
        importlib.reload(faults)
    writer_loop(root, seed, start, fd)


def spawn_writer(root: str, seed: int, start: int, fd: int, how: str):
    """Start a writer: forked (cheap) or as a fresh interpreter with the fault in its environment."""
    if how == "subprocess":
        code = (f"import sys; sys.path.insert(0, {TESTS_DIR!r}); from test_crash import writer_loop; "
                f"writer_loop({root!r}, {seed}, {start}, {fd})")
        env = dict(os.environ, AGENT_COHERENCE_FAULTS=COMMIT_WINDOW)
        return subprocess.Popen([sys.executable, "-c", code], pass_fds=(fd,), env=env)
    proc = FORK.Process(target=forked_writer, args=(root, seed, start, fd, how == "fork+window"))
    proc.start()
    return proc


def read_lines(fd: int, buffer: bytearray, until_first: bool, timeout: float = 30.0) -> None:
    """Read what the child reported into ``buffer``: until its first line, or until EOF."""
    deadline = time.monotonic() + timeout
    while True:
        if until_first and b"\n" in buffer:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"the writer reported nothing within {timeout}s: {bytes(buffer)!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            buffer += chunk


def kill_and_reap(proc) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    if isinstance(proc, subprocess.Popen):
        proc.wait()
    else:
        proc.join()


def trial_plan(trials: int) -> list[str]:
    """How each trial's writer runs; every fourth trial has the wide rename-to-commit window."""
    plan = []
    for trial in range(trials):
        if trial % 4 != 3:
            plan.append("fork")
        else:
            plan.append("subprocess" if trial % 8 == 7 else "fork+window")
    return plan


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kill_9_during_write_leaves_old_or_new_bytes(root):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    sha_of: dict[int, str] = {}

    def digest(index: int) -> str:
        if index not in sha_of:
            sha_of[index] = hashlib.sha256(payload(seed, index)).hexdigest()
        return sha_of[index]

    with Coordinator.open(root) as coord:
        committed_index, committed_version = 0, coord.write(KEY, payload(seed, 0), holder="writer").version
    next_index = 1
    outcomes = {"old": 0, "new": 0}
    window_forward = forwards_seen = 0

    for trial, how in enumerate(trial_plan(TRIALS)):
        context = f"seed={seed} trial={trial} ({how})"
        read_fd, write_fd = os.pipe()
        proc = spawn_writer(str(root), seed, next_index, write_fd, how)
        os.close(write_fd)
        reports = bytearray()
        try:
            read_lines(read_fd, reports, until_first=True)  # the child is in its first write
            time.sleep(rng.uniform(0, 0.12))
        finally:
            kill_and_reap(proc)
        read_lines(read_fd, reports, until_first=False)
        os.close(read_fd)

        in_flight = None
        for line in reports.decode().splitlines():
            tag, *fields = line.split()
            assert tag != "X", f"{context}: the writer failed: {line}"
            if tag == "B":
                in_flight = int(fields[0])
                assert in_flight == next_index, context
            else:
                committed_index, committed_version = int(fields[0]), int(fields[1])
                assert committed_index == in_flight, context
                in_flight, next_index = None, committed_index + 1
        assert in_flight is None or in_flight == next_index

        with Coordinator.open(root) as coord:  # recovery runs here
            data = (root / KEY).read_bytes()
            assert data, f"{context}: the file is empty"
            disk_sha = hashlib.sha256(data).hexdigest()
            info = coord.version(KEY)
            if disk_sha == digest(committed_index):
                outcomes["old"] += 1
                expected_version = committed_version
            else:
                assert in_flight is not None and disk_sha == digest(in_flight), (
                    f"{context}: torn or unknown bytes on disk ({len(data)} bytes)")
                outcomes["new"] += 1
                expected_version = committed_version + 1
                committed_index, committed_version, next_index = in_flight, expected_version, in_flight + 1
            assert (info.version, info.sha256, info.size) == (expected_version, disk_sha, len(data)), context
            assert coord.backend.list_intents() == [], context
            assert coord.backend.get_lease(KEY) is None, context
            assert not temp_files(root), context
            snap = coord.read(KEY)
            assert not snap.foreign_edit and snap.version == expected_version, context
            forwards = coord.journal.count(kind="recover.forward", key=KEY)
            if how != "fork":
                window_forward += forwards - forwards_seen
            forwards_seen = forwards

    with Coordinator.open(root) as coord:
        coord.journal.verify()
        history = [e for e in coord.journal.history(KEY) if e.kind in ("write", "recover.forward")]
        assert [e.data["version"] for e in history] == list(range(1, committed_version + 1))
    assert outcomes["old"] + outcomes["new"] == TRIALS
    assert outcomes["new"] > 0 and outcomes["old"] > 0, outcomes
    assert window_forward > 0, "no kill landed between rename and commit: recovery never rolled forward"
