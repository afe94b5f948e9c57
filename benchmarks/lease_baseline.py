"""Lease cycles of another revision of agent-coherence, for an A/B in the same interleaved rounds.

    python lease_baseline.py --src /tmp/base/src --dir /tmp/scratch

``--src`` is the ``src`` folder of that revision (``git archive REV src | tar -x -C DIR``), put
first on ``sys.path`` so that its ``agent_coherence`` is imported instead of this checkout's. Reads
one case per line on stdin (``coord N`` or ``backend N``: N timed cycles after a warm-up, on a fresh
Coordinator in a fresh directory, as ``bench_core``'s lease cases do) and prints the nanoseconds of
each cycle as one JSON list per line. The first line printed names the package file imported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True, help="the src folder of the baseline revision")
    parser.add_argument("--dir", required=True, help="scratch directory")
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, os.path.abspath(args.src))
    import agent_coherence
    from agent_coherence import Coordinator

    print(json.dumps(agent_coherence.__file__), flush=True)
    for line in sys.stdin:
        case, count = line.split()
        root = tempfile.mkdtemp(prefix=f"baseline-{case}-", dir=args.dir)
        coord = Coordinator.open(root)
        key = "locks/resource.txt"
        backend, canonical = coord.backend, coord.key(key)

        if case == "coord":
            def cycle() -> None:
                coord.release(coord.acquire(key, holder="bench", ttl=30))
        else:
            def cycle() -> None:
                record = backend.acquire_lease(canonical, "bench", 30.0)
                backend.release_lease(canonical, "bench", record.fence)

        for _ in range(args.warmup):
            cycle()
        clock, samples = time.perf_counter_ns, []
        for _ in range(int(count)):
            started = clock()
            cycle()
            samples.append(clock() - started)
        coord.close()
        shutil.rmtree(root, ignore_errors=True)
        print(json.dumps(samples), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
