"""Checks of the arguments the Coordinator takes: a bad value is refused before anything is
touched, with an error that names the argument and what it accepts."""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Literal

ForeignPolicy = Literal["raise", "adopt"]
FOREIGN_POLICIES = ("raise", "adopt")


def is_text(value: str) -> bool:
    """Whether ``value`` can be stored: it encodes as UTF-8 (no lone surrogate, as a name decoded
    from bad bytes with ``surrogateescape`` has). Checked in one step for an ASCII string."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def payload_bytes(data: object) -> bytes:
    """``data`` as bytes: a str is encoded as UTF-8, bytes kept as they are (immutable), any other
    bytes-like object copied. Anything else (an int would otherwise become that many NUL bytes)
    is a TypeError."""
    if isinstance(data, str):
        try:
            return data.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(f"data is a str that is not valid text: a lone surrogate at position {error.start} "
                             "(encode it yourself, e.g. with errors='surrogateescape', and pass bytes)") from None
    if type(data) is bytes:  # immutable: nothing to copy
        return data
    try:
        return bytes(memoryview(data))  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"data must be bytes-like or str, not {type(data).__name__}") from None


_INFINITY = float("inf")


def root_path(root: object) -> str:
    """The workspace root as a str path. A bytes path (or PathLike of bytes) is decoded as UTF-8,
    as keys are; left as bytes it failed later, mixing with str paths, after the root had been
    created."""
    path = os.fspath(root)  # type: ignore[call-overload]  # TypeError for anything but a path
    if isinstance(path, bytes):
        try:
            return path.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"root {path!r} is not valid UTF-8") from None
    return path  # type: ignore[no-any-return]


# The longest TTL (about 31,700 years, the channels' limit too): an expiry past what time_t can
# hold made every other caller's LeaseHeld message raise a bare OverflowError, for ever.
MAX_SECONDS = 1e12


def ttl_seconds(ttl: object, name: str = "ttl") -> float:
    """A lease time-to-live: a finite number of seconds above 0, at most ``MAX_SECONDS``."""
    if (type(ttl) is float or type(ttl) is int) and 0 < ttl <= MAX_SECONDS:
        return float(ttl)  # the usual case, checked in one step (NaN fails it)
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(ttl).__name__}")
    if not math.isfinite(ttl) or ttl <= 0 or ttl > MAX_SECONDS:
        raise ValueError(f"{name} must be a finite number of seconds above 0 (at most {MAX_SECONDS:g}), "
                         f"not {ttl!r}")
    return float(ttl)


def wait_seconds(wait: object, name: str = "wait") -> float:
    """How long to wait: a finite number of seconds, 0 or more."""
    if (type(wait) is float or type(wait) is int) and 0 <= wait < _INFINITY:
        return float(wait)  # the usual case, checked in one step (NaN fails it)
    if isinstance(wait, bool) or not isinstance(wait, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(wait).__name__}")
    if not math.isfinite(wait) or wait < 0:
        raise ValueError(f"{name} must be a finite number of seconds, 0 or more, not {wait!r}")
    return float(wait)


def timestamp(value: object, name: str = "now") -> float:
    """A point in time: finite epoch seconds, 0 or more."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be epoch seconds (a number), not {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite epoch seconds, 0 or more, not {value!r}")
    return float(value)


def holder_name(holder: object) -> str:
    """Who holds a lease or writes: a non-empty string without NUL (PostgreSQL cannot store one, so
    it is refused on every backend alike) that can be stored as UTF-8."""
    if not isinstance(holder, str):
        raise TypeError(f"holder must be a str naming the writer, not {type(holder).__name__}")
    if not holder.strip():
        raise ValueError("holder must name the writer (an empty or blank holder is refused)")
    if "\x00" in holder:
        raise ValueError(f"holder must not contain a NUL character, not {holder!r}")
    if not is_text(holder):
        raise ValueError(f"holder must be valid text, not {holder!r} (a lone surrogate)")
    return holder


def foreign_policy(policy: object) -> ForeignPolicy:
    """``on_foreign_edit``: "raise" or "adopt"."""
    if policy not in FOREIGN_POLICIES:
        raise ValueError(f"on_foreign_edit must be one of {FOREIGN_POLICIES}, not {policy!r}")
    return policy  # type: ignore[return-value]


def count(value: object, name: str) -> int:
    """A number of attempts: an int, 0 or more."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int, 0 or more, not {value!r}")
    return value


def expected_version(version: object) -> int:
    """``expect_version``: a version number, 0 or more. A str or float would never equal the
    stored int and so would be reported as a VersionConflict (and journaled as one) on every try;
    a bool would silently stand for 0 or 1."""
    if isinstance(version, bool) or not isinstance(version, int):
        raise TypeError(f"expect_version must be an int (a version, 0 or more) or None, not {type(version).__name__}")
    if version < 0:
        raise ValueError(f"expect_version must be a version number, 0 or more, not {version!r}")
    return int(version)


def attempt_limit(value: object, name: str = "attempts") -> int:
    """How many tries a call may make: an int, 1 or more (0 tries could never succeed)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, 1 or more, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be an int, 1 or more, not {value!r}")
    return value


_SETTINGS: dict[str, Callable[[Any], object]] = {
    "default_ttl": lambda value: ttl_seconds(value, "default_ttl"),
    "on_foreign_edit": foreign_policy,
    "update_attempts": lambda value: count(value, "update_attempts"),
    "update_deadline": lambda value: ttl_seconds(value, "update_deadline"),
    "optimistic_attempts": lambda value: count(value, "optimistic_attempts"),
    "retention": lambda value: retention_policy(value),
}


def retention_policy(value: Any) -> object:
    """A ``Retention`` or None (keep the stored policy)."""
    from .retention import Retention

    if value is not None and not isinstance(value, Retention):
        raise TypeError(f"retention must be a Retention or None, not {value!r}")
    return value


def check_settings(settings: dict[str, Any]) -> None:
    """Refuse an unknown Coordinator setting (TypeError) or a bad value (TypeError, ValueError)."""
    for name, value in settings.items():
        check = _SETTINGS.get(name)
        if check is None:
            raise TypeError(f"unknown Coordinator setting {name!r}; known: {', '.join(_SETTINGS)}")
        check(value)
