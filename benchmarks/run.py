"""Run every benchmark script in this folder and collect their tables in one markdown report.

    python benchmarks/run.py [--quick] [--only core,channels] [--out PATH]

Each ``bench_*.py`` next to this file runs as its own subprocess (``bench_core`` first, the rest
in name order) with ``--quick`` passed through. Their markdown (stdout) is echoed as it arrives and
written, with the date, the machine and the command, to ``benchmarks/results/latest.md``
(gitignored). Progress lines (stderr) pass straight through. Exits non-zero if any script failed;
the report then says which.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _util import cpu_model, filesystem_of, load_average  # noqa: E402

DEFAULT_OUT = HERE / "results" / "latest.md"


def discover(only: set[str] | None) -> list[Path]:
    scripts = sorted(HERE.glob("bench_*.py"), key=lambda p: (p.stem != "bench_core", p.stem))
    if only:
        scripts = [p for p in scripts if p.stem.removeprefix("bench_") in only or p.stem in only]
    return scripts


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE,
                               capture_output=True, text=True).stdout.strip()
        return f"{rev}{' (with uncommitted changes)' if dirty else ''}"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def header(command: str) -> str:
    temp = tempfile.gettempdir()
    lines = [
        "# agent-coherence benchmarks",
        "",
        f"- date: {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- command: `{command}`",
        f"- machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu_model()}, "
        f"{platform.system()} {platform.release()}",
        f"- temp dir: `{temp}` on {filesystem_of(temp)}",
        f"- load average at start: {load_average()}",
        f"- Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, revision {git_revision()}",
        "",
        "Absolute times on a shared machine drift by ±25% between runs: read the ratios, which are "
        "measured side by side in interleaved rounds (see `benchmarks/README.md`).",
    ]
    return "\n".join(lines)


def run_script(script: Path, passthrough: list[str]) -> tuple[str, int, float]:
    """Run one script; echo and return its stdout, its exit code and its wall time."""
    cmd = [sys.executable, str(script), *passthrough]
    print(f"\n>>> {shlex.join(cmd)}", file=sys.stderr, flush=True)
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=HERE.parent, stdout=subprocess.PIPE, text=True, bufsize=1)
    captured: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        captured.append(line)
    code = proc.wait()
    return "".join(captured).strip(), code, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="passed to every script")
    parser.add_argument("--only", help="comma-separated script names (core, channels, crewai, hook)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"report path (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)

    only = {name.strip() for name in args.only.split(",")} if args.only else None
    scripts = discover(only)
    if not scripts:
        print("no bench_*.py scripts matched", file=sys.stderr)
        return 2
    command = shlex.join(["python", os.path.relpath(__file__, Path.cwd()), *(argv if argv is not None else sys.argv[1:])])
    passthrough = ["--quick"] if args.quick else []
    parts = [header(command)]
    failed: list[str] = []
    for script in scripts:
        # A script that does not know --quick would die on it: run it with its defaults instead.
        takes_quick = "--quick" in script.read_text(encoding="utf-8")
        output, code, wall = run_script(script, passthrough if takes_quick else [])
        parts.append(output or f"## {script.stem}\n\n_(no output)_")
        if passthrough and not takes_quick:
            parts.append(f"_`{script.name}` takes no `--quick`: it ran with its defaults._")
        if code != 0:
            failed.append(script.name)
            parts.append(f"_`{script.name}` exited with status {code} after {wall:.0f} s; its results above "
                         "are incomplete._")
    if failed:
        parts.append(f"**Failed:** {', '.join(failed)}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    print(f"\nreport written to {out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
