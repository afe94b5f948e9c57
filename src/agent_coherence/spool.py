"""Maildir-style file channel, for consumers that can only read files.

Layout under the spool directory; every move between states is one atomic ``rename``::

    tmp/                      puts being written (a crash leaves a temp file, never a torn message)
    new/<generation>/<name>   pending; a generation (12 digits) takes ``rotate_every`` puts
    cur/<name>~<generation>~<consumer>~<claim_time_ns>   claimed, in flight
    done/<name>               acked with ``keep=True`` (created on first use)
    seq                       the put counter that picks the generation (under flock)

Guarantees, on one host and one local filesystem (ext4):

- ``put`` is confirmed or raises ``DurabilityError``: fsync in ``tmp/``, rename into ``new/``,
  fsync of the directory, then the name is returned.
- A message is held by at most one consumer at a time: a claim is a rename out of ``new/`` and only
  one rename of a file succeeds; the losers try their next candidate.
- At-least-once: a claim neither acked nor released goes back to ``new/`` (same name) when
  ``requeue_stale`` finds it older than ``claim_timeout``; acking it afterwards raises
  ``StaleReceipt`` (a ``ChannelError``): another consumer may hold the message by then.
- An entry that vanishes (claimed by another process, deleted by hand) is skipped, never raised.
- Claim cost does not grow with the backlog: each ``Spool`` keeps a batch of candidates, refilled
  by a streaming scan of the oldest generation(s) that keeps the ``batch_size`` smallest names
  (bounded heap), never a sort of the whole queue. Generations bound the scan (ext4 directories
  never shrink); claimers ``rmdir`` drained older ones (fails harmlessly if not empty). Measured:
  a 10k-entry generation scans in ~10 ms, ~10 us per claim amortised with the default batch.

Limits:

- Local only: atomic rename and ``flock`` are not trusted on NFS or across hosts.
- Claims, releases and acks are not fsynced: after a power loss a claimed message may be back in
  ``new/``, an acked one back in ``cur/`` (then requeued). Redelivery, never loss: make processing
  idempotent.
- Expiry compares this host's wall clock with the claim time in the ``cur/`` name; a clock jump
  requeues early or late.
- Order is approximate: names are ``<time_ns>.<pid>.<random>``, claimed smallest first, oldest
  generation first; concurrent producers, custom names and requeues interleave.
- ``put(name=...)`` refuses a name pending in the same generation only, not one in other
  generations or in ``cur/``; reusing a name while it is claimed lets its release or requeue
  replace the newer message. ``done/`` is a flat archive nobody prunes (a reused name overwrites).
- An empty ``claim`` re-scans the newest generation: idle polling costs up to one scan of
  ``rotate_every`` entries' worth of directory.
- ``depth()`` and ``in_flight()`` list directories: O(n), approximate under concurrency.
- ``requeue_stale`` also deletes ``tmp/`` files older than 36 hours (crashed puts).
- Every instance on one directory should use the same ``rotate_every``.
"""

from __future__ import annotations

import errno
import fcntl
import heapq
import os
import re
import secrets
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from . import faults
from .arguments import payload_bytes, timestamp
from .durable import StepFailed, ensure_parent, fsync_dir, remove_quietly, rename_into_place
from .durable import read_bytes, scan_dir, sha256_hex, temp_path_for, write_temp
from .errors import ChannelError, DurabilityError, SlotOccupied, StaleReceipt
from .logs import WARNING, log

SEP = "~"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,149}\Z")  # the cur/ name stays <= 255 bytes
_CONSUMER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_GENERATION = re.compile(r"\d{12}\Z")
_TMP_MAX_AGE_NS = 36 * 3600 * 10**9
_RETRIES = 16


@dataclass(frozen=True, slots=True)
class Claimed:
    """One claimed message: ``path`` is its file in ``cur/``, ``data`` was read after the claim."""

    name: str
    path: str
    data: bytes
    consumer: str
    claimed_at: float  # epoch seconds, host clock
    generation: str


_INF = float("inf")


def _check_setting(setting: str, value: object, wanted: str, in_range: Callable[[float], bool]) -> None:
    """Refuse a ``Spool`` setting that is not a number in its range (ChannelError with ``setting``
    and ``value``); the range is tested only on a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not in_range(value):
        raise ChannelError(f"{setting} must be {wanted}, not {value!r}", recover=f"pass {setting} as {wanted}",
                           setting=setting, value=value)


class Spool:
    """A directory of messages with claim / ack / release and stale-claim recovery.

    Any number of processes may put, claim and requeue on one directory at once, each with its own
    ``Spool`` (the candidate batch is per instance). See the module docstring for guarantees.
    """

    def __init__(self, directory: str | os.PathLike[str], *, claim_timeout: float = 300.0,
                 rotate_every: int = 10000, batch_size: int = 1024) -> None:
        # Checked one by one, naming the setting: a str or None raised a bare TypeError at the
        # first comparison, and an infinite claim_timeout would expire nothing ever.
        _check_setting("claim_timeout", claim_timeout, "a finite number of seconds > 0", lambda v: 0 < v < _INF)
        _check_setting("rotate_every", rotate_every, "a number of messages >= 1", lambda v: v >= 1)
        _check_setting("batch_size", batch_size, "a number of messages >= 1", lambda v: v >= 1)
        self.directory = os.path.abspath(os.fspath(directory))
        self.claim_timeout, self.rotate_every = float(claim_timeout), int(rotate_every)
        self.batch_size = int(batch_size)
        self.tmp_dir, self.new_dir, self.cur_dir, self.done_dir = (
            os.path.join(self.directory, sub) for sub in ("tmp", "new", "cur", "done"))
        self._seq_path = os.path.join(self.directory, "seq")
        try:
            ensure_parent(self._seq_path)  # the spool directory and missing parents, fsynced
            for path in (self.tmp_dir, self.new_dir, self.cur_dir):
                _make_dir(path, sync=True)
        except (NotADirectoryError, FileExistsError) as exc:
            raise ChannelError(f"cannot use {self.directory} as a spool: {exc}",
                               recover="give a directory (or a path that does not exist yet), not a file",
                               path=self.directory) from exc
        self._batch: deque[tuple[str, str]] = deque()
        self._unclaimable: set[tuple[str, str]] = set()  # (generation, name) too long to claim

    # --- producing ----------------------------------------------------------------------------

    def put(self, data: bytes | str, *, name: str | None = None) -> str:
        """Add one message durably and return its name (generated unless ``name`` is given).

        ``data`` is bytes-like or str (UTF-8), as for ``Coordinator.write``: anything else is a
        TypeError and nothing is written (``bytes(5)`` would have queued five NUL bytes).
        Raises ``DurabilityError`` when a step (open_temp, write, fsync, rename, fsync_dir) fails,
        ``ChannelError`` for ``data`` that is not bytes-like, a malformed ``name`` or one already
        pending in its generation.
        """
        try:
            data = payload_bytes(data)
        except TypeError as error:
            # bytes(5) is five NUL bytes and bytes([1, 2]) two raw bytes: a message nobody sent.
            raise ChannelError(f"spool messages are bytes-like or str (UTF-8), not {type(data).__name__}",
                               recover="encode the message first, e.g. json.dumps(value).encode()",
                               value=data) from error
        exclusive = name is not None  # a given name must not replace a pending one
        if name is not None:
            _check(name, _NAME, "message name", "name")
        else:
            name = new_name()
        temp = os.path.join(self.tmp_dir, f"{name}.{secrets.token_hex(4)}")
        try:
            write_temp(temp, data)
            self._deliver(temp, name, exclusive=exclusive, sync=True)
        except BaseException as exc:
            remove_quietly(temp)  # an interrupt too (renamed already: nothing to remove)
            if not isinstance(exc, StepFailed):
                raise
            detail = str(exc.error)
            if exc.step == "fsync_dir":
                detail += "; the message is in new/ and may be delivered, but is not known durable"
            raise DurabilityError(
                f"spool put of {name!r} into {self.directory} failed at {exc.step}: {exc.error}",
                key=name, path=self.directory, step=exc.step, errno=exc.error.errno, detail=detail,
            ) from exc
        return name

    def _deliver(self, temp: str, name: str, *, exclusive: bool, sync: bool) -> str:
        """Move a written temp file into ``new/<generation>/``; returns the generation.

        Raises StepFailed. ``sync=False`` skips the directory fsyncs (bulk loading in tests)."""
        step, generation = "rename", self._next_generation()
        target = os.path.join(self.new_dir, generation, name)
        try:
            for _ in range(_RETRIES):
                try:
                    faults.check("rename")
                    (os.link if exclusive else os.rename)(temp, target)  # link never replaces
                    break
                except FileNotFoundError:
                    if not os.path.lexists(temp):
                        raise
                    _make_dir(os.path.dirname(target), sync=sync)  # new, or removed while empty
            else:
                raise FileNotFoundError(errno.ENOENT, "generation kept vanishing", target)
            if exclusive:
                remove_quietly(temp)
            step = "fsync_dir"
            if sync:
                faults.check("fsync_dir")
                fsync_dir(os.path.dirname(target))
        except FileExistsError as exc:
            remove_quietly(temp)
            raise ChannelError(f"a message named {name!r} is already pending in {target}",
                               recover="use a unique name, or let put() generate one",
                               name=name) from exc
        except OSError as exc:
            raise StepFailed(step, exc) from exc
        return generation

    def _next_generation(self) -> str:
        """Count this put in ``seq`` (flock; not fsynced: a lost count only shifts a rotation)."""
        try:
            with _flocked(self._seq_path) as fd:
                raw = os.pread(fd, 32, 0)
                count = int(raw) if raw.isdigit() else 0
                encoded = str(count + 1).encode()
                os.pwrite(fd, encoded, 0)
                if len(raw) > len(encoded):  # only after a garbled count
                    os.ftruncate(fd, len(encoded))
        except OSError as exc:
            raise StepFailed("rename", exc) from exc
        return f"{count // self.rotate_every:012d}"

    # --- consuming ----------------------------------------------------------------------------

    def claim(self, consumer: str) -> Claimed | None:
        """Take the next pending message for ``consumer``, or None if ``new/`` is empty.

        ``consumer`` (1-64 of ``[A-Za-z0-9._-]``) is recorded in the ``cur/`` name. The message
        stays in ``cur/`` until ``ack``, ``release`` or ``requeue_stale``. A claim interrupted
        (KeyboardInterrupt, any exception) before it returned is given back to ``new/`` at once.
        """
        _check(consumer, _CONSUMER, "consumer", "consumer")
        while self._batch or self._refill():
            generation, name = self._batch.popleft()
            claimed_ns = time.time_ns()
            claim_name = SEP.join((name, generation, consumer, str(claimed_ns)))
            path = os.path.join(self.cur_dir, claim_name)
            try:
                os.rename(os.path.join(self.new_dir, generation, name), path)
                with open(path, "rb") as handle:
                    data = handle.read()
                return Claimed(name, path, data, consumer, claimed_ns / 1e9, generation)
            except FileNotFoundError:
                continue  # another consumer won it, it was deleted, or requeued before the read
            except OSError as exc:
                if exc.errno != errno.ENAMETOOLONG:
                    self._return(path, generation, name)
                    raise
                # A name put() cannot make (placed by hand): its claim name would not fit. It
                # stays in new/, counted by depth(), and the next message is claimed instead;
                # remembered, or every refill would find it first again.
                self._unclaimable.add((generation, name))
                log("channels", WARNING, "spool %s: %s is not claimed: its name is too long for a claim in "
                    "cur/ (put() names are at most 150 characters)", self.directory,
                    os.path.join(self.new_dir, generation, name))
                continue
            except BaseException:
                # An interrupt (or a failed read): the caller never gets this claim, so nobody
                # could ack or release it; back to new/ now rather than after claim_timeout.
                self._return(path, generation, name)  # False: the rename had not happened
                raise
        return None

    def _refill(self) -> bool:
        """Load up to ``batch_size`` smallest names, oldest generation first; drop drained ones."""
        generations = sorted(g for g in _names(self.new_dir, dirs=True) if _GENERATION.match(g))
        for index, generation in enumerate(generations):
            gen_dir = os.path.join(self.new_dir, generation)
            candidates = _names(gen_dir)
            if self._unclaimable:
                candidates = (n for n in candidates if (generation, n) not in self._unclaimable)
            names = heapq.nsmallest(self.batch_size - len(self._batch), candidates)
            self._batch.extend((generation, name) for name in names)
            if len(self._batch) >= self.batch_size:
                break
            if not names and index < len(generations) - 1:  # never the newest: it takes puts
                try:
                    os.rmdir(gen_dir)
                except OSError:
                    pass  # refilled meanwhile, or already removed by another claimer
        return bool(self._batch)

    def ack(self, claimed: Claimed, *, keep: bool = False) -> None:
        """Finish a claim: delete the message, or move it to ``done/`` with ``keep=True``.

        Raises ``StaleReceipt`` (a ``ChannelError``) if the claim is no longer in ``cur/``.
        """
        _check_claimed(claimed)
        try:
            if keep:
                _make_dir(self.done_dir, sync=False)
                os.rename(claimed.path, os.path.join(self.done_dir, claimed.name))
            else:
                os.unlink(claimed.path)
        except FileNotFoundError as exc:
            raise self._stale(claimed, "ack") from exc

    def release(self, claimed: Claimed) -> None:
        """Give a claim back (nack): the message returns to ``new/`` under its original name."""
        _check_claimed(claimed)
        if not self._return(claimed.path, claimed.generation, claimed.name):
            raise self._stale(claimed, "release")

    def requeue_stale(self, now: float | None = None) -> int:
        """Return claims older than ``claim_timeout`` to ``new/``; returns how many this call moved.

        ``now`` is epoch seconds (default: the host clock; else TypeError or ValueError). Safe to run from several processes at
        once: each stale claim is moved by exactly one of them, the others skip it quietly.
        """
        now_ns = time.time_ns() if now is None else int(timestamp(now) * 1e9)
        moved = 0
        for entry in scan_dir(self.cur_dir):
            parsed = parse_claim_name(entry.name)  # None: not ours, left alone
            if parsed and now_ns - parsed[3] > self.claim_timeout * 1e9:
                moved += self._return(entry.path, parsed[1], parsed[0])
        wall_ns = time.time_ns()
        for entry in scan_dir(self.tmp_dir):
            if wall_ns - entry.mtime_ns > _TMP_MAX_AGE_NS:
                remove_quietly(entry.path)
        return moved

    def _return(self, source: str, generation: str, name: str) -> bool:
        """Rename a claim back into ``new/<generation>/``; False if it is gone (another won)."""
        target = os.path.join(self.new_dir, generation, name)
        for _ in range(_RETRIES):
            try:
                os.rename(source, target)
                return True
            except FileNotFoundError:
                if not os.path.lexists(source):
                    return False
                _make_dir(os.path.dirname(target), sync=False)  # its generation was removed
        raise ChannelError(f"could not return {source} to {target}: the generation kept vanishing",
                           recover="retry; the message is still in cur/", path=source)

    def _stale(self, claimed: Claimed, action: str) -> StaleReceipt:
        return StaleReceipt(
            f"cannot {action} message {claimed.name!r}: its claim {os.path.basename(claimed.path)} "
            f"is no longer in {self.cur_dir}. It was already acked or released, or it stayed "
            f"claimed longer than claim_timeout={self.claim_timeout}s and requeue_stale returned "
            "it to new/, where another consumer may have claimed it",
            channel=self.directory, message_id=claimed.name, receipt=claimed.path,
        )

    # --- monitoring ---------------------------------------------------------------------------

    def depth(self) -> int:
        """Messages pending in ``new/`` (a listing: O(n), approximate under concurrency)."""
        generations = [g for g in _names(self.new_dir, dirs=True) if _GENERATION.match(g)]
        return sum(sum(1 for _ in _names(os.path.join(self.new_dir, g))) for g in generations)

    def in_flight(self) -> int:
        """Claims in ``cur/`` (a listing: O(n), approximate under concurrency)."""
        return sum(1 for name in _names(self.cur_dir) if parse_claim_name(name) is not None)


def _check_claimed(claimed: object) -> None:
    if not isinstance(claimed, Claimed):
        raise ChannelError(f"expected the Claimed that claim() returned, not {type(claimed).__name__}",
                           recover="claim() returns None when new/ is empty: check for None first",
                           value=claimed)


def new_name() -> str:
    """A unique, time-ordered message name: ``<time_ns, 20 digits>.<pid>.<8 hex>``."""
    return f"{time.time_ns():020d}.{os.getpid()}.{secrets.token_hex(4)}"


def parse_claim_name(entry: str) -> tuple[str, str, str, int] | None:
    """``(name, generation, consumer, claim_time_ns)`` from a ``cur/`` entry, or None.

    Split from the right: the generation, consumer and time never hold ``~``, but a file placed in
    ``new/`` by hand may (``notes.md~``), and claim() takes it like any other."""
    parts = entry.rsplit(SEP, 3)
    if len(parts) != 4 or not _GENERATION.match(parts[1]) or not parts[3].isdigit():
        return None
    return parts[0], parts[1], parts[2], int(parts[3])


def _check(value: object, pattern: re.Pattern[str], what: str, setting: str) -> None:
    """Refuse a malformed name; the facts name the argument (``setting``) and ``value``."""
    if not isinstance(value, str) or not pattern.match(value):
        raise ChannelError(f"invalid {what} {value!r}: must match {pattern.pattern[:-2]}",
                           recover=f"use a {what} of letters, digits, '.', '_', '-' (no '{SEP}')",
                           setting=setting, value=value)


def _names(directory: str, *, dirs: bool = False) -> Iterator[str]:
    """Stream the visible file (or directory) names of ``directory``; none if it is missing.

    No stat per entry (``scan_dir`` stats each, which a refill does not need): ``DirEntry.is_file``
    reads the entry's type field, and answers False for an entry that vanished."""
    try:
        iterator = os.scandir(directory)
    except FileNotFoundError:
        return
    test = os.DirEntry.is_dir if dirs else os.DirEntry.is_file
    with iterator:
        yield from (e.name for e in iterator if e.name[0] != "." and test(e, follow_symlinks=False))


def _make_dir(path: str, *, sync: bool) -> None:
    try:
        os.mkdir(path)
    except FileExistsError:
        return
    if sync:
        fsync_dir(os.path.dirname(path))


@contextmanager
def _flocked(path: str) -> Iterator[int]:
    """Hold an exclusive flock on ``path`` (created if missing); yields the fd."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        # Unlocked before the close: an interrupt landing at the close would otherwise leave the
        # descriptor open and locked, and every later put (this process's too) waiting for good.
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


# --- one delivery as one file -----------------------------------------------------------------

HEADER_PREFIX = b"<!-- agent-coherence message-id: "
HEADER_SUFFIX = b" -->"
_MESSAGE_ID = re.compile(r"[!-~]{1,200}\Z")  # printable ASCII, no spaces; '--' refused apart


def materialize(payload: bytes, path: str | os.PathLike[str], *, message_id: str,
                root: str | os.PathLike[str] | None = None, force: bool = False) -> str:
    """Write one delivery as a single file (e.g. ``next_task.md``); returns its absolute path.

    The file is the line ``<!-- agent-coherence message-id: ID -->`` then ``payload``, written by
    temp + fsync + rename + directory fsync: readers see the old file or the new one, whole.
    A file starting with that header holds an unconsumed message: ``SlotOccupied`` unless
    ``force``, or unless it is this very message (same id, same bytes), which is confirmed
    durable and returned: a retry of a call that was interrupted, or whose process died, after
    its rename succeeds. A file without the header (absent, or consumed by editing it) is
    replaced. Materializers of one path are serialised by a flock on ``.<name>.ac-lock`` beside
    it (left in place). With ``root``, relative paths are taken from it and a path resolving
    outside it (``..``, escaping symlinks) raises ``PathOutsideRoot``. Missing parent directories
    are created. An interrupt (KeyboardInterrupt, any exception) leaves no temp file behind.
    """
    if not isinstance(message_id, str) or not _MESSAGE_ID.match(message_id) or "--" in message_id:
        raise ChannelError(f"invalid message_id {message_id!r}: 1-200 printable ASCII "
                           "characters, no spaces, no '--'", recover="pass a uuid or a channel id")
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        # Refused before ensure_parent creates any directory for it.
        raise ChannelError(f"the payload to materialize is bytes, not {type(payload).__name__}",
                           recover="encode it first (Channel.materialize does this for a delivery)", value=payload)
    target = _target(path, root)
    _not_a_directory(target)
    ensure_parent(target)
    directory, base = os.path.split(target)
    payload = bytes(payload)
    data = HEADER_PREFIX + message_id.encode() + HEADER_SUFFIX + b"\n" + payload
    with _flocked(os.path.join(directory, f".{base}.ac-lock")):
        existing = _header_id(target)
        if existing is not None and not force:
            if existing == message_id and read_bytes(target) == data:
                _confirm_in_place(target, message_id, payload)
                return target
            raise SlotOccupied(f"{target} still holds unconsumed message {existing!r}; refusing "
                               f"to overwrite it with {message_id!r}",
                               path=target, existing_message_id=existing, message_id=message_id)
        temp = temp_path_for(target)
        try:
            write_temp(temp, data)
            rename_into_place(temp, target)
        except BaseException as exc:
            remove_quietly(temp)  # an interrupt too (renamed already: nothing to remove)
            if not isinstance(exc, StepFailed):
                raise
            raise _materialize_failed(target, message_id, payload, exc) from exc
    return target


def _confirm_in_place(target: str, message_id: str, payload: bytes) -> None:
    """The directory fsync an earlier materialize of this message may not have reached."""
    try:
        faults.check("fsync_dir")
        fsync_dir(os.path.dirname(target))
    except OSError as exc:
        raise _materialize_failed(target, message_id, payload, StepFailed("fsync_dir", exc)) from exc


def _materialize_failed(target: str, message_id: str, payload: bytes, exc: StepFailed) -> DurabilityError:
    return DurabilityError(
        f"materialize of {message_id!r} to {target} failed at {exc.step}: {exc.error}",
        key=message_id, path=target, step=exc.step, errno=exc.error.errno,
        detail=str(exc.error), sha256=sha256_hex(payload))


def consume_materialized(path: str | os.PathLike[str], *,
                         root: str | os.PathLike[str] | None = None) -> tuple[str, bytes] | None:
    """Read and remove a materialized delivery: ``(message_id, payload)``, or None.

    None when the file is absent or has no header. The file is first renamed to a unique hidden
    name beside it, so of several concurrent readers exactly one gets it. A call interrupted
    (KeyboardInterrupt, any exception) before it returned puts the message back in the slot for
    the next reader; if a newer message took the slot meanwhile, the interrupted one stays in
    ``.<name>.<pid>.<hex>.ac-claim`` beside it. Limit: from the rename on the message is this
    process's alone (at-most-once); if the process dies before returning, the bytes remain in
    that ``.ac-claim`` file.
    """
    target = _target(path, root)
    _not_a_directory(target)
    if _header_id(target) is None:
        return None
    directory, base = os.path.split(target)
    side = os.path.join(directory, f".{base}.{os.getpid()}.{secrets.token_hex(4)}.ac-claim")
    data: bytes | None = None
    try:
        try:
            os.rename(target, side)
        except FileNotFoundError:
            return None  # another reader won
        with open(side, "rb") as handle:
            data = handle.read()
        parsed = _split_header(data)
        if parsed is None:  # replaced by a header-less file between the check and the rename
            _link_back(side, target)
        os.unlink(side)
        return parsed
    except BaseException:
        # The caller never gets the message: back in the slot now, for the next reader.
        _give_back(side, target, data)
        raise


def _link_back(side: str, target: str) -> bool:
    """Link ``side`` at ``target`` unless something is there; whether ``target`` is ``side`` now."""
    try:
        os.link(side, target)
        return True
    except FileExistsError:
        try:
            return os.path.samefile(side, target)  # linked back by an earlier step of this call
        except FileNotFoundError:
            return False


def _give_back(side: str, target: str, data: bytes | None) -> None:
    """Undo an interrupted consume: ``data`` is what it read from ``side`` (None: not read yet)."""
    message = data is None or _split_header(data) is not None
    if os.path.lexists(side):
        if not _link_back(side, target) and message:
            return  # a newer message holds the slot: this one stays in the .ac-claim file
        os.unlink(side)
    elif data is not None and message:  # removed already, its result lost: written back
        temp = temp_path_for(target)
        try:
            write_temp(temp, data)
            if not _link_back(temp, target):
                os.rename(temp, side)
        finally:
            remove_quietly(temp)


def _target(path: str | os.PathLike[str], root: str | os.PathLike[str] | None) -> str:
    if root is None:
        return os.path.abspath(os.fspath(path))
    from .paths import resolve_file_key  # raises PathOutsideRoot

    # ArtifactPath's attributes are not declared to mypy yet (paths.py, another change).
    return resolve_file_key(os.fspath(root), os.fspath(path)).path  # type: ignore[attr-defined]


def _not_a_directory(target: str) -> None:
    if os.path.isdir(target):
        raise ChannelError(f"{target} is a directory, not a file that can hold one message",
                           recover="give the path of the file, e.g. <dir>/next_task.md", path=target)


def _split_header(data: bytes) -> tuple[str, bytes] | None:
    line, newline, rest = data.partition(b"\n")
    if not newline or len(line) <= len(HEADER_PREFIX) + len(HEADER_SUFFIX):
        return None
    if not line.startswith(HEADER_PREFIX) or not line.endswith(HEADER_SUFFIX):
        return None
    return line[len(HEADER_PREFIX) : -len(HEADER_SUFFIX)].decode("ascii", "replace"), rest


def _header_id(path: str) -> str | None:
    """The message id in the file's header, or None if the file is absent or has none."""
    try:
        with open(path, "rb") as handle:
            parsed = _split_header(handle.readline(len(HEADER_PREFIX) + 256))
    except FileNotFoundError:
        return None
    return None if parsed is None else parsed[0]
