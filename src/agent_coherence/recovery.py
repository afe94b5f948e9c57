"""Recovery of interrupted writes: decide whether an intent's writer is dead, then roll the intent
forward (the new bytes are on disk) or back (they are not), removing its temp file.

A writer on this host is judged by its process (pid plus the process's start time, so a recycled
pid is not mistaken for the writer). A writer on another host cannot be probed, so it is judged by
its lease: once the lease it wrote under is gone, the intent is resolved.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import lru_cache

from .backends.base import Backend, IntentRecord
from .durable import file_sha256, remove_quietly

# This host's identity in intents. AGENT_COHERENCE_HOST overrides it: hosts that share a hostname
# (containers) must set distinct ones, and tests use it to stand for another host.
HOST = os.environ.get("AGENT_COHERENCE_HOST") or socket.gethostname()


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
        if intent.pid == os.getpid():
            return False  # this process (another thread may be mid-write)
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
    """Resolve one intent whose writer is dead: forward if the disk holds its bytes, else back."""
    remove_quietly(intent.temp_path)
    disk_sha = file_sha256(os.path.join(root, intent.key))
    forward = disk_sha == intent.new_sha256
    backend.resolve_intent(intent, roll_forward=forward)
    return Resolution(intent.key, intent.intent_id, forward)


def recover_dead_writers(backend: Backend, root: str) -> list[Resolution]:
    """Resolve every intent whose writer is dead. Safe to run from several processes at once."""
    return [
        resolve(backend, root, intent)
        for intent in backend.list_intents()
        if writer_is_dead(backend, intent)
    ]
