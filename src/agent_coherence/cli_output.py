"""How the ``agent-coherence`` command prints: tables, ages and times, journal entries, JSON.

Plain text for a terminal and JSON for scripts; nothing here reads state. Kept apart from
:mod:`cli` so that each command's module (``status``, ``journal``, ``recover``) formats the same
way without reaching into the command-line parser's module.
"""

from __future__ import annotations

import json
import time
from typing import Any


def section(title: str, headers: list[str], rows: list[list[Any]]) -> None:
    """Print a titled table, its columns as wide as their widest cell (``none`` when empty)."""
    print(f"\n{title}")
    if not rows:
        print("  none")
        return
    cells = [headers] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def ago(seconds: float) -> str:
    """An age for people: ``12.5s ago``, ``14m ago``, ``3.2h ago``."""
    if seconds < 0:
        return "in the future (clock moved back?)"
    if seconds < 120:
        return f"{seconds:.1f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def when(ts: float) -> str:
    """An epoch timestamp as local date and time, to the millisecond."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}"


def readable(entry: Any) -> Any:
    """``entry``, if its fields have the types the output relies on; else JournalCorrupt (as
    ``journal verify`` reports it), not a TypeError from formatting a row edited outside the layer."""
    from .journal import unreadable_entry

    texts = (entry.kind, entry.key, entry.holder)
    if (isinstance(entry.ts, bool) or not isinstance(entry.ts, (int, float)) or not isinstance(entry.kind, str)
            or not all(text is None or isinstance(text, str) for text in texts) or not isinstance(entry.data, dict)):
        raise unreadable_entry(entry.seq, f"a field has the wrong type (ts={entry.ts!r}, kind={entry.kind!r}, "
                                          f"key={entry.key!r}, holder={entry.holder!r}, data of type "
                                          f"{type(entry.data).__name__})")
    return entry


def entry_dict(entry: Any) -> dict[str, Any]:
    """A journal entry for JSON output (its data once, parsed)."""
    readable(entry)
    return {name: getattr(entry, name) for name in ("seq", "ts", "kind", "key", "holder", "data", "prev_hash", "hash")}


def entry_line(entry: Any) -> str:
    """A journal entry on one line: sequence, time, kind, key, holder and its data."""
    readable(entry)
    return (f"{entry.seq:>6}  {when(entry.ts)}  {entry.kind:<16}  {entry.key or '-':<20}  "
            f"{entry.holder or '-':<12}  {compact(entry.data)}").rstrip()


def compact(data: dict[str, Any]) -> str:
    """A journal entry's data as ``name=value`` pairs: hashes shortened to the prefix that
    identifies them, anything long cut at 160 characters."""
    parts = []
    for name, value in data.items():
        if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
            text = value[:12]
        elif isinstance(value, str) and value and not any(c.isspace() or c in "\"'=" for c in value):
            text = value
        else:
            text = json.dumps(value, default=str)
        if len(text) > 160:
            text = text[:159] + "…"
        parts.append(f"{name}={text}")
    return " ".join(parts)


def print_json(value: Any, indent: int | None = 2) -> None:
    """Print ``value`` as JSON: indented with sorted keys, or one line (``indent=None``) in the
    order given."""
    print(json.dumps(value, indent=indent, default=str, sort_keys=indent is not None))
