"""Recovery of interrupted writes: decide whether an intent's writer is dead, then roll the intent
forward (the new bytes are on disk) or back (they are not), removing its temp file; and the undo of
a failed write, retried in the background when it cannot be finished at once.

A writer on this host is judged by its process (pid plus the process's start time, so a recycled
pid is not mistaken for the writer); within this process, by whether a thread is still performing
(or undoing) that write, so an intent an interrupted write left behind is recovered here too, not
left blocking the key for the process's lifetime. A writer on another host cannot be probed, so it
is judged by its lease: once the lease it wrote under is gone, the intent is resolved.

An undo that cannot be finished (the database or the disk is full, the database is unreachable)
is retried on a daemon thread until it is: the key stays blocked meanwhile (the old bytes are kept
in memory, nothing is lost) and is free within half a second of the space coming back. If the
process exits first, its intent is recovered as a dead writer's.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from functools import lru_cache

from . import stamps
from .backends.base import Backend, IntentRecord, VersionRecord
from .durable import StepFailed, is_enospc, sha256_hex
from .errors import CoherenceError
from .rooted import KeyFile

# This host's identity in intents. AGENT_COHERENCE_HOST overrides it: hosts that share a hostname
# (containers) must set distinct ones, and tests use it to stand for another host.
HOST = os.environ.get("AGENT_COHERENCE_HOST") or socket.gethostname()

UNCHANGED = object()
"""``old`` for an undo whose target was never replaced (nothing to put back)."""

_WRITING: set[str] = set()  # temp paths of the writes this process's threads are performing or undoing


class WriteClaim:
    """Marks one write (by its temp path) as being performed by this process, for the length of a
    ``with`` block, or until its background undo finishes if it was handed to one."""

    __slots__ = ("temp_path", "deferred")

    def __init__(self, temp_path: str) -> None:
        self.temp_path = temp_path
        self.deferred = False

    def __enter__(self) -> "WriteClaim":
        _WRITING.add(self.temp_path)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.deferred:
            _WRITING.discard(self.temp_path)


def process_start(pid: int) -> str:
    """The kernel's start time of ``pid`` (clock ticks since boot), '' if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    except OSError:
        return _alive_by_signal(pid)
    fields = stat[stat.rfind(b")") + 2:].split()
    if fields and fields[0] == b"Z":  # a zombie process has exited; it just has not been reaped
        return ""
    return fields[19].decode() if len(fields) > 19 else "?"


def _alive_by_signal(pid: int) -> str:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return ""
    except PermissionError:
        pass
    return "?"


@lru_cache(maxsize=1)
def _own_identity() -> tuple[int, str]:
    return os.getpid(), process_start(os.getpid())


def own_identity() -> tuple[int, str]:
    """(pid, start time) of this process; recomputed after fork."""
    pid, start = _own_identity()
    if pid != os.getpid():
        _own_identity.cache_clear()
        pid, start = _own_identity()
    return pid, start


def writer_is_dead(backend: Backend, intent: IntentRecord) -> bool:
    if intent.host == HOST:
        pid, own_start = own_identity()
        if intent.pid == pid:
            if intent.pid_start in (own_start, "", "?"):
                return intent.temp_path not in _WRITING  # no thread of this process is on it
            return True  # an earlier process that had the same pid
        start = process_start(intent.pid)
        if not start:
            return True
        return start != "?" and intent.pid_start not in ("", "?") and start != intent.pid_start
    lease = backend.get_lease(intent.key)
    return lease is None or (lease.holder, lease.fence) != (intent.holder, intent.fence)


@dataclass(frozen=True, slots=True)
class Resolution:
    key: str
    intent_id: str
    rolled_forward: bool


def resolve(backend: Backend, root: str, intent: IntentRecord) -> Resolution:
    """Resolve one intent whose writer is dead: forward if the disk holds its bytes, else back.
    The file is reached through the root (see :mod:`rooted`); a file that cannot be read there
    (gone, not regular, behind a swapped-in symlink) does not hold the new bytes."""
    with KeyFile(root, intent.key) as file:
        file.remove_temp(temp_name(intent))
        try:
            data = file.read()
        except (OSError, CoherenceError):
            data = None
    disk_sha = sha256_hex(data) if data is not None else None
    forward = disk_sha == intent.new_sha256
    backend.resolve_intent(intent, roll_forward=forward)
    return Resolution(intent.key, intent.intent_id, forward)


def stamp_for(intent: IntentRecord) -> bytes:
    """The stamp a write of ``intent`` puts on its file (see :mod:`stamps`)."""
    return stamps.encode_fields(intent.intent_id, intent.key, intent.holder, intent.fence, intent.new_version,
                                intent.new_sha256 or "", intent.base_sha256)


def forward_from_stamp(backend: Backend, file: KeyFile, record: VersionRecord | None,
                       data: bytes | None, disk_sha: str | None) -> VersionRecord | None:
    """Roll the record forward to the write whose bytes and stamp are on disk, if the stamp proves
    that the disk holds the next version of ``record`` and that write was never undone; None (the
    disk is a foreign edit, or not ours to decide) otherwise. The caller holds no intent on the key.

    The rules (docs/concepts.md, "Recovery from the stamp"): the stamp names this key, its sha256
    is the disk's, its version is the record's plus one and its base hash the record's (so the
    write built on exactly what is recorded), and the journal holds no failure or roll-back of its
    intent. Then the lost commit is recorded again (``recover.stamp``); a race with another
    writer is refused by the version check (VersionConflict), and a write that began since the
    caller looked (its intent would take the same version number) by IntentPending: either way
    the caller looks again.
    """
    if data is None:
        return None
    stamp = file.read_stamp()
    version = record.version if record else 0
    if stamp is None or not stamp.proves(file.key, disk_sha, version + 1, record.sha256 if record else None):
        return None
    for entry in backend.journal_entries(key=file.key):
        if entry.kind in ("write.failed", "recover.back") and entry.data.get("intent") == stamp.intent_id:
            return None  # that write was refused or rolled back: its bytes on disk are foreign
    holder = stamp.holder if stamp.holder is not None else stamps.RECOVERED_HOLDER  # format 2 may leave it out
    return backend.record_version(file.key, holder, disk_sha, len(data), fence=None,
                                  expect_version=version, kind="recover.stamp", refuse_pending=True)


def temp_name(intent: IntentRecord) -> str:
    """The intent's temp file, as a name in the key's directory."""
    return os.path.basename(intent.temp_path)


def undo(backend: Backend, file: KeyFile, intent: IntentRecord, old: object, step: str, detail: str) -> bool:
    """Undo a failed or interrupted write of this process: remove its temp file, put the old bytes
    back (``old``: the bytes, None for no file, UNCHANGED if the target was never replaced), then
    resolve the intent with a ``write.failed`` entry.

    Returns False, touching nothing, if the intent is gone already (the write committed before an
    interruption). Raises (OSError, StepFailed, CoherenceError) when the old bytes cannot be put
    back for lack of space, or the intent cannot be resolved: call again later. A restore that
    fails for another reason is given up (it would fail again): the intent is resolved, the detail
    says so, and the next access reports ForeignEdit.
    """
    current = backend.get_intent(intent.key)
    if current is None or current.intent_id != intent.intent_id:
        return False
    file.remove_temp(temp_name(intent))
    if old is not UNCHANGED:
        try:
            if old is None:
                file.remove()
            else:
                file.replace(old, temp_name(intent))  # type: ignore[arg-type]
        except (OSError, StepFailed, CoherenceError) as error:
            cause = error.error if isinstance(error, StepFailed) else error
            if isinstance(cause, OSError) and is_enospc(cause):
                raise
            detail += f"; restoring the old bytes failed too ({error}): the next access reports ForeignEdit"
            file.clear_stamp()  # the bytes left are not a version: the journal entry says so too
    backend.abort_write(intent, step, detail)
    return True


def undo_later(backend: Backend, root: str, intent: IntentRecord, old: object, step: str, detail: str,
               claim: WriteClaim) -> None:
    """Retry :func:`undo` on a daemon thread until it succeeds; the write stays claimed (so no
    thread of this process recovers it meanwhile) until then."""
    import threading

    claim.deferred = True

    def retry() -> None:
        delay = 0.02
        try:
            while True:
                time.sleep(delay)
                try:
                    with KeyFile(root, intent.key) as file:
                        undo(backend, file, intent, old, step, detail)
                    return
                except Exception:  # OSError, StepFailed, CoherenceError: not yet possible
                    delay = min(delay * 2, 0.5)
        finally:
            _WRITING.discard(claim.temp_path)

    threading.Thread(target=retry, name=f"agent-coherence-undo:{intent.key}", daemon=True).start()


def recover_dead_writers(backend: Backend, root: str) -> list[Resolution]:
    """Resolve every intent whose writer is dead. Safe to run from several processes at once."""
    return [
        resolve(backend, root, intent)
        for intent in backend.list_intents()
        if writer_is_dead(backend, intent)
    ]
