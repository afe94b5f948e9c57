"""One coordinated tool call: the leases on the files it writes, held for the call, and what is
checked before and after it.

Before the call (:func:`begin_call`): every target path is confined to the workspace root (and to
the tool's own directory when it has one) and refused if it escapes through ``..``, an absolute
path elsewhere or a symlink; the lease on each file is taken, waiting up to ``lease_wait`` seconds
for another holder to finish, so parallel calls on one file run one after the other, across threads
and processes; and each file is checked: a FIFO, socket or device at the path is a
``NotARegularFile`` (the tool never opens it), bytes changed outside the layer are a ``ForeignEdit``, and
a file written by someone else since this agent last read it (through the layer) is a
``VersionConflict``.

After the call (:meth:`GuardedCall.confirm`): for a tool that wrote the files itself, each file is
fsynced (with its directory), hashed and recorded as a new version under the call's lease, and the
agent's view (if it read the file) moves there; a file the tool said it wrote but that does not exist, or that could not
be confirmed durable, or whose lease was lost during the call, comes back as a :class:`Refusal`.

Each call takes its leases as ``<holder>#<pid>-<n>``, its own holder, so two parallel calls by one agent
exclude each other too; what the agent has read (its view) is kept under ``holder``.

Leases are renewed while a call runs. Enforced for writers that use the layer; an edit around it
is detected at the next coordinated access, not prevented.
"""

from __future__ import annotations

import itertools
import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ...errors import CoherenceError, ForeignEdit, NotARegularFile, PathOutsideRoot, VersionConflict
from ...hashing import sha256_hex
from ...paths import ArtifactPath, resolve_file_key
from ...tool_writes import file_sha256, read_synced, record_tool_bytes, special_file
from .failures import PREFIX, Refusal, refusal_for

if TYPE_CHECKING:
    from ...coordinator import Coordinator
    from ...leases import LeaseKeeper
    from ...models import Lease

_CALLS = itertools.count(1)


def default_holder() -> str:
    """``crewai:<host>:<pid>``, computed when a call starts (so a forked child gets its own)."""
    return f"crewai:{socket.gethostname()}:{os.getpid()}"


class Refused(Exception):
    """A call that must not run (or whose result must not be reported as a success)."""

    def __init__(self, refusal: Refusal) -> None:
        self.refusal = refusal
        super().__init__(refusal.message)


@dataclass
class Target:
    """One file of a call: as the model named it, its key and path, the call's lease on it, and
    the (sha256, version) it had when the lease was taken."""

    shown: str
    artifact: ArtifactPath
    lease: Lease | None = None
    before_sha: str | None = None
    before_version: int = 0


@dataclass
class GuardedCall:
    """The leases and checks around one tool call (see the module doc). Use :meth:`close` (always,
    in a ``finally``) to release the leases."""

    coord: Coordinator
    holder: str
    call_holder: str
    targets: list[Target]
    keepers: list[LeaseKeeper] = field(default_factory=list)

    def confirm(self, kind: str = "write.crewai", expect_written: bool = True, said: object = None) -> list[Refusal]:
        """After a tool wrote the files itself: confirm and record each changed file as a new
        version under the call's lease. ``expect_written``: the call did not report a failure, so
        a missing file is a problem (``said``: what the tool returned, quoted to the model).
        Returns the problems (empty: every write confirmed)."""
        backend = self.coord.backend
        problems: list[Refusal] = []
        for target in self.targets:
            try:
                data = read_synced(target.artifact.path)
            except OSError as error:
                problems.append(Refusal("WriteUnconfirmed", (
                    f"{PREFIX}{target.shown} could not be confirmed on disk ({error.strerror or error}). "
                    f"Read the file and write it again if it is wrong."), True, {"key": target.artifact.key}))
                continue
            sha = sha256_hex(data) if data is not None else None
            if sha == target.before_sha:
                if data is None and expect_written:
                    answer = f" (the tool answered {str(said)[:200]!r})" if said is not None else ""
                    problems.append(Refusal("WriteUnconfirmed", (
                        f"{PREFIX}{target.shown} does not exist on disk after the call{answer}: the write did "
                        f"not happen. Check the path and write the file again."), True,
                        {"key": target.artifact.key}))
                continue
            fence = target.lease.fence if target.lease is not None else None
            record, lost = record_tool_bytes(backend, target.artifact.key, self.call_holder, sha,
                                             len(data or b""), fence=fence, kind=kind)
            advance_view(self.coord, self.holder, target.artifact.key, record.version, sha)
            if lost is not None:
                problems.append(Refusal("LeaseLost", (
                    f"{PREFIX}your write to {target.shown} landed, but the file's lease was lost while the tool "
                    f"ran, so another writer may have written it at the same time. Read the file and check "
                    f"that nothing was lost before going on."), True, {"key": target.artifact.key}))
        return problems

    def close(self) -> None:
        """Stop renewing and release every lease of the call (a lost one is simply gone)."""
        for keeper in self.keepers:
            keeper.stop()
        for target in self.targets:
            if target.lease is not None:
                try:
                    self.coord.release(target.lease)
                except CoherenceError:
                    pass  # the lease expires on its own; nothing to undo
                target.lease = None


def advance_view(coord: Coordinator, agent: str, key: str, version: int, sha: str | None) -> None:
    """After the agent's own write: if it had read the file, its view moves to the version it
    wrote (it knows those bytes). An agent that never read the file gets no view: its writes are
    not checked against reads it never made."""
    if coord.backend.get_view(agent, key) is not None:
        coord.backend.put_view(agent, key, version, sha)


def resolve_target(coord: Coordinator, shown: str, path: str, confine: str | None) -> ArtifactPath:
    """The confined key of ``path`` (raises PathOutsideRoot), also inside ``confine`` if given."""
    artifact = resolve_file_key(coord.root, path)
    if confine is not None and not artifact.path.startswith(confine.rstrip(os.sep) + os.sep):
        raise PathOutsideRoot(f"refused key {shown!r}: resolves outside the tool's directory",
                              key=shown, root=confine, reason="resolves outside the tool's directory "
                              "(through '..', an absolute path or a symlink)")
    return artifact


def begin_call(
    coord: Coordinator, holder: str | None, paths: list[tuple[str, str]], *, lease_wait: float,
    ttl: float | None = None, confine: str | None = None, renew: bool = True, check_disk: bool = True,
) -> GuardedCall:
    """Take the leases for a call writing ``paths`` ((as shown, as opened) pairs) and check them.
    ``check_disk=False`` skips hashing the bytes on disk, for a caller whose write is
    ``Coordinator.write`` (which checks them itself). Raises :class:`Refused`; on any failure,
    leases already taken are released."""
    agent = holder or default_holder()
    targets: dict[str, Target] = {}
    for shown, path in paths:
        try:
            artifact = resolve_target(coord, shown, path, confine)
        except PathOutsideRoot as error:
            raise Refused(refusal_for(error, shown)) from error
        targets.setdefault(artifact.key, Target(shown, artifact))
    # The pid keeps the calls of forked processes apart even when they share a holder and the
    # counter's state.
    call_holder = f"{agent}#{os.getpid()}-{next(_CALLS)}"
    call = GuardedCall(coord, agent, call_holder, [targets[k] for k in sorted(targets)])
    try:
        for target in call.targets:  # in key order, so two calls never wait on each other crosswise
            target.lease = coord.acquire(target.artifact.key, call.call_holder, ttl, wait=lease_wait)
            if renew:
                call.keepers.append(coord.keep_alive(target.lease))
            check_current(coord, agent, target, check_disk)
    except CoherenceError as error:
        call.close()
        failing = next((t.shown for t in call.targets if t.artifact.key == error.facts.get("key")), None)
        raise Refused(refusal_for(error, failing or call.targets[0].shown)) from error
    except BaseException:
        call.close()
        raise
    return call


def check_current(coord: Coordinator, agent: str, target: Target, check_disk: bool = True) -> None:
    """Under the lease: the path is a regular file or nothing (else NotARegularFile), the bytes
    on disk are the recorded ones (else ForeignEdit, or adopted under the coordinator's ``adopt``
    policy), and the agent's last read, if any, is the current version (else VersionConflict).
    Records the state the call starts from on ``target``."""
    backend = coord.backend
    key = target.artifact.key
    record = backend.get_version(key)
    if not check_disk:
        disk_sha = record.sha256 if record is not None else None
    else:
        # A FIFO, socket or device would read as "no file" below, and the tool would then open
        # it: a FIFO blocks that call (its lease renewed for as long), a device acts on the bytes.
        kind = special_file(target.artifact.path)
        if kind is not None:
            raise NotARegularFile(f"{target.shown!r} is {kind}, not a regular file", key=key,
                                  path=target.artifact.path, kind=kind)
        disk_sha, _ = file_sha256(target.artifact.path)
    if record is not None and disk_sha != record.sha256:
        if coord.on_foreign_edit != "adopt":
            backend.journal_append("conflict.foreign", key, agent, {
                "version": record.version, "recorded_sha256": record.sha256, "disk_sha256": disk_sha})
            raise ForeignEdit(f"{key!r} was changed outside agent-coherence since version {record.version}",
                              key=key, path=target.artifact.path, recorded_sha256=record.sha256,
                              disk_sha256=disk_sha, version=record.version)
        record = backend.record_version(key, "(adopted)", disk_sha, os.path.getsize(target.artifact.path)
                                        if disk_sha else 0, fence=None, expect_version=record.version,
                                        kind="adopt")
    version = record.version if record is not None else 0
    view = backend.get_view(agent, key)
    if view is not None and view[0] != version:
        backend.journal_append("conflict.view", key, agent, {"seen": view[0], "version": version})
        raise VersionConflict(f"{key!r} is at version {version}, not the version {view[0]} {agent!r} read",
                              key=key, expected=view[0], actual=version)
    target.before_sha, target.before_version = disk_sha, version
