"""The bytes this process last wrote to each key, so the disk can be checked against them without
hashing it again.

Before a write replaces a file, it checks that the bytes on disk still have the recorded hash (a
foreign edit otherwise). Hashing the old bytes costs more than comparing them with bytes known to
have that hash: if this process wrote them, it still has them, and equal bytes have equal hashes.
So a check that finds the disk equal to the remembered bytes of the recorded hash is the same
check, without the hash; any other outcome (bytes differ, nothing remembered, another hash
recorded) falls back to hashing the disk. Nothing here trusts a file's metadata: the disk's bytes
are always read and compared.

Bounded: files up to ``MAX_ENTRY`` bytes, ``MAX_TOTAL`` bytes and ``MAX_KEYS`` keys in all (least
recently used go first). Thread-safe.
"""

from __future__ import annotations

from collections import OrderedDict
from threading import Lock

MAX_ENTRY = 1 << 20
MAX_TOTAL = 8 << 20
MAX_KEYS = 1024


class LastWritten:
    """Key -> (sha256, bytes) of the last write of this process, for keys small enough to keep.
    Every entry's sha256 is the hash of its bytes (the write computed it from them)."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._total = 0
        self._lock = Lock()

    def remember(self, key: str, sha256: str, data: bytes) -> None:
        """``data`` (whose hash is ``sha256``) is now the confirmed content of ``key``."""
        size = len(data)
        with self._lock:
            entries = self._entries
            previous = entries.pop(key, None)  # ``_drop``, spelled here: every write calls this
            if previous is not None:
                self._total -= len(previous[1])
            if size > MAX_ENTRY:
                return
            entries[key] = (sha256, data)
            self._total += size
            while self._total > MAX_TOTAL or len(self._entries) > MAX_KEYS:
                self._drop(next(iter(self._entries)))

    def forget(self, key: str) -> None:
        with self._lock:
            self._drop(key)

    def has_hash(self, key: str, sha256: str | None, disk: bytes) -> bool:
        """True if ``disk`` is known to hash to ``sha256``: it equals the bytes remembered for
        ``key`` under that hash. False means unknown (hash it), not different."""
        entry = self._entries.get(key)
        return entry is not None and entry[0] == sha256 and entry[1] == disk

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._total -= len(entry[1])
