"""Artifact keys: normalise a path, confine it to the workspace root, refuse symlink escapes.

A file artifact's key is its path relative to the root, in POSIX form, after resolving symlinks,
so ``plans/plan.md``, ``./plans//plan.md`` and an absolute path to the same file are one key.
Refused (``PathOutsideRoot``, nothing written): empty keys, NUL bytes, over-long names, anything
that resolves outside the root (``..``, absolute paths elsewhere, escaping symlinks), the root
itself, and the state directory.

The check here runs when the key is resolved. A directory swapped for a symlink by another
process after that check is met by the file operations themselves, which walk from the root with
``O_NOFOLLOW`` directory descriptors and refuse it (see :mod:`rooted`).
"""

from __future__ import annotations

import os
import stat
from functools import lru_cache  # loaded on the hook path anyway: the _sqlite3 module imports it

from .errors import KeyIsADirectory, PathOutsideRoot

STATE_DIR = ".agent-coherence"
NAME_MAX = 255
PATH_MAX = 4096

# A namespaced key is ``scheme:rest``: the scheme a lowercase letter then lowercase letters, digits
# and ``_.-``; the rest not starting with a slash. Spelled with str methods, not a regular
# expression: importing ``re`` costs the hook start-up several milliseconds.
_SCHEME_START = "abcdefghijklmnopqrstuvwxyz"
_SCHEME_CHARS = _SCHEME_START + "0123456789_.-"


class ArtifactPath:
    """A validated file key and the absolute path it names (immutable; a plain class rather than a
    dataclass because this module is on the Claude Code hook path, which must start fast)."""

    __slots__ = ("key", "path")
    __match_args__ = ("key", "path")
    key: str
    path: str

    def __init__(self, key: str, path: str) -> None:
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "path", path)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"ArtifactPath is immutable: cannot assign {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is ArtifactPath:
            return (self.key, self.path) == (other.key, other.path)  # type: ignore[attr-defined]
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.key, self.path))

    def __repr__(self) -> str:
        return f"ArtifactPath(key={self.key!r}, path={self.path!r})"

    def __reduce__(self) -> tuple:
        return (ArtifactPath, (self.key, self.path))


def is_namespaced(key: str) -> bool:
    """True for non-file keys such as ``langgraph:thread/42`` or ``store:notes/a``."""
    colon = key.find(":")
    if colon < 1 or colon + 1 == len(key) or key[colon + 1] in "/\\":
        return False
    return key[0] in _SCHEME_START and not key[1:colon].lstrip(_SCHEME_CHARS)


def _refuse(key: object, root: str, reason: str, recover: str | None = None) -> PathOutsideRoot:
    return PathOutsideRoot(f"refused key {key!r}: {reason}", key=key, root=root, reason=reason, recover=recover)


# What a malformed key (of any kind: a file's or a namespaced one such as a LangGraph thread's)
# needs, rather than the hint about staying inside the root.
_FORM = f"give a key that is a non-empty string of valid UTF-8, without NUL bytes, at most {PATH_MAX} bytes long"


def _refuse_directory(key: object, root: str, path: str) -> KeyIsADirectory:
    reason = "names a directory, not a file"
    return KeyIsADirectory(f"refused key {key!r}: {reason}", key=key, root=root, reason=reason, path=path,
                           kind="directory")


def check_plain_key(key: object, root: str) -> str:
    """Validate the form of a key (type, NUL, length) without touching the filesystem."""
    if isinstance(key, os.PathLike):
        key = os.fspath(key)
    if isinstance(key, bytes):
        try:
            key = key.decode("utf-8")
        except UnicodeDecodeError:
            raise _refuse(key, root, "not valid UTF-8", _FORM) from None
    if not isinstance(key, str):
        raise _refuse(key, root, f"keys are strings, not {type(key).__name__}", _FORM)
    if not key or not key.strip():
        raise _refuse(key, root, "empty key", _FORM)
    if "\x00" in key:
        raise _refuse(key, root, "contains a NUL byte", _FORM)
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse(key, root, "contains unencodable characters (lone surrogates)", _FORM) from None
    if len(encoded) > PATH_MAX:
        raise _refuse(key, root, f"longer than {PATH_MAX} bytes", _FORM)
    return key


def _resolve(real_root: str, lexical: str) -> str:
    """``os.path.realpath(lexical)``, cheaply when no component below the root is a symlink.

    Walking the components under the root with ``lstat`` costs one system call each; only if one
    of them is a symlink (or the path is not lexically under the root) is the full realpath run.
    """
    if not lexical.startswith(real_root + os.sep):
        return _realpath(lexical)
    current = real_root
    for part in lexical[len(real_root) + 1:].split(os.sep):
        current = os.path.join(current, part)
        try:
            mode = os.lstat(current).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return lexical  # nothing below a missing component can be a symlink
        if stat.S_ISLNK(mode):
            return _realpath(lexical)
    return lexical


class _PathChanged(Exception):
    """The path kept changing while it was resolved (a symlink on it replaced or removed)."""


def _realpath(path: str) -> str:
    """``os.path.realpath``, which raises (FileNotFoundError, ...) when a symlink on the path is
    removed between its lstat and its readlink; tried again, then given up as _PathChanged."""
    for _ in range(3):
        try:
            return os.path.realpath(path)
        except OSError:
            continue
    raise _PathChanged(path)


@lru_cache(maxsize=128)
def _real_root(root: str) -> str:
    return os.path.realpath(root)


def resolve_file_key(root: str, key: object) -> ArtifactPath:
    """Resolve ``key`` (relative to ``root``, or absolute inside it) to a confined file key.

    The string work for a ``str`` key is remembered (:func:`_lexical_plan`); the file system is
    asked again every time, one ``lstat`` per component, so a symlink (or a directory) that
    appeared on the path since the last call is met exactly as on a first call."""
    real_root = _real_root(os.fspath(root))
    if type(key) is str:
        plan = _lexical_plan(real_root, key)
        if plan is not None:
            target, components = plan
            mode = _mode_without_symlinks(components)
            if mode != _SYMLINK_MET:
                if mode is not None and stat.S_ISDIR(mode):
                    raise _refuse_directory(key, real_root, target.path)
                return target
    return _resolve_file_key(real_root, key)


_SYMLINK_MET = -1


def _mode_without_symlinks(components: tuple[str, ...]) -> int | None:
    """``lstat`` each path in turn: _SYMLINK_MET at the first symlink, None if one is missing
    (nothing below it can be a symlink), else the mode of the last."""
    mode = None
    for path in components:
        try:
            mode = os.lstat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISLNK(mode):
            return _SYMLINK_MET
    return mode


@lru_cache(maxsize=4096)
def _lexical_plan(real_root: str, key: str) -> tuple[ArtifactPath, tuple[str, ...]] | None:
    """For a key whose resolution is lexical when no component is a symlink: the ArtifactPath
    it names then, and the absolute path of each component to ``lstat``. None for a key that
    always takes the full resolution (``..``, outside the root, the state directory, refused)."""
    try:
        text = check_plain_key(key, real_root)
    except PathOutsideRoot:
        return None
    parts = text.split("/")
    if ".." in parts or any(len(part.encode("utf-8")) > NAME_MAX for part in parts):
        return None
    lexical = os.path.normpath(text if os.path.isabs(text) else os.path.join(real_root, text))
    if not lexical.startswith(real_root + os.sep):
        return None
    relative = lexical[len(real_root) + 1:]
    if os.sep != "/":
        relative = relative.replace(os.sep, "/")
    if relative == STATE_DIR or relative.startswith(STATE_DIR + "/"):
        return None
    current, components = real_root, []
    for part in lexical[len(real_root) + 1:].split(os.sep):
        current = os.path.join(current, part)
        components.append(current)
    return ArtifactPath(relative, lexical), tuple(components)


def forget_key_plans() -> None:
    """Drop the remembered string work of every key: the next resolution of each is a first one."""
    _lexical_plan.cache_clear()


def _resolve_file_key(real_root: str, key: object) -> ArtifactPath:
    """The full resolution (see :func:`resolve_file_key`)."""
    text = check_plain_key(key, real_root)
    for part in text.split("/"):
        if len(part.encode("utf-8")) > NAME_MAX:
            raise _refuse(key, real_root, f"a path component is longer than {NAME_MAX} bytes")
    joined = text if os.path.isabs(text) else os.path.join(real_root, text)
    lexical = os.path.normpath(joined)
    # ".." after a symlink climbs out of the link's target, not out of the link: only the kernel's
    # order of resolution (realpath of the path as given) names the file a tool would open.
    try:
        resolved = _realpath(joined) if ".." in text.split("/") else _resolve(real_root, lexical)
    except _PathChanged:
        raise _refuse(key, real_root, "a symlink on the path kept changing while it was resolved") from None
    if resolved != real_root and not resolved.startswith(real_root + os.sep):
        inside = lexical == real_root or lexical.startswith(real_root + os.sep)
        reason = "a symlink on the path resolves outside the root" if inside else "resolves outside the root"
        raise _refuse(key, real_root, reason)
    if resolved == real_root:
        raise _refuse(key, real_root, "names the root directory itself")
    relative = resolved[len(real_root) + 1:]
    if os.sep != "/":
        relative = relative.replace(os.sep, "/")
    if relative == STATE_DIR or relative.startswith(STATE_DIR + "/"):
        raise _refuse(key, real_root, f"inside the state directory {STATE_DIR}/")
    if os.path.isdir(resolved):
        raise _refuse_directory(key, real_root, resolved)
    if _link_left_on(real_root, resolved):  # resolution stopped at a link: a loop, not a race to report as one
        raise _refuse(key, real_root, "a symlink loop on the path (or a chain of links too long to follow)")
    return ArtifactPath(relative, resolved)


def _link_left_on(real_root: str, resolved: str) -> bool:
    """Whether a component of a resolved path is still a symlink (realpath leaves a loop as is)."""
    current = real_root
    for part in resolved[len(real_root) + 1:].split(os.sep):
        current = os.path.join(current, part)
        try:
            if stat.S_ISLNK(os.lstat(current).st_mode):
                return True
        except OSError:
            return False  # nothing below a missing component
    return False


def normalize_key(root: str, key: object) -> str:
    """The canonical key: namespaced keys are kept as given; file keys are resolved and confined."""
    if isinstance(key, str) and is_namespaced(key):
        return check_plain_key(key, root)
    return resolve_file_key(root, key).key
