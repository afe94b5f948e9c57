"""The durable replace with a named and an unnamed temp file, and with work between write and fsync.

    .venv/bin/python benchmarks/ab_temp_files.py                       # 1 KiB and 64 KiB, in /var/tmp
    .venv/bin/python benchmarks/ab_temp_files.py --dir /data --rounds 9 --cpu-us 100

Plain ``os`` calls, no agent-coherence code: what a confirmed write's file step can cost at best.
Each case replaces one file durably, over and over:

- ``named``: the floor of ``bench_core.py`` (a temp file created by name, write, 45-byte stamp,
  fsync, rename, directory fsync, read back);
- ``unnamed``: the same with the temp file made by ``O_TMPFILE`` and linked under its name after
  its fsync (``durable.write_temp`` where the filesystem allows it);
- ``… + work``: ``--cpu-us`` µs of busy CPU between the write and the fsync (a write's database
  work: the intent, the check of the old bytes), without and with the writeback started first
  (``posix_fadvise(POSIX_FADV_DONTNEED)``), as a stamp-mode ``coord.write`` does with its bytes
  written ahead of its intent.

Cases interleave within each round (the order rotates); reported: the median of per-round medians
and the median of per-round ratios to ``named``, with their spread. Not run by ``run.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Callable

STAMP = b"s" * 45


def _spin(microseconds: float) -> None:
    end = time.perf_counter() + microseconds / 1e6
    while time.perf_counter() < end:
        pass


def _replace(dir_fd: int, data: bytes, *, unnamed: bool, work_us: float, start_writeback: bool) -> None:
    temp = f".t.{os.urandom(4).hex()}.tmp"
    if unnamed:
        fd = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
    else:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
    os.write(fd, data)
    if start_writeback:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    if work_us:
        _spin(work_us)
    os.setxattr(fd, "user.ab-temp-files", STAMP)
    os.fsync(fd)
    if unnamed:
        os.link(f"/proc/self/fd/{fd}", temp, dst_dir_fd=dir_fd, follow_symlinks=True)
    os.close(fd)
    os.rename(temp, "target", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    os.fsync(dir_fd)
    back = os.open("target", os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        if os.read(back, len(data) + 1) != data:
            raise SystemExit("read back differs")
    finally:
        os.close(back)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/var/tmp", help="a directory on the disk to measure (default /var/tmp)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ops", type=int, default=200, help="timed replaces per case per round")
    parser.add_argument("--cpu-us", type=float, default=100.0, help="busy CPU between write and fsync")
    parser.add_argument("--sizes", default="1024,65536")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(dir=args.dir, prefix="ab-temp-files-")
    dir_fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            os.close(os.open(".", os.O_TMPFILE | os.O_WRONLY, 0o600, dir_fd=dir_fd))
        except (AttributeError, OSError) as error:
            raise SystemExit(f"no O_TMPFILE in {args.dir}: {error}")
        cpu = args.cpu_us
        variants: dict[str, tuple[bool, float, bool]] = {
            "named": (False, 0, False),
            "unnamed": (True, 0, False),
            f"named + {cpu:.0f} µs work": (False, cpu, False),
            f"unnamed + {cpu:.0f} µs work": (True, cpu, False),
            f"unnamed + {cpu:.0f} µs work, writeback started": (True, cpu, True),
        }
        print(f"Durable replace in {args.dir}: median µs of {args.ops} per case per round, {args.rounds} "
              "rounds; ratio = median of per-round ratios to `named` (spread)\n")
        for size in (int(s) for s in args.sizes.split(",")):
            data = os.urandom(size)
            medians: dict[str, list[float]] = {name: [] for name in variants}
            names = list(variants)
            for round_ in range(args.rounds):
                shift = round_ % len(names)
                for name in names[shift:] + names[:shift]:
                    unnamed, work_us, writeback = variants[name]
                    op: Callable[[], None] = lambda: _replace(dir_fd, data, unnamed=unnamed, work_us=work_us,
                                                              start_writeback=writeback)
                    for _ in range(20):
                        op()
                    samples = []
                    for _ in range(args.ops):
                        started = time.perf_counter()
                        op()
                        samples.append(time.perf_counter() - started)
                    medians[name].append(statistics.median(samples) * 1e6)
            print(f"| {size // 1024} KiB | median µs | × named | spread |")
            print("|---|---:|---:|---:|")
            for name in names:
                ratios = [a / b for a, b in zip(medians[name], medians["named"])]
                print(f"| {name} | {statistics.median(medians[name]):.0f} | {statistics.median(ratios):.2f}× "
                      f"| {min(ratios):.2f}–{max(ratios):.2f} |")
            print()
    finally:
        os.close(dir_fd)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
