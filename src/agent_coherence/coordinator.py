"""The Coordinator: leases, versions, confirmed writes, reads, and recovery of interrupted writes.

A write is confirmed or it raises. The sequence, for one artifact:

1. ``begin_write`` in the backend: check the caller's lease (or take one for this write) and the
   expected version, and record an *intent* (key, next version, new hash). While the intent exists
   no other write to the key can begin, so the file step below has a single writer.
2. Check that the bytes on disk still have the recorded hash, else ``ForeignEdit``.
3. Temp file in the target's directory, fsync, a last fence check, rename, directory fsync, read
   back and compare the hash.
4. ``commit_write``: bump the version atomically with the fence check (a FULL-sync commit).

Any failure puts the old bytes back if they had been replaced, resolves the intent, journals the
failure and raises a typed error. A crash leaves the intent for recovery: on open (and whenever a
later writer meets it) the intent of a dead writer is rolled forward if the disk holds its bytes,
back otherwise.

Scope: enforced for writers that use the layer; edits that bypass it are detected (by hash, at the
next read or write), not prevented.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Callable, Literal

from . import faults, recovery
from .backends import open_backend
from .backends.base import Backend, IntentPending, IntentRecord, WriteRequest
from .durable import (
    StepFailed, ensure_parent, file_mode, fsync_dir, read_bytes, remove_quietly, replace_durably, sha256_hex,
    temp_path_for, write_temp, rename_into_place,
)
from .errors import (
    BackendUnavailable, DurabilityError, ForeignEdit, LeaseHeld, LeaseLost, VersionConflict,
)
from .journal import Journal
from .retention import CompactionReport, Retention
from .leases import LeaseContext, LeaseKeeper, acquire
from .overlap import Overlap
from .models import Lease, Snapshot, VersionInfo, WriteReceipt
from .paths import ArtifactPath, normalize_key, resolve_file_key

if TYPE_CHECKING:
    from .channel import Channel
    from .liveness import Liveness

ForeignPolicy = Literal["raise", "adopt"]
EMPTY_SHA256 = sha256_hex(b"")


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
        self.default_ttl = default_ttl
        self.on_foreign_edit = on_foreign_edit
        self.update_attempts = update_attempts
        self.update_deadline = update_deadline
        self.optimistic_attempts = optimistic_attempts
        self.journal = Journal(backend)
        if retention is not None:  # stored in the backend: every process on the state applies it
            if not isinstance(retention, Retention):
                raise TypeError(f"retention must be a Retention or None, not {retention!r}")
            backend.retention(retention)
        self._extensions: dict[str, Any] = {}
        self._overlap = Overlap()

    @classmethod
    def open(cls, root: str | os.PathLike[str] = ".", url: str | None = None, *, recover: bool = True,
             **options: Any) -> "Coordinator":
        """Open the coordinator for ``root``: the embedded SQLite backend under
        ``<root>/.agent-coherence/`` when ``url`` is None, else the backend the URL names.
        Interrupted writes of dead processes are recovered unless ``recover=False``."""
        real_root = os.path.realpath(os.fspath(root))
        os.makedirs(real_root, exist_ok=True)
        coordinator = cls(real_root, open_backend(real_root, url), **options)
        if recover:
            coordinator.recover()
        return coordinator

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Coordinator":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def key(self, key: str | os.PathLike[str]) -> str:
        """The canonical key for ``key`` (raises PathOutsideRoot)."""
        return normalize_key(self.root, key)

    # -- leases -----------------------------------------------------------------------------

    def acquire(self, key: str, holder: str, ttl: float | None = None, wait: float = 0.0) -> Lease:
        """Take the lease on ``key`` for ``holder`` (waiting up to ``wait`` s). Raises LeaseHeld."""
        return acquire(self.backend, self.key(key), holder, ttl or self.default_ttl, wait, self._unblock)

    def renew(self, lease: Lease, ttl: float | None = None) -> Lease:
        """Extend ``lease``. Raises LeaseLost if it expired or was taken over."""
        ttl = ttl or lease.ttl
        record = self.backend.renew_lease(lease.key, lease.holder, lease.fence, ttl)
        return Lease.from_record(record, ttl)

    def release(self, lease: Lease) -> bool:
        """Give ``lease`` up; False if it was already lost."""
        return self.backend.release_lease(lease.key, lease.holder, lease.fence)

    def lease(
        self, key: str, holder: str, ttl: float | None = None, *, wait: float = 0.0,
        auto_renew: bool = False, on_lost: Callable[[LeaseLost], None] | None = None,
    ) -> LeaseContext:
        """``with coord.lease(key, holder=...) as lease:`` holds the lease for the block."""
        return LeaseContext(self.backend, self.key(key), holder, ttl or self.default_ttl, wait,
                            auto_renew, on_lost, self._unblock)

    def keep_alive(self, lease: Lease, on_lost: Callable[[LeaseLost], None] | None = None) -> LeaseKeeper:
        """Start renewing ``lease`` every ttl/3 in the background; call ``.stop()`` when done."""
        return LeaseKeeper(self.backend, lease, on_lost).start()

    def leases(self, holder: str | None = None) -> list[Lease]:
        return [Lease.from_record(r, r.expires_at - r.acquired_at) for r in self.backend.list_leases(holder)]

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

    def version(self, key: str) -> VersionInfo | None:
        record = self.backend.get_version(self.key(key))
        return VersionInfo.from_record(record) if record else None

    def read(self, key: str | os.PathLike[str]) -> Snapshot:
        """The bytes of ``key`` and their version, read together.

        A write caught between rename and commit is waited for (briefly), so the snapshot never
        pairs new bytes with an old version. Bytes changed outside the layer come back with
        ``foreign_edit=True``.
        """
        target = resolve_file_key(self.root, key)
        deadline = time.monotonic() + 5.0
        while True:
            record = self.backend.get_version(target.key)
            data = read_bytes(target.path)
            disk_sha = sha256_hex(data) if data is not None else None
            if record is not None and disk_sha == record.sha256:
                return Snapshot(key=target.key, path=target.path, data=data or b"", version=record.version,
                                sha256=disk_sha or EMPTY_SHA256, exists=data is not None)
            intent = self.backend.get_intent(target.key)
            if self.backend.get_version(target.key) != record:
                continue  # a commit slipped in between the reads
            if record is None and (intent is None or intent.new_sha256 != disk_sha):
                # untracked bytes, or a first write not renamed into place yet
                return Snapshot(key=target.key, path=target.path, data=data or b"", version=0,
                                sha256=disk_sha or EMPTY_SHA256, exists=data is not None)
            if intent is not None and time.monotonic() < deadline:
                self._settle(intent, wait=0.05)  # a write between rename and commit: wait for it
                continue
            if read_bytes(target.path) != data:
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
        PathOutsideRoot, BackendUnavailable; on any of them the old bytes and version stand.
        """
        payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        return self._change(key, payload, lease, holder, expect_version, ttl, on_foreign_edit)

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

        budget = deadline or self.update_deadline
        started = time.monotonic()
        retrying = Retrying(
            retry=retry_if_exception_type((VersionConflict, LeaseHeld)),
            stop=stop_after_attempt(attempts or self.update_attempts) | stop_after_delay(budget),
            wait=wait_random_exponential(multiplier=0.0005, max=0.05),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                if attempt.retry_state.attempt_number > self.optimistic_attempts:
                    remaining = max(0.0, budget - (time.monotonic() - started))
                    with self.lease(key, holder, ttl, wait=remaining) as lease:
                        snapshot = self._readable(key)
                        return self.write(key, fn(snapshot.data), lease=lease)
                snapshot = self._readable(key)
                return self.write(key, fn(snapshot.data), holder=holder,
                                  expect_version=snapshot.version, ttl=ttl)
        raise AssertionError("unreachable")  # pragma: no cover

    def _readable(self, key: str | os.PathLike[str]) -> Snapshot:
        """``read``, raising ForeignEdit (under the raise policy) instead of returning it."""
        snapshot = self.read(key)
        if snapshot.foreign_edit and self.on_foreign_edit == "raise":
            raise self._foreign_error(snapshot.key, snapshot.path, snapshot.recorded_sha256,
                                      snapshot.sha256 if snapshot.exists else None, snapshot.version)
        return snapshot

    def adopt(self, key: str | os.PathLike[str], holder: str = "(adopted)") -> VersionInfo:
        """Accept the bytes now on disk (written around the layer) as a new version."""
        target = resolve_file_key(self.root, key)
        record = self.backend.get_version(target.key)
        data = read_bytes(target.path)
        adopted = self.backend.record_version(
            target.key, holder, sha256_hex(data) if data is not None else None,
            len(data) if data is not None else 0, fence=None,
            expect_version=record.version if record else 0, kind="adopt",
        )
        return VersionInfo.from_record(adopted)

    def _change(
        self, key: str | os.PathLike[str], payload: bytes | None, lease: Lease | None,
        holder: str | None, expect_version: int | None, ttl: float | None,
        policy: ForeignPolicy | None,
    ) -> WriteReceipt:
        target = resolve_file_key(self.root, key)
        if lease is not None:
            if lease.key != target.key:
                raise ValueError(f"the lease is for {lease.key!r}, not {target.key!r}")
            holder, fence = lease.holder, lease.fence
        elif holder:
            fence = None
        else:
            raise TypeError("write needs lease= (from coord.lease) or holder= (who is writing)")
        new_sha = sha256_hex(payload) if payload is not None else None
        intent, old = self._begin(target, holder, fence, new_sha, len(payload or b""), expect_version,
                                  ttl or self.default_ttl, policy or self.on_foreign_edit)
        self._apply(target, intent, old, payload)
        try:
            faults.check("commit")
            # The intent is durable already: a commit lost to power loss is rolled forward to the
            # same version by recovery, so this commit need not flush.
            record = self.backend.commit_write(intent, durable=False)
        except (LeaseLost, BackendUnavailable, OSError) as error:
            self._undo(target, intent, old, "commit", str(error))
            if isinstance(error, OSError):
                raise self._durability_error(target, "commit", error) from error
            raise
        return WriteReceipt(key=target.key, path=target.path, version=record.version,
                            sha256=new_sha or EMPTY_SHA256, size=record.size, fence=record.fence,
                            holder=holder, committed_at=record.updated_at)

    def _begin(
        self, target: ArtifactPath, holder: str, fence: int | None, new_sha: str | None, size: int,
        expect_version: int | None, ttl: float, policy: ForeignPolicy,
    ) -> tuple[IntentRecord, bytes | None]:
        pid, pid_start = recovery.own_identity()
        while True:
            request = WriteRequest(
                key=target.key, holder=holder, new_sha256=new_sha, size=size,
                temp_path=temp_path_for(target.path), host=recovery.HOST, pid=pid, pid_start=pid_start,
                fence=fence, ttl=ttl, expect_version=expect_version,
            )
            try:
                intent = self.backend.begin_write(request)
            except LeaseHeld:
                if self._unblock(target.key):
                    continue
                raise
            except IntentPending as pending:
                if not self._settle(pending.intent, wait=2.0):
                    intent = pending.intent
                    raise LeaseHeld(
                        f"a write to {intent.key!r} by {intent.holder!r} (pid {intent.pid} on {intent.host}) "
                        "is still in flight",
                        key=intent.key, holder=intent.holder, acquired_at=intent.created_at,
                        expires_at=intent.created_at, pid=intent.pid,
                    )
                continue
            try:
                old = read_bytes(target.path)
            except OSError as error:  # unreadable (EACCES, EIO): give the intent back, then raise
                self.backend.abort_write(intent, "read", str(error))
                raise self._durability_error(target, "read", error) from error
            old_sha = sha256_hex(old) if old is not None else None
            if intent.base_version == 0 or old_sha == intent.base_sha256:
                return intent, old
            recorded_sha = intent.base_sha256
            self.backend.abort_write(intent, "foreign_edit", f"disk {old_sha}, recorded {recorded_sha}")
            if policy != "adopt":
                raise self._foreign_error(target.key, target.path, recorded_sha, old_sha, intent.base_version)
            self.backend.record_version(target.key, "(adopted)", old_sha, len(old or b""), fence=None,
                                        expect_version=intent.base_version, kind="adopt")

    def _apply(self, target: ArtifactPath, intent: IntentRecord, old: bytes | None,
               payload: bytes | None) -> None:
        """The file step: make the intent durable, replace (or remove) the bytes, read back.

        The intent's flush runs on a helper thread while the temp file is written and fsynced;
        nothing visible changes on disk until both are done. Undone on failure.
        """
        renamed = False
        try:
            if payload is None:
                self.backend.sync_intent(intent)
                self.backend.check_fence(intent.key, intent.holder, intent.fence)
                renamed = remove_quietly(target.path)
                if renamed:  # nothing removed, nothing to make durable (the parent may not exist)
                    fsync_dir(os.path.dirname(target.path))
            else:
                ensure_parent(target.path)
                intent_synced = self._overlap.start(lambda: self.backend.sync_intent(intent))
                try:
                    write_temp(intent.temp_path, payload, file_mode(target.path))
                finally:
                    intent_synced.wait()
                if not intent.auto_lease:  # a long write may outlive a caller's lease: stop here if so
                    self.backend.check_fence(intent.key, intent.holder, intent.fence)
                renamed = True
                rename_into_place(intent.temp_path, target.path)
            try:
                faults.check("read_back")
                back = read_bytes(target.path)
            except OSError as error:
                raise StepFailed("read_back", error) from error
            if back != payload:  # equal bytes, equal hash: no need to hash them again
                back_sha = sha256_hex(back) if back is not None else None
                raise StepFailed("read_back", OSError(0, f"read back {back_sha}, wrote {intent.new_sha256}"))
        except StepFailed as failed:
            renamed = renamed and failed.step != "rename"
            self._undo(target, intent, old if renamed else _UNCHANGED, failed.step, str(failed.error))
            raise self._durability_error(target, failed.step, failed.error) from failed.error
        except (OSError, LeaseLost, BackendUnavailable) as error:
            self._undo(target, intent, old if renamed else _UNCHANGED, "write", str(error))
            if isinstance(error, OSError):
                raise self._durability_error(target, "write", error) from error
            raise

    def _undo(self, target: ArtifactPath, intent: IntentRecord, old: "bytes | None | object",
              step: str, detail: str) -> None:
        """Put the old bytes back (if they had been replaced), then resolve the intent."""
        try:
            remove_quietly(intent.temp_path)
        except OSError:
            pass  # a stray temp file is harmless; an unresolved intent would block the key
        if old is not _UNCHANGED:
            try:
                if old is None:
                    remove_quietly(target.path)
                    fsync_dir(os.path.dirname(target.path))
                else:
                    replace_durably(target.path, old, intent.temp_path)  # type: ignore[arg-type]
            except (OSError, StepFailed) as error:
                detail += f"; restoring the old bytes failed too ({error}): the next access reports ForeignEdit"
        self.backend.abort_write(intent, step, detail)

    def _unblock(self, key: str) -> bool:
        """A writer that died mid-write still holds the lease it took for that write: recover its
        intent now rather than leave the key blocked until that lease expires. True if it did."""
        stuck = self.backend.get_intent(key)
        if stuck is not None and recovery.writer_is_dead(self.backend, stuck):
            recovery.resolve(self.backend, self.root, stuck)
            return True
        return False

    def _settle(self, intent: IntentRecord, wait: float) -> bool:
        """Deal with another write's intent: recover it if its writer died, else wait up to
        ``wait`` seconds for it to resolve. True once it is resolved."""
        if recovery.writer_is_dead(self.backend, intent):
            recovery.resolve(self.backend, self.root, intent)
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            time.sleep(0.002)
            if self.backend.get_intent(intent.key) != intent:
                return True
        return False

    # -- recovery and errors ----------------------------------------------------------------

    def compact(self, *, before: float | None = None, keep: int | None = None, dry_run: bool = False,
                steps: int | None = None) -> CompactionReport:
        """Apply the retention policy now, in bounded steps (one transaction each, so writers
        wait at most one step) until nothing is left or ``steps`` ran. ``before`` (a timestamp)
        and ``keep`` (journal entries) replace the policy's journal limits; ``dry_run`` counts
        what would go and changes nothing. Raises JournalCorrupt (removing nothing more) when
        the oldest entries do not verify."""
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

    @staticmethod
    def _foreign_error(key: str, path: str, recorded: str | None, disk: str | None, version: int) -> ForeignEdit:
        what = "was deleted" if disk is None else "was changed"
        return ForeignEdit(
            f"{key!r} {what} outside agent-coherence since version {version} "
            f"(recorded sha256 {str(recorded)[:12]}, disk {str(disk)[:12]})",
            key=key, path=path, recorded_sha256=recorded, disk_sha256=disk, version=version,
        )

    @staticmethod
    def _durability_error(target: ArtifactPath, step: str, error: OSError) -> DurabilityError:
        return DurabilityError(
            f"write to {target.key!r} failed at {step}: {error.strerror or error}; the previous version is intact",
            key=target.key, path=target.path, step=step, errno=error.errno, detail=str(error),
        )


_UNCHANGED = object()
