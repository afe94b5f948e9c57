"""Device writes per confirmed write: this checkout against another git revision, and the bare floor.

    .venv/bin/python benchmarks/ab_stamp_io.py --against 32a3760 --rounds 5 --writes 200

The device is the block device under ``--dir`` (its ``/sys/dev/block/MAJ:MIN/stat``: writes
completed and sectors written). Each round runs, in alternating order, one subprocess per
revision (``Coordinator.write`` of 1 KiB to one key, holder ``agent-1``, after 20 untimed writes)
and one of the floor (temp file, write, fsync, rename, directory fsync). Reported per write: the
median (and the least) over rounds of device writes and KiB written (other writers only add:
the least is the closest to the write's own), the stamp's length and the file's st_blocks
(on ext4 an attribute that does not fit in the inode takes a 4 KiB block of its own, counted
there). The counts take in every other writer of the device: on a shared machine compare the
columns of one run, not runs. Not run by ``run.py`` (not a ``bench_*.py``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent

_CHILD = """
import os, shutil, sys, tempfile
n, scratch, stat_file, what = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def stat():
    fields = open(stat_file).read().split()
    return int(fields[4]), int(fields[6])
root = tempfile.mkdtemp(dir=scratch, prefix="ab-stamp-io-")
payloads = [os.urandom(1024), os.urandom(1024)]
if what == "floor":
    dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    target, temp = os.path.join(root, "a.md"), os.path.join(root, ".a.md.tmp")
    def write(i):
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, payloads[i & 1]); os.fsync(fd); os.close(fd)
        os.replace(temp, target); os.fsync(dfd)
else:
    import agent_coherence as ac
    coord = ac.Coordinator.open(root)
    target = os.path.join(root, "a.md")
    def write(i):
        coord.write("a.md", payloads[i & 1], holder="agent-1")
for i in range(20):
    write(i)
w0, s0 = stat()
for i in range(n):
    write(i)
w1, s1 = stat()
try:
    stamp = len(os.getxattr(target, "user.agent-coherence"))
except OSError:
    stamp = 0
print((w1 - w0) / n, (s1 - s0) * 512 / 1024 / n, stamp, os.stat(target).st_blocks)
shutil.rmtree(root)
"""


def _stat_file(directory: str) -> str:
    device = os.stat(directory).st_dev
    path = f"/sys/dev/block/{os.major(device)}:{os.minor(device)}/stat"
    if not os.path.exists(path):
        raise SystemExit(f"{directory} is on no block device with a stat file ({path})")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default="main")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the roots go (its device is counted)")
    args = parser.parse_args()
    stat_file = _stat_file(args.dir)
    other = tempfile.mkdtemp(prefix="ab-stamp-io-src-")
    archive = subprocess.run(["git", "-C", str(CHECKOUT), "archive", args.against, "src"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", other], input=archive, check=True)
    runs = {"this": str(CHECKOUT / "src"), args.against: os.path.join(other, "src"), "floor": ""}
    seen: dict[str, list[list[float]]] = {name: [] for name in runs}
    try:
        for round_ in range(args.rounds):
            for name in (list(runs) if round_ % 2 == 0 else list(reversed(runs))):
                env = dict(os.environ, PYTHONPATH=runs[name]) if runs[name] else dict(os.environ)
                out = subprocess.run([sys.executable, "-c", _CHILD, str(args.writes), args.dir, stat_file,
                                      "floor" if name == "floor" else "write"],
                                     env=env, capture_output=True, text=True, check=False)
                if out.returncode:
                    raise SystemExit(f"the {name} run failed:\n{out.stderr}")
                seen[name].append([float(v) for v in out.stdout.split()])
    finally:
        shutil.rmtree(other, ignore_errors=True)
    print(f"{'':>10} {'dev writes/write':>17} {'(min)':>6} {'KiB/write':>10} {'(min)':>6} {'stamp B':>8}"
          f" {'st_blocks':>10}")
    for name, rows in seen.items():
        writes, kib, stamp, blocks = (statistics.median(column) for column in zip(*rows))
        least = [min(column) for column in zip(*rows)]
        print(f"{name:>10} {writes:17.2f} {least[0]:6.2f} {kib:10.1f} {least[1]:6.1f} {stamp:8.0f} {blocks:10.0f}"
              f"   (writes per round: {', '.join(f'{row[0]:.2f}' for row in rows)})")


if __name__ == "__main__":
    main()
