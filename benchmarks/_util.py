"""Shared helpers for the benchmark scripts: statistics, formatting, markdown tables, and
interleaved rounds.

This machine (and most CI runners) is shared and noisy: absolute times drift by ±25% between
runs. So every comparison here is measured *side by side*: each round runs every case once, in a
rotated order, and a case's result is the median of its per-round medians. Ratios are taken per
round (ours and the reference measured seconds apart) and then the median of those ratios is
quoted.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

# ------------------------------------------------------------------------------ statistics


def median(values: Iterable[float]) -> float:
    data = list(values)
    if not data:
        return math.nan
    return float(statistics.median(data))


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1)."""
    data = sorted(values)
    if not data:
        return math.nan
    rank = max(1, math.ceil(q * len(data)))
    return float(data[rank - 1])


# ------------------------------------------------------------------------------ formatting


def fmt_us(ns: float) -> str:
    """Nanoseconds as microseconds with sensible precision."""
    if math.isnan(ns):
        return "n/a"
    us = ns / 1000.0
    if us >= 1000:
        return f"{us:,.0f}"
    if us >= 100:
        return f"{us:.0f}"
    if us >= 10:
        return f"{us:.1f}"
    return f"{us:.2f}"


def fmt_ratio(ratio: float) -> str:
    if math.isnan(ratio):
        return "n/a"
    return f"{ratio:.2f}×"


def fmt_rate(per_s: float) -> str:
    if math.isnan(per_s):
        return "n/a"
    return f"{per_s:,.0f}"


def verdict(met: bool) -> str:
    return "**met**" if met else "**MISSED**"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table; the first column is left-aligned, the rest right."""
    lines = [
        "| " + " | ".join(str(h) for h in headers) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ rounds

Case = Callable[[], list[int]]
"""One measurement: runs its operation several times, returns nanoseconds per op."""


@dataclass
class RoundResults:
    """Per-round medians (ns) of every case, in round order."""

    per_round: dict[str, list[float]] = field(default_factory=dict)
    samples: dict[str, list[int]] = field(default_factory=dict)

    def median(self, name: str) -> float:
        """Median over rounds of the case's per-round median."""
        return median(self.per_round.get(name, []))

    def ratio(self, numerator: str, denominator: str) -> float:
        """Median over rounds of (numerator's round median / denominator's round median)."""
        pairs = zip(self.per_round.get(numerator, []), self.per_round.get(denominator, []))
        return median(a / b for a, b in pairs if b > 0)

    def ratio_spread(self, numerator: str, denominator: str) -> tuple[float, float]:
        """(min, max) of the per-round ratios: how much the rounds disagreed."""
        pairs = zip(self.per_round.get(numerator, []), self.per_round.get(denominator, []))
        ratios = [a / b for a, b in pairs if b > 0]
        return (min(ratios), max(ratios)) if ratios else (math.nan, math.nan)

    def p90(self, name: str) -> float:
        return percentile(self.samples.get(name, []), 0.90)


def interleaved_rounds(
    cases: dict[str, Case], rounds: int, *, progress: bool = True, label: str = ""
) -> RoundResults:
    """Run every case once per round, rotating the order each round so no case always runs
    first (cold caches) or last (after the others dirtied the page cache)."""
    names = list(cases)
    results = RoundResults({name: [] for name in names}, {name: [] for name in names})
    for r in range(rounds):
        shift = r % len(names)
        order = names[shift:] + names[:shift]
        started = time.monotonic()
        for name in order:
            ns = cases[name]()
            results.per_round[name].append(median(ns))
            results.samples[name].extend(ns)
        if progress:
            print(f"  [{label}] round {r + 1}/{rounds} done in {time.monotonic() - started:.1f}s",
                  file=sys.stderr, flush=True)
    return results


def time_ops(op: Callable[[int], object], n: int, warmup: int) -> list[int]:
    """Run ``op(i)`` ``warmup`` times untimed, then ``n`` times timed; ns per call."""
    for i in range(warmup):
        op(i)
    clock = time.perf_counter_ns
    samples: list[int] = []
    for i in range(warmup, warmup + n):
        t0 = clock()
        op(i)
        samples.append(clock() - t0)
    return samples


# ------------------------------------------------------------------------------ machine


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown"


def filesystem_of(path: str) -> str:
    """The filesystem type and device holding ``path`` (from /proc/mounts, longest mount prefix)."""
    real = os.path.realpath(path)
    best = ("", "unknown", "unknown")
    try:
        with open("/proc/mounts", encoding="utf-8") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) < 3:
                    continue
                device, mount, fstype = parts[0], parts[1].replace("\\040", " "), parts[2]
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best[0]):
                    best = (mount, fstype, device)
    except OSError:
        return "unknown"
    return f"{best[1]} ({best[2]} mounted on {best[0]})"


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
        return f"{one:.2f} {five:.2f} {fifteen:.2f}"
    except OSError:
        return "unknown"


# ------------------------------------------------------------------------------ profiling


class CallTimer:
    """Wraps callables to measure inclusive and exclusive (self) time per label, and the time
    each call path takes (``paths``), so a call tree can be printed.

    Nested wrapped calls are subtracted from their caller's exclusive time, so the exclusive
    times of all labels under one top-level call add up to that call's inclusive time. Wrap with
    :meth:`wrap` (an attribute of a module, class or instance), undo everything with
    :meth:`restore`. Adds about a microsecond per wrapped call: for attributing time, not for
    headline numbers.
    """

    def __init__(self) -> None:
        self.inclusive: dict[str, int] = {}
        self.exclusive: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.paths: dict[tuple[str, ...], list[int]] = {}  # call path -> [inclusive ns, calls]
        self._local = threading.local()  # one call stack per thread: a helper thread's calls are roots
        self._undo: list[tuple[object, str, object, bool]] = []

    def record(self, label: str, elapsed: int) -> None:
        """Account ``elapsed`` ns to ``label`` as a leaf called from the current frame."""
        self._push(label)
        self._pop(label, elapsed)

    @property
    def _stack(self) -> list[list]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def _push(self, label: str) -> None:
        self._stack.append([label, 0])

    def _pop(self, label: str, elapsed: int) -> None:
        stack = self._stack
        _, children = stack.pop()
        self.inclusive[label] = self.inclusive.get(label, 0) + elapsed
        self.exclusive[label] = self.exclusive.get(label, 0) + elapsed - children
        self.calls[label] = self.calls.get(label, 0) + 1
        path = tuple(frame[0] for frame in stack) + (label,)
        entry = self.paths.setdefault(path, [0, 0])
        entry[0] += elapsed
        entry[1] += 1
        if stack:
            stack[-1][1] += elapsed

    def timed(self, label: str, fn: Callable[..., object]) -> Callable[..., object]:
        clock = time.perf_counter_ns

        def wrapper(*args: object, **kwargs: object) -> object:
            self._push(label)
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                self._pop(label, clock() - t0)

        return wrapper

    def wrap(self, owner: object, attr: str, label: str | None = None) -> None:
        own = getattr(owner, "__dict__", {})
        had_own = attr in own
        raw = own[attr] if had_own else None  # e.g. the classmethod object itself, to put back as is
        setattr(owner, attr, self.timed(label or attr, getattr(owner, attr)))
        self._undo.append((owner, attr, raw, had_own))

    def restore(self) -> None:
        while self._undo:
            owner, attr, raw, had_own = self._undo.pop()
            if had_own:
                setattr(owner, attr, raw)
            else:
                delattr(owner, attr)  # an instance attribute that shadowed the class's method

    def overhead_ns(self, calls: int = 20000) -> float:
        """What one wrapped call costs beyond the call itself (measured, in ns): the caller's
        self time carries most of it."""
        def noop() -> None:
            return None

        probe = CallTimer()
        wrapped = probe.timed("probe", noop)
        clock = time.perf_counter_ns
        t0 = clock()
        for _ in range(calls):
            noop()
        bare = clock() - t0
        t0 = clock()
        for _ in range(calls):
            wrapped()
        return max(0.0, (clock() - t0 - bare) / calls)

    def reset(self) -> None:
        self.inclusive.clear()
        self.exclusive.clear()
        self.calls.clear()
        self.paths.clear()

    def tree(self, root: str, per: int, *, min_ns: float = 0.0) -> list[tuple[int, str, float, float]]:
        """(depth, label, calls per ``per``, inclusive ns per ``per``) rows of the call tree under
        the top-level label ``root``, each level in descending time."""
        rows: list[tuple[int, str, float, float]] = []

        def walk(path: tuple[str, ...]) -> None:
            children = sorted(
                ((p, ns, calls) for p, (ns, calls) in self.paths.items()
                 if len(p) == len(path) + 1 and p[:len(path)] == path),
                key=lambda item: -item[1],
            )
            for child, ns, calls in children:
                if ns / per >= min_ns:
                    rows.append((len(path), child[-1], calls / per, ns / per))
                    walk(child)

        ns, calls = self.paths.get((root,), [0, 0])
        rows.append((0, root, calls / per, ns / per))
        walk((root,))
        # Calls made on other threads (a helper the root handed work to) are roots of their own.
        for path, (ns, calls) in sorted(self.paths.items(), key=lambda item: -item[1][0]):
            if len(path) == 1 and path != (root,) and ns / per >= min_ns:
                rows.append((0, f"{path[0]} [on another thread, overlapping]", calls / per, ns / per))
                walk(path)
        return rows


class SQLStatementTimer:
    """Stands in for a sqlite3 connection, timing each statement under ``sql <VERB>`` (commits as
    ``sql COMMIT (FULL)`` / ``(NORMAL)``, after the last ``PRAGMA synchronous=``)."""

    def __init__(self, conn: "sqlite3.Connection", timer: CallTimer) -> None:
        self._conn, self._timer, self._sync = conn, timer, "NORMAL"

    def execute(self, sql: str, params: object = ()) -> "sqlite3.Cursor":
        verb = sql.split(None, 1)[0].upper()
        if verb == "PRAGMA" and "synchronous=" in sql:
            self._sync = sql.rsplit("=", 1)[1].strip().upper()
        label = f"sql COMMIT ({self._sync})" if verb == "COMMIT" else f"sql {verb}"
        return self._timer.timed(label, self._conn.execute)(sql, params)  # type: ignore[return-value]

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)


def profile_tables(timer: CallTimer, root_label: str, n: int, *, tree: bool = True) -> list[str]:
    """Markdown: the call tree under ``root_label`` and the top self-time steps, per operation."""
    total = timer.inclusive[root_label]
    rows = [[f"{'· ' * depth}{label}", f"{calls:.2f}", fmt_us(ns), f"{100 * ns * n / total:.0f}%"]
            for depth, label, calls, ns in timer.tree(root_label, n, min_ns=1000)]
    top = [[label, f"{timer.calls[label] / n:.2f}", fmt_us(ns / n), f"{100 * ns / total:.0f}%"]
           for label, ns in sorted(timer.exclusive.items(), key=lambda item: -item[1])[:14]]
    tree_part = [
        "Call tree (inclusive µs per operation; steps under 1 µs left out; a `work` closure run by "
        "`backend.transaction` counts as the transaction's own time; work handed to another thread is "
        "listed as its own root, and its time overlaps the caller's):",
        "",
        markdown_table(["step", "calls/op", "µs/op", "share"], rows),
        "",
    ] if tree else []
    return tree_part + [
        f"Biggest contributors by self time (time not spent in a wrapped callee; each wrapped callee adds "
        f"~{timer.overhead_ns() / 1000:.1f} µs of wrapper cost, mostly to its caller's self time):",
        "",
        markdown_table(["step", "calls/op", "self µs/op", "share"], top),
    ]
