"""A FIFO, socket, device or directory at a key is refused at once with NotARegularFile (never
opened for blocking I/O, so nothing hangs and the key is not blocked), and errors from the file
side (a file turned into a directory, a parent directory gone or turned into a file) are typed
CoherenceErrors with a recover hint, never raw OSErrors.

Each operation runs in a child process with a deadline, so a hang fails the test instead of
hanging the suite."""

from __future__ import annotations

import os
import shutil
import socket
import stat

import pytest

from agent_coherence import CoherenceError, Coordinator, DurabilityError, NotARegularFile, faults

from conftest import FORK, temp_files

DEADLINE = 5.0  # seconds a child gets for one operation; a blocking open would take for ever


def _run(root: str, operation: str, result: "FORK.Queue") -> None:  # type: ignore[name-defined]
    coord = Coordinator.open(root)
    calls = {
        "read": lambda: coord.read("special"),
        "write": lambda: coord.write("special", b"new", holder="h"),
        "delete": lambda: coord.delete("special", holder="h"),
        "adopt": lambda: coord.adopt("special"),
        "update": lambda: coord.update("special", lambda old: old + b"!", holder="h"),
    }
    try:
        calls[operation]()
        result.put(("returned", None, None))
    except CoherenceError as error:
        result.put((type(error).__name__, getattr(error, "kind", None), error.recover))
    except BaseException as error:  # an untyped error escaped: report it as one
        result.put(("untyped " + type(error).__name__, None, None))


def run_in_child(root, operation: str) -> tuple[str, str | None, str | None]:
    result = FORK.Queue()
    child = FORK.Process(target=_run, args=(str(root), operation, result))
    child.start()
    child.join(DEADLINE)
    if child.is_alive():
        child.kill()
        child.join()
        return ("hung", None, None)
    return result.get(timeout=1)


def make_fifo(path) -> None:
    os.mkfifo(path)


def make_socket(path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    return sock


def make_device(path) -> None:
    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers


KINDS = ["FIFO", "socket", "character device"]
OPERATIONS = ["read", "write", "delete", "adopt", "update"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_non_regular_file_at_a_key_is_refused_at_once(root, kind, operation):
    Coordinator.open(root).close()
    path = root / "special"
    keep = None
    if kind == "FIFO":
        make_fifo(path)
    elif kind == "socket":
        keep = make_socket(path)
    else:
        if os.geteuid() != 0:
            pytest.skip("creating a device node needs root")
        make_device(path)
    try:
        outcome = run_in_child(root, operation)
        assert outcome[:2] == ("NotARegularFile", kind)
        assert outcome[2] and "regular file" in outcome[2]
        assert stat.S_IFMT(os.lstat(path).st_mode) != stat.S_IFREG  # left as it was
        assert not temp_files(root)
        with Coordinator.open(root) as coord:
            assert coord.backend.get_intent("special") is None  # the key is not blocked
            assert coord.leases() == []
            os.unlink(path)
            assert coord.write("special", b"a file now", holder="other").version == 1
    finally:
        if keep is not None:
            keep.close()


def test_a_fifo_refusal_carries_the_facts(coord, root):
    make_fifo(root / "pipe")
    with pytest.raises(NotARegularFile) as caught:
        coord.read("pipe")
    assert (caught.value.key, caught.value.path, caught.value.kind) == ("pipe", str(root / "pipe"), "FIFO")


def test_read_racing_a_file_turned_into_a_directory_never_raises_untyped(root):
    """A child flips a.txt between a file and a directory; reads in the parent meet every state."""
    with Coordinator.open(root) as coord:
        coord.write("a.txt", b"x", holder="h")
    stop = FORK.Event()

    def flipper() -> None:
        os.chdir(root)
        os.mkdir("d")
        while not stop.is_set():  # a.txt: a file, then a directory, then a file again
            try:
                os.rename("a.txt", "f.tmp")
                os.rename("d", "a.txt")
                os.rename("a.txt", "d")
                os.rename("f.tmp", "a.txt")
            except OSError:
                pass

    child = FORK.Process(target=flipper)
    child.start()
    seen: dict[str, int] = {}
    try:
        with Coordinator.open(root) as coord:
            for _ in range(2000):
                try:
                    coord.read("a.txt")
                    seen["ok"] = seen.get("ok", 0) + 1
                except CoherenceError as error:
                    seen[type(error).__name__] = seen.get(type(error).__name__, 0) + 1
    finally:
        stop.set()
        child.join(10)
    assert sum(seen.values()) == 2000, seen  # every read returned or raised a typed error


def test_write_when_the_parent_directory_vanishes_is_a_durability_error(coord, root):
    coord.write("sub/a.txt", b"old", holder="h")

    def remove_the_parent(step: str) -> None:
        shutil.rmtree(root / "sub")

    with faults.inject("open_temp", remove_the_parent):
        with pytest.raises(DurabilityError) as caught:
            coord.write("sub/a.txt", b"new", holder="h")
    assert caught.value.step == "open_temp" and caught.value.recover
    assert coord.backend.get_intent("sub/a.txt") is None and not temp_files(root)
    # the file is gone (removed around the layer): the next write refuses with ForeignEdit, as for
    # any deletion around the layer
    assert coord.read("sub/a.txt").foreign_edit


def test_write_when_a_parent_became_a_file_is_a_durability_error_with_a_hint(coord, root):
    coord.write("sub/a.txt", b"old", holder="h")
    coord.delete("sub/a.txt", holder="h")
    os.rmdir(root / "sub")
    (root / "sub").write_bytes(b"a file where the directory was")
    with pytest.raises(CoherenceError) as caught:
        coord.write("sub/a.txt", b"new", holder="h")
    assert isinstance(caught.value, DurabilityError) and caught.value.step == "directory"
    assert "directory on the key's path" in caught.value.recover
    assert coord.backend.get_intent("sub/a.txt") is None and coord.leases() == []
    assert (root / "sub").read_bytes() == b"a file where the directory was"


def test_write_racing_a_parent_that_is_removed_and_recreated_never_raises_untyped(root):
    with Coordinator.open(root) as coord:
        coord.write("d/a.txt", b"x", holder="h")
    stop = FORK.Event()

    def remover() -> None:
        while not stop.is_set():
            shutil.rmtree(root / "d", ignore_errors=True)

    child = FORK.Process(target=remover)
    child.start()
    outcomes: dict[str, int] = {}
    try:
        with Coordinator.open(root) as coord:
            for i in range(200):
                try:
                    coord.write(f"d/f{i}.txt", b"data", holder="h")
                    outcomes["ok"] = outcomes.get("ok", 0) + 1
                except CoherenceError as error:
                    outcomes[type(error).__name__] = outcomes.get(type(error).__name__, 0) + 1
    finally:
        stop.set()
        child.join(10)
    assert sum(outcomes.values()) == 200, outcomes
    with Coordinator.open(root) as coord:
        assert coord.backend.list_intents() == []
