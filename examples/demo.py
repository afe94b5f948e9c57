"""`make demo`: the two ways agents lose each other's work, each broken and then fixed.

1. Lost updates: processes doing read-modify-write on one file, naively and through
   ``coord.update``.
2. The next_task.md incident: a file used as a mailbox, and the same pipeline on an acknowledged
   channel with a liveness check.

Offline and deterministic in its conclusions; runs in a few seconds.
"""

from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lost_update  # noqa: E402
import next_task_incident  # noqa: E402


def main() -> int:
    base = tempfile.mkdtemp(prefix="agent-coherence-demo-")
    print("agent-coherence demo (work directory: %s)" % base)
    print("\n#### 1. Lost updates on a shared file")
    counts = lost_update.run(os.path.join(base, "lost-update"))
    print("\n#### 2. The next_task.md incident")
    status = next_task_incident.main(["--root", os.path.join(base, "next-task")])
    lost_ok = counts.get("coordinated") == counts.get("expected")
    return 0 if (status == 0 and lost_ok) else 1


if __name__ == "__main__":
    raise SystemExit(main())
