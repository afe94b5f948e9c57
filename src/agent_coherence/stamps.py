"""The stamp: an extended attribute on a written file that says which version its bytes are.

A confirmed write sets ``user.agent-coherence`` on its temp file before the file's fsync, so the
stamp is durable with the bytes and moves with them through the rename. It names the intent (id,
fence, and the holder when there is room), the key, the version it makes and the one it builds on
(by their sha256). With the stamp on disk the intent need not be flushed before the rename: if a
power loss takes the unflushed intent (and the unflushed commit after it) the file itself says
that it is version ``base + 1`` of the key, and the next read or write rolls the record forward
from it (see ``recovery.forward_from_stamp`` and the rules in docs/concepts.md).

Two spellings, both read. Format 2 (binary, written for the usual fields) fits in the inode's
spare space on ext4 (at most :data:`IN_INODE_BUDGET` bytes; a larger value costs a separate 4 KiB
attribute block per file, written at every write): hashes are kept as prefixes (the bytes' 128
bits, the base's 64), the key as a 64-bit digest, and the holder only when the whole still fits.
Format 1 (JSON, every field in full) is what earlier releases wrote, and what a write with unusual
fields (an intent id that is not 16 hex digits, a version out of range) still writes.

Filesystems without user extended attributes (tmpfs on old kernels, some network and FUSE
filesystems, ``nouser_xattr`` mounts) refuse the stamp with ENOTSUP; :func:`mode` probes the root
once per filesystem, and a write whose stamp is refused anyway falls back to flushing its intent
before the rename, as every write does in the fallback mode. ``AGENT_COHERENCE_XATTR=off`` forces
the fallback mode.

Limits: the stamp is evidence only together with the bytes: its sha256 must match the file's.
An editor that rewrites the file in place keeps the attribute but changes the bytes, so the hash
no longer matches and the edit is foreign; an editor that replaces the file drops it. A prefix
match is a match: foreign bytes that share the stamp's 128-bit prefix would be taken for ours
(probability 2**-128 for bytes not made to collide; a tool that forges the attribute can as well
forge a full hash).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from typing import Literal

ATTRIBUTE = "user.agent-coherence"
ENVIRONMENT = "AGENT_COHERENCE_XATTR"
Mode = Literal["stamp", "flush"]

IN_INODE_BUDGET = 48
"""The most bytes a format-2 stamp takes (the holder is left out rather than exceed it). ext4
keeps an attribute with this name in a 256-byte inode while its value is at most 56 bytes (the
inode's 96 spare bytes less the attribute header, the entry and its end marker); 48 leaves room
for the inode's extra fields to grow by 8."""

RECOVERED_HOLDER = "(recovered)"
"""The writer recorded for a version rolled forward from a stamp that did not carry the holder."""

SHA_DIGITS = 32  # format 2 keeps the first 32 hex digits (128 bits) of the bytes' sha256
BASE_DIGITS = 16  # and the first 16 (64 bits) of the base's
KEY_DIGEST = 8  # bytes of sha256(key) in place of the key

_FORMAT_2 = 0x02
_HAS_BASE = 0x10
_HAS_HOLDER = 0x20
_INTEGER_LIMIT = 1 << 63  # versions and fences from 0 to SQLite's largest integer
_HEX_DIGITS = frozenset("0123456789abcdef")

_MODES: dict[int, Mode] = {}  # by st_dev of the probed root


@functools.lru_cache(maxsize=4096)  # a write stamps every file, and writers keep to few keys
def key_digest(key: str) -> bytes:
    """What a stamp holds of the key: the first bytes of the sha256 of its UTF-8."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:KEY_DIGEST]


@dataclass(frozen=True, slots=True)
class Stamp:
    """What a stamped file says about itself, as far as its format keeps it.

    ``sha256`` and ``base_sha256`` are hex: the whole hash (format 1) or its first
    :data:`SHA_DIGITS` / :data:`BASE_DIGITS` digits (format 2); ``base_sha256`` None: the write
    built on no recorded bytes. ``holder`` None: the stamp left it out. Compare with
    :meth:`proves`, which knows the prefixes, rather than field by field.
    """

    intent_id: str
    key_digest: bytes
    holder: str | None
    fence: int
    version: int
    sha256: str
    base_sha256: str | None

    def proves(self, key: str, sha256: str | None, version: int, base_sha256: str | None) -> bool:
        """True if the stamp says that the bytes hashing to ``sha256`` are version ``version``
        of ``key``, written on top of the bytes hashing to ``base_sha256`` (None: on no bytes)."""
        if sha256 is None or version != self.version or len(self.sha256) < SHA_DIGITS \
                or not sha256.startswith(self.sha256):
            return False
        if (base_sha256 is None) != (self.base_sha256 is None):
            return False
        if base_sha256 is not None and self.base_sha256 is not None \
                and (len(self.base_sha256) < BASE_DIGITS or not base_sha256.startswith(self.base_sha256)):
            return False
        return self.key_digest == key_digest(key)


_ONE_BYTE = tuple(bytes((value,)) for value in range(0x80))


def _varint(value: int) -> bytes:
    """LEB128: 7 bits a byte, low first (versions and fences below 128 take one byte)."""
    if value < 0x80:
        return _ONE_BYTE[value]
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_fields(intent_id: str, key: str, holder: str, fence: int, version: int, sha256: str,
                  base_sha256: str | None) -> bytes:
    """The stamp of a write (a write stamps every file, so this is on its path).

    Format 2 when the fields are the usual ones (str and int exactly, an intent id of 16 and
    hashes of 64 characters whose kept prefixes are lowercase hex, versions and fences in
    [0, 2**63)), with the holder only if it is ASCII and the whole stays within
    :data:`IN_INODE_BUDGET`; format 1 otherwise. ``decode`` reads both, and the result
    :meth:`Stamp.proves` these fields."""
    if type(intent_id) is str and len(intent_id) == 16 and type(sha256) is str and len(sha256) == 64 \
            and type(version) is int and 0 <= version < _INTEGER_LIMIT \
            and type(fence) is int and 0 <= fence < _INTEGER_LIMIT and type(key) is str and type(holder) is str \
            and (base_sha256 is None or (type(base_sha256) is str and len(base_sha256) == 64)):
        # The intent id and the kept prefixes, in the stamp's order: one conversion for all three.
        digits = intent_id + sha256[:SHA_DIGITS] if base_sha256 is None \
            else intent_id + sha256[:SHA_DIGITS] + base_sha256[:BASE_DIGITS]
        try:
            raw = bytes.fromhex(digits)
        except ValueError:
            raw = b""
        if raw.hex() == digits:  # fromhex also takes capitals and skips spaces: exactly lowercase hex
            tag = _FORMAT_2 if base_sha256 is None else _FORMAT_2 | _HAS_BASE
            if version < 0x80 and fence < 0x80:  # the usual: the tag and both numbers in one step
                if 3 + len(raw) + KEY_DIGEST + len(holder) <= IN_INODE_BUDGET and holder.isascii():
                    return b"".join((bytes((tag | _HAS_HOLDER, version, fence)), raw, key_digest(key),
                                     holder.encode()))
                return b"".join((bytes((tag, version, fence)), raw, key_digest(key)))
            numbers = _varint(version) + _varint(fence)
            if 1 + len(numbers) + len(raw) + KEY_DIGEST + len(holder) <= IN_INODE_BUDGET and holder.isascii():
                return b"".join((_ONE_BYTE[tag | _HAS_HOLDER], numbers, raw, key_digest(key), holder.encode()))
            return b"".join((_ONE_BYTE[tag], numbers, raw, key_digest(key)))
    return encoded_by_json(intent_id, key, holder, fence, version, sha256, base_sha256)


def encoded_by_json(intent_id: str, key: str, holder: str, fence: int, version: int, sha256: str,
                    base_sha256: str | None) -> bytes:
    """Format 1: the stamp as a JSON array of every field in full (what earlier releases wrote)."""
    return json.dumps([1, intent_id, key, holder, fence, version, sha256, base_sha256],
                      separators=(",", ":")).encode()


def decode(raw: bytes) -> Stamp | None:
    """The stamp in ``raw`` (either format), or None if it is not one (never raises)."""
    if raw[:1] == b"[":
        return _decode_json(raw)
    return _decode_binary(raw)


def _is_sha(text: object) -> bool:
    return isinstance(text, str) and len(text) == 64 and all(c in _HEX_DIGITS for c in text)


def _decode_json(raw: bytes) -> Stamp | None:
    try:
        tag, intent_id, key, holder, fence, version, sha, base = json.loads(raw)
    except (ValueError, TypeError, RecursionError):
        return None
    # hashes other than 64 hex digits never matched a file's: such a stamp proved nothing
    if tag != 1 or type(tag) is not int or not all(isinstance(v, str) for v in (intent_id, key, holder)) \
            or type(fence) is not int or type(version) is not int or not _is_sha(sha) \
            or not (base is None or _is_sha(base)):
        return None
    return Stamp(intent_id, key_digest(key), holder, fence, version, sha, base)


def _read_varint(raw: bytes, at: int) -> tuple[int, int]:
    """The varint at ``at`` and the offset after it; (-1, at) if there is none, or it is not
    spelled the one way :func:`_varint` spells it, or it is out of range."""
    value = shift = 0
    while at < len(raw) and shift < 70:
        byte = raw[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if (byte == 0 and shift) or value >= _INTEGER_LIMIT:
                return -1, at
            return value, at
        shift += 7
    return -1, at


def _decode_binary(raw: bytes) -> Stamp | None:
    tag = raw[0] if raw else 0
    if tag & ~(_HAS_BASE | _HAS_HOLDER) != _FORMAT_2:
        return None
    version, at = _read_varint(raw, 1)
    fence, at = _read_varint(raw, at) if version >= 0 else (-1, at)
    sha_at = at + 8  # after the intent id
    base_at = sha_at + SHA_DIGITS // 2
    key_at = base_at + (BASE_DIGITS // 2 if tag & _HAS_BASE else 0)
    rest = raw[key_at + KEY_DIGEST:]
    if fence < 0 or len(raw) < key_at + KEY_DIGEST or (rest and not tag & _HAS_HOLDER) or not rest.isascii():
        return None
    return Stamp(intent_id=raw[at:sha_at].hex(), key_digest=raw[key_at:key_at + KEY_DIGEST],
                 holder=rest.decode("ascii") if tag & _HAS_HOLDER else None, fence=fence, version=version,
                 sha256=raw[sha_at:base_at].hex(), base_sha256=raw[base_at:key_at].hex() if tag & _HAS_BASE else None)


def put(fd: int, stamp: bytes) -> bool:
    """Set the stamp on the open file ``fd``; False if the filesystem refuses it (the caller then
    flushes the intent instead). Never raises OSError."""
    try:
        os.setxattr(fd, ATTRIBUTE, stamp)
        return True
    except OSError:
        return False


def remove(fd: int) -> None:
    """Remove the stamp of the open file ``fd`` and fsync it (never raises OSError)."""
    try:
        os.removexattr(fd, ATTRIBUTE)
        os.fsync(fd)
    except OSError:
        pass


def get(fd: int) -> Stamp | None:
    """The stamp of the open file ``fd``; None if it has none (or an unreadable one)."""
    try:
        return decode(os.getxattr(fd, ATTRIBUTE))
    except OSError:
        return None


def forced_off() -> bool:
    return os.environ.get(ENVIRONMENT, "").strip().lower() in ("off", "0", "no", "false")


def mode(root: str) -> Mode:
    """``"stamp"`` if files under ``root`` take the stamp, else ``"flush"`` (probed once per
    filesystem and process, with a temp file in ``root``)."""
    if forced_off():
        return "flush"
    try:
        device = os.stat(root).st_dev
    except OSError:
        return "flush"
    if device not in _MODES:
        _MODES[device] = _probe(root)
    return _MODES[device]


def _probe(root: str) -> Mode:
    name = os.path.join(root, f".xattr-probe.{os.getpid()}.{secrets.token_hex(4)}.ac-tmp")
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return "flush"
    try:
        os.setxattr(fd, ATTRIBUTE, b"probe")
        return "stamp" if os.getxattr(fd, ATTRIBUTE) == b"probe" else "flush"
    except OSError:  # ENOTSUP, EOPNOTSUPP, EPERM: no user attributes here
        return "flush"
    finally:
        os.close(fd)
        try:
            os.unlink(name)
        except OSError:
            pass
