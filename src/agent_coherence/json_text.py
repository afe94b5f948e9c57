"""JSON text in and out as the standard ``json`` package makes it, without importing that package.

The Claude Code hook starts a fresh interpreter on every tool call, and ``import json`` is a fifth
of its start-up: the package compiles regular expressions at import, which loads ``re`` and through
it ``enum``, ``functools`` and ``collections`` (about 5 ms here). The work itself is done by
CPython's C accelerator ``_json`` either way; this module calls it directly, with the same
settings ``json.loads`` and ``json.dumps`` give it, so the text and the values are the same ones
(a property test holds them to it). An interpreter without ``_json`` gets the ``json`` package
itself.

Errors are json's own: malformed text raises ``json.JSONDecodeError`` (a ValueError; the package
is imported on that path only), also in a fresh interpreter where ``json`` was never imported, a
value that can't be encoded TypeError or ValueError.

Limits: ``loads`` takes text (``str``); bytes are handed to ``json.loads``. ``dumps`` offers only
the options this package uses.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time: this module is on the hook path
if TYPE_CHECKING:
    from typing import Any, Callable

__all__ = ["dumps", "loads", "quote"]

_WHITESPACE = " \t\n\r"  # what json's decoder skips around the value


def _not_serializable(value: object) -> object:
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def _decode_error(message: str, text: str, position: int) -> ValueError:
    from json import JSONDecodeError

    return JSONDecodeError(message, text, position)


class _DecoderSettings:
    """What ``_json.make_scanner`` reads from a ``json.JSONDecoder()`` made with no arguments."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__


try:
    import _json as _accelerator
except ImportError:  # an interpreter without the accelerator: the package does the same in Python
    _accelerator = None  # type: ignore[assignment]

if _accelerator is None:
    import json as _json_package
    from json.encoder import encode_basestring_ascii as _quote

    def loads(text: str) -> Any:
        """``json.loads(text)``."""
        return _json_package.loads(text)

    def dumps(value: Any, *, sort_keys: bool = False, separators: tuple[str, str] | None = None,
              default: Callable[[Any], Any] | None = None) -> str:
        """``json.dumps(value, sort_keys=..., separators=..., default=...)``."""
        return _json_package.dumps(value, sort_keys=sort_keys, separators=separators, default=default)
else:
    _quote = _accelerator.encode_basestring_ascii
    # typeshed types the context as a scanner; what the C code reads is the attributes above.
    _scan = _accelerator.make_scanner(_DecoderSettings())  # type: ignore[arg-type]

    def loads(text: str) -> Any:
        """``json.loads(text)``: the value of one JSON document, with whitespace around it allowed."""
        if not isinstance(text, str):
            import json

            return json.loads(text)
        if text.startswith("\ufeff"):
            raise _decode_error("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        start = len(text) - len(text.lstrip(_WHITESPACE))
        try:
            value, end = _scan(text, start)
        except StopIteration as stop:
            raise _decode_error("Expecting value", text, stop.value) from None
        except SystemError:
            # Before 3.12 the accelerator builds its JSONDecodeError from ``json.decoder`` only when
            # that module is already imported; otherwise a malformed string, escape or delimiter
            # comes out as "returned NULL without setting an exception". The package raises the
            # real error (it is imported on this path only).
            import json

            return json.loads(text)
        if end != len(text):
            rest = text[end:]
            end += len(rest) - len(rest.lstrip(_WHITESPACE))
            if end != len(text):
                raise _decode_error("Extra data", text, end)
        return value

    def dumps(value: Any, *, sort_keys: bool = False, separators: tuple[str, str] | None = None,
              default: Callable[[Any], Any] | None = None) -> str:
        """``json.dumps(value, sort_keys=..., separators=..., default=...)`` (ASCII output, NaN and
        the infinities by name, circular references refused)."""
        item, key = separators if separators is not None else (", ", ": ")
        # A new encoder per call, as json.dumps makes: its record of the containers being encoded
        # (the circular-reference check) must start empty even after a call that raised.
        encode = _accelerator.make_encoder({}, _not_serializable if default is None else default, _quote, None,
                                           key, item, sort_keys, False, True)
        return "".join(encode(value, 0))


quote: Callable[[str], str] = _quote
"""The JSON string literal of a str as ``json.dumps`` writes it (ASCII, escaped): the C function."""
