"""The stamp: an extended attribute on a written file that says which version its bytes are.

A confirmed write sets ``user.agent-coherence`` on its temp file before the file's fsync, so the
stamp is durable with the bytes and moves with them through the rename. It names the intent (id,
key, holder, fence), the version it makes and the one it builds on (sha256 of both). With the
stamp on disk the intent need not be flushed before the rename: if a power loss takes the
unflushed intent (and the unflushed commit after it) the file itself says that it is version
``base + 1`` of the key, and the next read or write rolls the record forward from it (see
:func:`forward_version` and the rules in docs/concepts.md).

Filesystems without user extended attributes (tmpfs on old kernels, some network and FUSE
filesystems, ``nouser_xattr`` mounts) refuse the stamp with ENOTSUP; :func:`mode` probes the root
once per filesystem, and a write whose stamp is refused anyway falls back to flushing its intent
before the rename, as every write does in the fallback mode. ``AGENT_COHERENCE_XATTR=off`` forces
the fallback mode.

Limits: the stamp is evidence only together with the bytes: its sha256 must equal the file's.
An editor that rewrites the file in place keeps the attribute but changes the bytes, so the hash
no longer matches and the edit is foreign; an editor that replaces the file drops it.
"""

from __future__ import annotations

import json
import os
import secrets
from json.encoder import encode_basestring_ascii as _quote  # the escaping the encoder does (ensure_ascii)
from dataclasses import dataclass
from typing import Literal

ATTRIBUTE = "user.agent-coherence"
ENVIRONMENT = "AGENT_COHERENCE_XATTR"
Mode = Literal["stamp", "flush"]

_MODES: dict[int, Mode] = {}  # by st_dev of the probed root


@dataclass(frozen=True, slots=True)
class Stamp:
    """What a stamped file says about itself."""

    intent_id: str
    key: str
    holder: str
    fence: int
    version: int
    sha256: str
    base_sha256: str | None


_ENCODER = json.JSONEncoder(separators=(",", ":"))  # made once: json.dumps with options makes one per call


def encode(stamp: Stamp) -> bytes:
    return encode_fields(stamp.intent_id, stamp.key, stamp.holder, stamp.fence, stamp.version, stamp.sha256,
                         stamp.base_sha256)


def encode_fields(intent_id: str, key: str, holder: str, fence: int, version: int, sha256: str,
                  base_sha256: str | None) -> bytes:
    """``encode(Stamp(...))`` without making the Stamp (a write stamps every file).

    The usual fields (str, int and an optional str, as the backends give them) are spelled here:
    the encoder's set-up costs more than the text. Any other type goes to the encoder. Both give
    the same bytes (a property test holds them to it), so ``decode`` reads either."""
    if type(fence) is int and type(version) is int and type(intent_id) is str and type(key) is str \
            and type(holder) is str and type(sha256) is str and (base_sha256 is None or type(base_sha256) is str):
        # One f-string, not a join of 17 parts: an exact int formats as its repr.
        return (f"[1,{_quote(intent_id)},{_quote(key)},{_quote(holder)},{fence},{version},{_quote(sha256)},"
                f"{'null' if base_sha256 is None else _quote(base_sha256)}]").encode()
    return encoded_by_json(intent_id, key, holder, fence, version, sha256, base_sha256)


def encoded_by_json(intent_id: str, key: str, holder: str, fence: int, version: int, sha256: str,
                    base_sha256: str | None) -> bytes:
    """The stamp's bytes as the JSON encoder spells them (what ``encode_fields`` must equal)."""
    return _ENCODER.encode([1, intent_id, key, holder, fence, version, sha256, base_sha256]).encode()


def decode(raw: bytes) -> Stamp | None:
    """The stamp in ``raw``, or None if it is not one this version wrote (never raises)."""
    try:
        tag, intent_id, key, holder, fence, version, sha, base = json.loads(raw)
    except (ValueError, TypeError):
        return None
    if tag != 1 or not all(isinstance(v, str) for v in (intent_id, key, holder, sha)) \
            or not isinstance(fence, int) or not isinstance(version, int) \
            or not (base is None or isinstance(base, str)):
        return None
    return Stamp(intent_id, key, holder, fence, version, sha, base)


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
