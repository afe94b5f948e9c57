"""The Coordinator: leases, versions, confirmed writes, reads, and recovery of interrupted writes.

A write is confirmed or it raises. The sequence, for one artifact:

1. ``begin_write`` in the backend: check the caller's lease (or take one for this write) and the
   expected version, and record an *intent* (key, next version, new hash). While the intent exists
   no other write to the key can begin, so the file step below has a single writer.
2. Check that the bytes on disk still have the recorded hash, else ``ForeignEdit``.
3. Temp file in the target's directory, fsync, a last fence check, rename, directory fsync, read
   back and compare the hash.
4. ``commit_write``: bump the version atomically with the fence check (a FULL-sync commit).

Every file step reaches the file from the root through directory descriptors opened
``O_NOFOLLOW`` (:mod:`rooted`), so a directory swapped for a symlink mid-write is refused, never
followed; a FIFO, socket, device or directory at the key is refused (``NotARegularFile``).

Any failure or interruption (KeyboardInterrupt and every other BaseException too) puts the old bytes
back if they had been replaced, resolves the intent, journals the failure and raises: a typed error
for a failure, the interruption itself otherwise; a write interrupted after its commit is complete.
An undo that cannot be recorded (disk full) is retried in the background until it can be, and
the caller still gets its ``DurabilityError`` (the undo and the errors: :mod:`write_undo`). A
crash leaves the intent for recovery: on open (and whenever a later writer meets it) the intent of
a dead writer is rolled forward if the disk holds its bytes, back otherwise.

Scope: enforced for writers that use the layer; edits that bypass it are detected (by hash, at the
next read or write), not prevented.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Callable

from . import arguments, faults, file_step, recovery, stamps
from .arguments import ForeignPolicy
from .backends import check_url, open_backend
from .backends.base import Backend, IntentPending, IntentRecord, WriteRequest
from .durable import StepFailed, WrittenAhead, sha256_hex, temp_path_for
from .errors import BackendUnavailable, CoherenceError, LeaseHeld, LeaseLost, VersionConflict
from .journal import Journal
from .last_written import LastWritten
from .retention import CompactionReport, Retention
from .leases import LeaseContext, LeaseKeeper, LeaseKeys, acquire
from .overlap import Overlap
from .models import Lease, Snapshot, VersionInfo, WriteReceipt
from .paths import ArtifactPath, normalize_key, resolve_file_key
from .rooted import KeyFile
from .write_undo import Progress, WriteUndo, disk_full, durability_error, foreign_error, in_flight

if TYPE_CHECKING:
    from .channel import Channel
    from .liveness import Liveness
    from .temp_sweep import TempSweep

EMPTY_SHA256 = sha256_hex(b"")
# How long a read waits for another write caught between its rename and its commit. Only the time
# the backend answers counts: a reader held up by the backend itself (a server outage, which the
# writer's commit waits out too) still has its whole patience when the backend is back.
READ_PATIENCE = 5.0
READ_POLL = 0.05


def _make_root(root: str, url: str | None) -> None:
    """Create the workspace root if missing; a root that cannot be a directory (it, or a parent
    of it, is a file; no permission) is a BackendUnavailable naming it, not a bare OSError."""
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as error:
        why = "it exists and is not a directory" if isinstance(error, FileExistsError) \
            else error.strerror or str(error)
        raise BackendUnavailable(
            f"cannot use {root} as the workspace root: {why}",
            recover=f"give a root that is (or can be made) a directory: move whatever is at {root} "
                    "(or a parent of it that is a file) out of the way, or check the permissions",
            backend="sqlite" if url is None else url.partition(":")[0], detail=str(error),
            errno=error.errno, reason="root", path=root,
        ) from error


def _not_a_lease(call: str, value: object) -> TypeError:
    return TypeError(f"{call}: lease must be a Lease (from coord.lease or coord.acquire), not {type(value).__name__}")


class Coordinator:
    """Coordinates writers of the artifacts under one workspace root.

    Many coordinators in many processes on the same root share one consistent state through the
    backend. Thread-safe. Open with :meth:`open`.
    """

    def __init__(
        self,
        root: str,
        backend: Backend,
        *,
        default_ttl: float = 30.0,
        on_foreign_edit: ForeignPolicy = "raise",
        update_attempts: int = 500,
        update_deadline: float = 60.0,
        optimistic_attempts: int = 8,
        retention: Retention | None = None,
    ) -> None:
        self.root = os.path.realpath(root)
        self.backend = backend
        arguments.check_settings(dict(default_ttl=default_ttl, on_foreign_edit=on_foreign_edit,
                                      update_attempts=update_attempts, update_deadline=update_deadline,
                                      optimistic_attempts=optimistic_attempts))
        self.default_ttl = float(default_ttl)
        self.on_foreign_edit = on_foreign_edit
        self.update_attempts = update_attempts
        self.update_deadline = float(update_deadline)
        self.optimistic_attempts = optimistic_attempts
        self.journal = Journal(backend, canonical=lambda key: normalize_key(self.root, key))
        if retention is not None:  # stored in the backend: every process on the state applies it
            if not isinstance(retention, Retention):
                raise TypeError(f"retention must be a Retention or None, not {retention!r}")
            backend.retention(retention)
        self._extensions: dict[str, Any] = {}
        self._overlap = Overlap()
        self._lease_keys = LeaseKeys(self.root)
        self._undo = WriteUndo(backend, self.root)
        self._last_written = LastWritten()  # lets a check of the disk skip hashing bytes it wrote
        self.write_mode = stamps.mode(self.root)  # "stamp": files carry their version, no intent flush

    @classmethod
    def open(cls, root: str | bytes | os.PathLike[str] | os.PathLike[bytes] = ".", url: str | None = None, *,
             recover: bool = True, create: bool = True, **options: Any) -> "Coordinator":
        """Open the coordinator for ``root``: the embedded SQLite backend under
        ``<root>/.agent-coherence/`` when ``url`` is None, else the backend the URL names.
        Interrupted writes of dead processes are recovered unless ``recover=False``. A missing
        root, state database (or an empty database file) or PostgreSQL schema is created unless
        ``create=False``, which raises BackendUnavailable (``reason="missing"``) instead and
        creates nothing: for tools that only look, so a mistyped root or schema is reported
        rather than made. Settings (``default_ttl``, ``on_foreign_edit``, ...) are checked before
        anything is opened. An open that fails or is interrupted (KeyboardInterrupt too) closes
        the backend it made."""
        real_root = os.path.realpath(arguments.root_path(root))
        arguments.check_settings(options)  # refuse bad settings, and a bad URL, before touching the disk
        check_url(url)
        if create:
            _make_root(real_root, url)
        elif not os.path.isdir(real_root):
            raise BackendUnavailable(
                f"no directory {real_root}: no agent-coherence state there",
                recover="check the root; a coordinator opened with create=True (the default) makes it",
                backend="filesystem", detail="no root directory", errno=None, reason="missing", path=real_root,
            )
        backend = open_backend(real_root, url, create=create)
        try:
            coordinator = cls(real_root, backend, **options)
            if recover:
                coordinator.recover()
        except BaseException:
            backend.close()
            raise
        return coordinator

    def close(self) -> None:
        """Close the backend's connections. Leases renewed in the background (``keep_alive``,
        ``lease(auto_renew=True)``, the LangGraph adapter's runs) are renewed no more: they expire
        on their ttl unless released first. The coordinator stays usable: its next call opens a
        new connection."""
        self.backend.close()

    def __enter__(self) -> "Coordinator":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def key(self, key: str | os.PathLike[str]) -> str:
        """The canonical key for ``key`` (raises PathOutsideRoot)."""
        return normalize_key(self.root, key)

    # -- leases -----------------------------------------------------------------------------

    def acquire(self, key: str | os.PathLike[str], holder: str, ttl: float | None = None, wait: float = 0.0) -> Lease:
        """Take the lease on ``key`` for ``holder`` (waiting up to ``wait`` s). Raises LeaseHeld.

        A refusal is journaled once per call (``conflict.lease``, with the seconds waited), when
        the call gives up, not once per retry while it waits."""
        return acquire(self.backend, self._lease_keys(key), arguments.holder_name(holder), self._ttl(ttl),
                       arguments.wait_seconds(wait), self._undo.unblock)

    def _ttl(self, ttl: float | None) -> float:
        return self.default_ttl if ttl is None else arguments.ttl_seconds(ttl)

    def renew(self, lease: Lease, ttl: float | None = None) -> Lease:
        """Extend ``lease``. Raises LeaseLost if it expired or was taken over."""
        try:
            key, holder, fence = lease.key, lease.holder, lease.fence
            ttl = lease.ttl if ttl is None else arguments.ttl_seconds(ttl)
        except AttributeError:
            raise _not_a_lease("renew", lease) from None
        return self.backend.renew_lease(key, holder, fence, ttl)

    def release(self, lease: Lease) -> bool:
        """Give ``lease`` up; False if it was already released or taken over (an expired lease
        nobody took since is released: True)."""
        try:
            key, holder, fence = lease.key, lease.holder, lease.fence
        except AttributeError:
            raise _not_a_lease("release", lease) from None
        return self.backend.release_lease(key, holder, fence)

    def lease(
        self, key: str | os.PathLike[str], holder: str, ttl: float | None = None, *, wait: float = 0.0,
        auto_renew: bool = False, on_lost: Callable[[LeaseLost], None] | None = None,
    ) -> LeaseContext:
        """``with coord.lease(key, holder=...) as lease:`` holds the lease for the block."""
        return LeaseContext(self.backend, self._lease_keys(key), arguments.holder_name(holder), self._ttl(ttl),
                            arguments.wait_seconds(wait), auto_renew, on_lost, self._undo.unblock)

    def keep_alive(self, lease: Lease, on_lost: Callable[[LeaseLost], None] | None = None) -> LeaseKeeper:
        """Start renewing ``lease`` every ttl/3 in the background; call ``.stop()`` when done."""
        if not isinstance(lease, Lease):
            raise _not_a_lease("keep_alive", lease)
        return LeaseKeeper(self.backend, lease, on_lost).start()

    def leases(self, holder: str | None = None) -> list[Lease]:
        """The live leases (of ``holder`` if given); each one's ``ttl`` is its span from
        ``acquired_at`` to ``expires_at``, as storage does not keep the ttl asked for."""
        return self.backend.list_leases(None if holder is None else arguments.holder_name(holder))

    # -- channels and liveness --------------------------------------------------------------

    def channel(self, name: str, **settings: Any) -> "Channel":
        """The acknowledged channel ``name``. Settings given here (visibility_timeout,
        max_attempts, dedup_ttl, durability, sla, retention) are stored for every process."""
        from .channel import Channel

        return Channel(self.backend, name, **settings)

    @property
    def liveness(self) -> "Liveness":
        """Heartbeats, assignments and the anomaly checks (see :mod:`agent_coherence.liveness`)."""
        if "liveness" not in self._extensions:
            from .liveness import Liveness

            self._extensions["liveness"] = Liveness(self.backend)
        return self._extensions["liveness"]

    # -- reads ------------------------------------------------------------------------------

    def version(self, key: str | os.PathLike[str]) -> VersionInfo | None:
        """The recorded version of ``key`` (None: never written through the layer), without
        reading the file. Raises PathOutsideRoot."""
        return self.backend.get_version(self.key(key))

    def read(self, key: str | os.PathLike[str]) -> Snapshot:
        """The bytes of ``key`` and their version, read together.

        A write caught between rename and commit is waited for (briefly), so the snapshot never
        pairs new bytes with an old version. Bytes changed outside the layer come back with
        ``foreign_edit=True``. Raises NotARegularFile (a FIFO, socket, device or directory at the
        key: refused at once, never waited on), PathOutsideRoot (a symlink swapped onto the path),
        DurabilityError (step "read": the file cannot be read, e.g. EACCES or EIO).
        """
        target = resolve_file_key(self.root, key)
        with KeyFile(self.root, target.key, target.path) as file:
            return self._read(target, file)

    def _read(self, target: ArtifactPath, file: KeyFile) -> Snapshot:
        patience = READ_PATIENCE
        while True:
            record = self.backend.get_version(target.key)
            data = self._read_file(target, file)
            disk_sha = self._disk_hash(target.key, data, record.sha256 if record else None)
            if record is not None and disk_sha == record.sha256:
                return Snapshot(key=target.key, path=target.path, data=data or b"", version=record.version,
                                sha256=disk_sha or EMPTY_SHA256, exists=data is not None)
            intent = self.backend.get_intent(target.key)
            if self.backend.get_version(target.key) != record:
                continue  # a commit slipped in between the reads
            if intent is None and disk_sha is not None:
                try:
                    if recovery.forward_from_stamp(self.backend, file, record, data, disk_sha) is not None:
                        continue  # a commit lost to power loss, recorded again: read it
                except (VersionConflict, IntentPending):
                    continue  # another write moved the record or began since: look again
            if record is None and (intent is None or intent.new_sha256 != disk_sha):
                # untracked bytes, or a first write not renamed into place yet
                return Snapshot(key=target.key, path=target.path, data=data or b"", version=0,
                                sha256=disk_sha or EMPTY_SHA256, exists=data is not None)
            if intent is not None and patience > 0:
                polled = time.monotonic()
                self._undo.settle(intent, wait=READ_POLL)  # a write between rename and commit: wait for it
                patience -= min(time.monotonic() - polled, READ_POLL)
                continue
            if self._read_file(target, file) != data:
                continue  # the disk moved under us (an aborted write being undone): look again
            return Snapshot(key=target.key, path=target.path, data=data or b"",
                            version=record.version if record else 0,
                            sha256=disk_sha or EMPTY_SHA256, exists=data is not None,
                            foreign_edit=record is not None,
                            recorded_sha256=record.sha256 if record else None)

    # -- writes -----------------------------------------------------------------------------

    def write(
        self, key: str | os.PathLike[str], data: bytes | str, *, lease: Lease | None = None,
        holder: str | None = None, expect_version: int | None = None, ttl: float | None = None,
        on_foreign_edit: ForeignPolicy | None = None,
    ) -> WriteReceipt:
        """Write ``data`` to ``key`` and confirm it durably, or raise.

        Give ``lease=`` (held via :meth:`lease`) or ``holder=`` (the lease is taken for this write,
        or reused if the holder already has it). ``expect_version`` makes it a compare-and-set.
        Raises LeaseHeld, LeaseLost, VersionConflict, ForeignEdit, DurabilityError,
        PathOutsideRoot, NotARegularFile, BackendUnavailable; on any of them the old bytes and
        version stand. ``data`` must be bytes-like or str (else TypeError, nothing written).

        Interrupted (KeyboardInterrupt or any other BaseException), the write is undone before the
        exception propagates, or, if it had already committed, left complete.
        """
        return self._change(key, arguments.payload_bytes(data), lease, holder, expect_version, ttl,
                            on_foreign_edit)

    def delete(
        self, key: str | os.PathLike[str], *, lease: Lease | None = None, holder: str | None = None,
        expect_version: int | None = None, ttl: float | None = None,
    ) -> WriteReceipt:
        """Remove the file durably as a new version (its receipt has ``size=0`` and the empty hash)."""
        return self._change(key, None, lease, holder, expect_version, ttl, None)

    def update(
        self, key: str | os.PathLike[str], fn: Callable[[bytes], bytes | str], *, holder: str,
        ttl: float | None = None, attempts: int | None = None, deadline: float | None = None,
    ) -> WriteReceipt:
        """Read-modify-write: ``fn(old_bytes) -> new_bytes``, committed only if nobody wrote in
        between; on a conflict it re-reads and calls ``fn`` again (so ``fn`` must be pure), with
        jittered exponential backoff, up to ``attempts`` tries or ``deadline`` seconds. A missing
        file reads as ``b""``.

        The first ``optimistic_attempts`` tries take no lock; after that each try waits for the
        key's lease and holds it across the read and the write, so a hot key cannot starve a
        writer for ever."""
        from tenacity import (
            Retrying, retry_if_exception_type, stop_after_attempt, stop_after_delay, wait_random_exponential,
        )

        # Checked here, not left to ``or``: 0 would silently mean the default, and a negative
        # count or deadline would still make one try.
        budget = self.update_deadline if deadline is None else arguments.ttl_seconds(deadline, "deadline")
        tries = self.update_attempts if attempts is None else arguments.attempt_limit(attempts)
        started = time.monotonic()
        retrying = Retrying(
            retry=retry_if_exception_type((VersionConflict, LeaseHeld)),
            stop=stop_after_attempt(tries) | stop_after_delay(budget),
            wait=wait_random_exponential(multiplier=0.0005, max=0.05),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                if attempt.retry_state.attempt_number > self.optimistic_attempts:
                    remaining = max(0.0, budget - (time.monotonic() - started))
                    with self.lease(key, holder, ttl, wait=remaining) as lease:
                        snapshot = self._readable(key)
                        # The version too: a writer elsewhere under the same holder name shares
                        # this lease (see docs/limits.md), and only the version catches its write.
                        return self.write(key, fn(snapshot.data), lease=lease, expect_version=snapshot.version)
                snapshot = self._readable(key)
                return self.write(key, fn(snapshot.data), holder=holder,
                                  expect_version=snapshot.version, ttl=ttl)
        raise AssertionError("unreachable")  # pragma: no cover

    def _read_file(self, target: ArtifactPath, file: KeyFile) -> bytes | None:
        """The bytes at the key (None: no file); an OS failure becomes DurabilityError("read")."""
        try:
            return file.read()
        except StepFailed as failed:
            raise durability_error(target, "read", failed.error) from failed.error
        except OSError as error:
            raise durability_error(target, "read", error) from error

    def _readable(self, key: str | os.PathLike[str]) -> Snapshot:
        """``read``, raising ForeignEdit (under the raise policy) instead of returning it."""
        snapshot = self.read(key)
        if snapshot.foreign_edit and self.on_foreign_edit == "raise":
            raise foreign_error(snapshot.key, snapshot.path, snapshot.recorded_sha256,
                                snapshot.sha256 if snapshot.exists else None, snapshot.version)
        return snapshot

    def adopt(self, key: str | os.PathLike[str], holder: str = "(adopted)") -> VersionInfo:
        """Accept the bytes now on disk (written around the layer) as a new version. A write to
        the key in flight is waited for (about 2 s, then LeaseHeld): its bytes are its own
        version, not an edit to adopt, and its commit would take the same version number."""
        target = resolve_file_key(self.root, key)
        holder = arguments.holder_name(holder)
        while True:
            record = self.backend.get_version(target.key)
            with KeyFile(self.root, target.key, target.path) as file:
                data = self._read_file(target, file)
            try:
                return self.backend.record_version(
                    target.key, holder, sha256_hex(data) if data is not None else None,
                    len(data) if data is not None else 0, fence=None,
                    expect_version=record.version if record else 0, kind="adopt", refuse_pending=True,
                )
            except IntentPending as pending:
                if not self._undo.settle(pending.intent, wait=2.0):
                    raise in_flight(pending.intent) from None

    def _change(
        self, key: str | os.PathLike[str], payload: bytes | None, lease: Lease | None,
        holder: str | None, expect_version: int | None, ttl: float | None,
        policy: ForeignPolicy | None,
    ) -> WriteReceipt:
        target = resolve_file_key(self.root, key)
        if lease is not None:
            try:
                lease_key, lease_holder, fence = lease.key, lease.holder, lease.fence
            except AttributeError:
                raise _not_a_lease("write", lease) from None
            if lease_key != target.key:
                raise ValueError(f"the lease is for {lease_key!r}, not {target.key!r}")
            if holder is not None and holder != lease_holder:
                # the write would be recorded under the lease's holder, not the one named
                raise ValueError(f"holder={holder!r} is not the lease's holder {lease_holder!r}: "
                                 "give lease= alone, or holder= alone")
            holder = lease_holder
        elif holder is not None:
            holder, fence = arguments.holder_name(holder), None
        else:
            raise TypeError("write needs lease= (from coord.lease) or holder= (who is writing)")
        ttl = self._ttl(ttl)
        if expect_version is not None:
            expect_version = arguments.expected_version(expect_version)
        policy = self.on_foreign_edit if policy is None else arguments.foreign_policy(policy)
        new_sha: str | None = None
        temp = temp_path_for(target.path)
        with KeyFile(self.root, target.key, target.path) as file, recovery.WriteClaim(temp) as claim:
            progress = Progress()
            intent: IntentRecord | None = None
            ahead: WrittenAhead | None = None
            # One handler from the intent's insert to the commit: an interrupt can land after any
            # call, including between a call's return and the use of its result.
            try:
                if payload is not None and self.write_mode == "stamp":
                    # The disk writes the new bytes while the intent is recorded and the old bytes
                    # checked; they stay unnamed (invisible, gone on a crash) until the intent is.
                    ahead = file.write_ahead(payload)
                new_sha = sha256_hex(payload) if payload is not None else None  # while the disk writes
                intent, old = self._begin(target, file, claim, holder, fence, new_sha, len(payload or b""),
                                          expect_version, ttl, policy)
                file_step.apply(self.backend, file, intent, payload, progress, temp.rpartition(os.sep)[2],
                                write_mode=self.write_mode, overlap=self._overlap, ahead=ahead)
                progress.step = "commit"
                faults.check("commit")
                # The intent is durable already: a commit lost to power loss is rolled forward to
                # the same version by recovery, so this commit need not flush.
                record = self.backend.commit_write(intent, durable=False)
            except BaseException as error:
                if ahead is not None:
                    ahead.discard()
                self._last_written.forget(target.key)
                if intent is None:  # stopped before the file step: nothing to put back
                    if not isinstance(error, CoherenceError):  # a refusal has cleaned up after itself
                        self._undo.abort_stray(target.key, temp, error, claim)
                    raise
                self._undo.fail(target, file, intent, old, progress, error, claim)
        if payload is None or new_sha is None:
            self._last_written.forget(target.key)
        else:
            self._last_written.remember(target.key, new_sha, payload)
        return WriteReceipt(target.key, target.path, record.version, new_sha or EMPTY_SHA256, record.size,
                            record.fence, holder, True, record.updated_at)  # positional: as WriteRequest

    def _begin(
        self, target: ArtifactPath, file: KeyFile, claim: recovery.WriteClaim, holder: str, fence: int | None,
        new_sha: str | None, size: int, expect_version: int | None, ttl: float, policy: ForeignPolicy,
    ) -> tuple[IntentRecord, bytes | None]:
        """Record the intent, then read the old bytes and check them against the record."""
        pid, pid_start = recovery.own_identity()
        request = WriteRequest(target.key, holder, new_sha, size, claim.temp_path, recovery.HOST, pid, pid_start,
                               fence, ttl, expect_version)  # positional (every field): the fast way to make one
        while True:
            intent = self._record_intent(target, request, claim)
            try:
                old = self._read_file(target, file)
            except BaseException as error:  # unreadable, not a regular file, or interrupted
                self._undo.abort_unread(intent, "read", error, claim)
                raise
            old_sha = self._disk_hash(target.key, old, intent.base_sha256)
            if intent.base_version == 0 and old is not None \
                    and self._forward_lost_commit(target, file, intent, old, old_sha):
                continue
            if intent.base_version == 0 or old_sha == intent.base_sha256:
                return intent, old
            recorded_sha = intent.base_sha256
            if self._forward_lost_commit(target, file, intent, old, old_sha):
                continue
            if policy != "adopt":
                self._undo.abort_unread(intent, "foreign_edit", f"disk {old_sha}, recorded {recorded_sha}", claim)
                raise foreign_error(target.key, target.path, recorded_sha, old_sha, intent.base_version)
            # Adopt the bytes on disk as a version of their own, then write on top of them: the
            # journal shows an "adopt" followed by the "write", and no failure.
            self.backend.abort_write(intent, "foreign_edit", "adopted", journal=False)
            try:  # another write may begin once this intent is gone: its commit would reuse the number
                self.backend.record_version(target.key, "(adopted)", old_sha, len(old or b""), fence=None,
                                            expect_version=intent.base_version, kind="adopt", refuse_pending=True)
            except IntentPending:
                pass  # begin again: recording the intent meets that write and waits for it

    def _disk_hash(self, key: str, data: bytes | None, recorded: str | None) -> str | None:
        """The sha256 of ``data`` (None for no file): ``recorded`` without hashing when ``data`` is
        the bytes this process last wrote under that hash (see :mod:`last_written`)."""
        if data is None:
            return None
        if recorded is not None and self._last_written.has_hash(key, recorded, data):
            return recorded
        return sha256_hex(data)

    def _forward_lost_commit(self, target: ArtifactPath, file: KeyFile, intent: IntentRecord,
                             old: bytes | None, old_sha: str | None) -> bool:
        """The disk differs from the record: if its stamp proves it is the next version (a commit
        lost to power loss), give up ``intent``, record that version and return True (the caller
        begins again on top of it); False for a foreign edit."""
        stamp = file.read_stamp() if old is not None else None
        if stamp is None or not stamp.proves(target.key, old_sha, intent.base_version + 1, intent.base_sha256):
            return False
        self.backend.abort_write(intent, "foreign_edit", "a lost commit found", journal=False)
        record = self.backend.get_version(target.key)
        try:
            return recovery.forward_from_stamp(self.backend, file, record, old, old_sha) is not None
        except (VersionConflict, IntentPending):
            return True  # another writer moved the record, or began, meanwhile: begin again

    def _record_intent(self, target: ArtifactPath, request: WriteRequest,
                       claim: recovery.WriteClaim) -> IntentRecord:
        """``begin_write``, recovering a dead writer's intent in the way. (An interruption inside it
        may leave the intent recorded: the caller looks it up by its temp path and aborts it.)"""
        while True:
            try:
                faults.check("intent")
                return self.backend.begin_write(request)
            except LeaseHeld:
                if self._undo.unblock(target.key):
                    continue
                raise
            except IntentPending as pending:
                if not self._undo.settle(pending.intent, wait=2.0):
                    raise in_flight(pending.intent) from None
            except OSError as error:
                raise durability_error(target, "intent", error) from error
            except BackendUnavailable as error:
                full = disk_full(target, "intent", error)
                if full is not None:
                    raise full from error
                raise

    # -- recovery and errors ----------------------------------------------------------------

    def compact(self, *, before: float | None = None, keep: int | None = None, dry_run: bool = False,
                steps: int | None = None) -> CompactionReport:
        """Apply the retention policy now, in bounded steps (one transaction each, so writers
        wait at most one step) until nothing is left or ``steps`` ran. ``before`` (a timestamp)
        and ``keep`` (journal entries) replace the policy's journal limits; ``dry_run`` counts
        what would go and changes nothing. Raises JournalCorrupt (removing nothing more) when
        the oldest entries do not verify."""
        if steps is not None:
            steps = arguments.count(steps, "steps")
        if dry_run:
            return self.backend.compact(before=before, keep=keep, dry_run=True)
        total = CompactionReport()
        done = 0
        while steps is None or done < steps:
            step = self.backend.compact(before=before, keep=keep)
            total.add(step)
            done += 1
            if not step.more:
                break
        return total

    def recover(self) -> list[recovery.Resolution]:
        """Resolve the intents of dead writers (also done on open). Returns what was resolved."""
        return recovery.recover_dead_writers(self.backend, self.root)

    def sweep_temp_files(self, *, dry_run: bool = False) -> "TempSweep":
        """Remove the temp files of writes that never reached their rename (left by a power loss
        or a killed process) under the root: only regular files with our temp names whose pid is
        dead on this host and that no intent names (see :mod:`temp_sweep`). Walks the whole root.
        ``dry_run`` lists what would go and removes nothing. Each removal is journalled
        (``recover.temp``)."""
        from .temp_sweep import sweep

        return sweep(self.backend, self.root, dry_run=dry_run)
