"""Time sequential ``ccs.CoherentVolume`` writes; print one JSON object.

Run ONLY with the peer venv's python (see ``peer_env.ensure_peer_venv``)::

    .peer-venv/bin/python -I peer_ccs_driver.py --dir /tmp/x --size 1024 --n 200 --method write

It must never import our ``agent_coherence`` package: the PyPI distribution
``agent-coherence==0.15.0`` that provides ``ccs`` collides with ours by name.

What one timed op is (ccs 0.15.0, read from its installed source):

* ``write``: ``CoherentVolume.write(path, data)`` -- HTTP POST ``/hooks/pre-edit``
  (take EXCLUSIVE) to the coordinator, sha256 of data and of the file on disk,
  tmp file + ``os.write`` + ``fsync`` + ``os.replace`` (no directory fsync),
  then HTTP POST ``/hooks/post-edit`` (commit the hash; version += 1).
* ``write_cas``: ``CoherentVolume.write_cas(path, make_content)`` -- HTTP POST
  ``/hooks/pre-read`` + file read + sha256 (the version comparand), then HTTP
  POST ``/hooks/post-edit-cas`` (version-checked commit), and only on a win the
  same tmp + fsync + ``os.replace`` write.

The coordinator is a ``ThreadingHTTPServer`` that the volume spawns *inside
this process* (daemon thread, ``127.0.0.1``, fresh TCP connection per request)
over SQLite WAL with ``synchronous=NORMAL``.

Each op writes a distinct payload (an op counter stamped into its first 8
bytes): ``write`` skips the disk write when the file already holds the same
bytes, which would otherwise measure a no-op.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

_REL_PATH = "bench/payload.bin"
_MANAGED_GLOB = "bench/**"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True, help="scratch directory (a fresh volume root is made inside it)")
    p.add_argument("--size", type=int, default=1024, help="payload size in bytes")
    p.add_argument("--n", type=int, default=200, help="timed ops")
    p.add_argument("--method", choices=("write", "write_cas"), default="write")
    p.add_argument("--warmup", type=int, default=5, help="untimed ops before timing")
    p.add_argument(
        "--unmanaged", action="store_true",
        help="do not declare the file as managed (strict) -- the coordinator's untracked fast path",
    )
    p.add_argument("--keep", action="store_true", help="keep the volume root afterwards")
    args = p.parse_args(argv)
    if args.size < 8 or args.n < 1 or args.warmup < 0:
        p.error("need --size >= 8, --n >= 1, --warmup >= 0")
    return args


def _percentile(sorted_ns: list[int], q: float) -> int:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, math.ceil(q * len(sorted_ns)))
    return sorted_ns[rank - 1]


def _measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    # Imported here so ``--help`` works without the peer installed.
    import importlib.metadata

    from ccs.adapters.claude_code.lifecycle import stop_coordinator
    from ccs.adapters.coherent_volume import CoherentVolume

    if "agent_coherence" in sys.modules:  # pragma: no cover - guard against a misconfigured sys.path
        raise RuntimeError("our agent_coherence package leaked into the peer driver")

    base = os.urandom(args.size)
    target = root / _REL_PATH
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(base)  # write_cas needs an existing file to read a version from

    managed = () if args.unmanaged else (_MANAGED_GLOB,)
    volume = CoherentVolume(root, managed=managed)
    samples: list[int] = []
    last_version: int | None = None
    try:
        volume.read(_REL_PATH)  # register this agent's view, as a read-then-write agent would

        def payload(i: int) -> bytes:
            return i.to_bytes(8, "little") + base[8:]

        # The single writer never loses a race, so write_cas's make_content runs
        # once per op and may ignore the current bytes it is handed.
        op: Callable[[bytes], object]
        if args.method == "write":
            op = lambda data: volume.write(_REL_PATH, data)  # noqa: E731
        else:
            op = lambda data: volume.write_cas(_REL_PATH, lambda _current: data)  # noqa: E731

        for i in range(args.warmup):
            op(payload(i))
        last: object = None
        for i in range(args.warmup, args.warmup + args.n):
            data = payload(i)
            t0 = time.perf_counter_ns()
            last = op(data)
            samples.append(time.perf_counter_ns() - t0)
        if target.read_bytes() != payload(args.warmup + args.n - 1):
            raise RuntimeError("last write did not land on disk")
        # write_cas returns CasCommitResult(version=...): the coordinator's
        # version after the last op (nominal, not counted, on the untracked fast path).
        last_version = getattr(last, "version", None)
    finally:
        with contextlib.suppress(Exception):
            stop_coordinator(root)

    ordered = sorted(samples)
    return {
        "method": args.method,
        "size": args.size,
        "n": args.n,
        "median_us": statistics.median(ordered) / 1000.0,
        "p90_us": _percentile(ordered, 0.90) / 1000.0,
        "ops_per_s": args.n / (sum(ordered) / 1e9),
        "managed": not args.unmanaged,
        "warmup": args.warmup,
        "last_version": last_version,
        "peer": f"agent-coherence=={importlib.metadata.version('agent-coherence')} (ccs)",
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=f"ccs-{args.method}-{args.size}-", dir=args.dir))
    real_stdout = sys.stdout
    try:
        # Anything the peer prints goes to stderr; stdout carries only the JSON.
        with contextlib.redirect_stdout(sys.stderr):
            result = _measure(args, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result), file=real_stdout, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
