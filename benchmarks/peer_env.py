"""Isolated virtualenv for the ``ccs`` peer (PyPI ``agent-coherence==0.15.0``).

That PyPI distribution is an unrelated project whose *distribution* name
collides with ours (its import package is ``ccs``), so it can never be
installed next to our package. The benchmarks give it a venv of its own and
drive it out of process through ``peer_ccs_driver.py``.

Typical use from a benchmark script::

    from peer_env import ensure_peer_venv, run_ccs_driver
    py = ensure_peer_venv()
    row = run_ccs_driver(py, "/tmp/bench", size=1024, n=200, method="write")
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

PEER_REQUIREMENT = "agent-coherence==0.15.0"
"""The pinned peer; bumping it re-installs on the next ``ensure_peer_venv``."""

_BENCH_DIR = Path(__file__).resolve().parent
_REPO_ROOT = _BENCH_DIR.parent
_DRIVER = _BENCH_DIR / "peer_ccs_driver.py"
_SENTINEL = ".peer-installed"


def _resolve(path: str | os.PathLike[str]) -> Path:
    """Resolve a relative venv path against the repository root, not the CWD,
    so ``benchmarks/.peer-venv`` means the same place from any directory."""
    p = Path(path)
    return p if p.is_absolute() else _REPO_ROOT / p


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _run_quiet(cmd: list[str]) -> None:
    """Run ``cmd`` with output captured; raise with the output's tail on failure."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")


def ensure_peer_venv(path: str | os.PathLike[str] = "benchmarks/.peer-venv") -> str:
    """Return the python of a venv holding ``agent-coherence==0.15.0`` (``ccs``).

    Creates the venv (``python -m venv``) and pip-installs the pin only when
    they are missing; otherwise it is a cheap no-op. Quiet unless something
    fails (then ``RuntimeError`` with the tool output). Safe to call from
    several processes at once: creation is serialised by an ``flock`` on a
    lock file inside the venv directory (so it is covered by the venv's
    ``.gitignore`` entry). A relative ``path`` is taken relative to the
    repository root.
    """
    venv = _resolve(path)
    python = _venv_python(venv)
    sentinel = venv / _SENTINEL
    if python.exists() and sentinel.is_file() and sentinel.read_text().strip() == PEER_REQUIREMENT:
        return str(python)

    venv.mkdir(parents=True, exist_ok=True)  # ``python -m venv`` accepts an existing directory
    with open(venv / ".create.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            # Re-check under the lock: another process may have finished it.
            if python.exists() and sentinel.is_file() and sentinel.read_text().strip() == PEER_REQUIREMENT:
                return str(python)
            if not python.exists():
                _run_quiet([sys.executable, "-m", "venv", str(venv)])
            _run_quiet([
                str(python), "-m", "pip", "install", "--quiet",
                "--disable-pip-version-check", "--no-input", PEER_REQUIREMENT,
            ])
            # Verify the install really provides ``ccs`` at the pinned version.
            _run_quiet([
                str(python), "-I", "-c",
                "import importlib.metadata as m, ccs.adapters.coherent_volume; "
                f"assert m.version('agent-coherence') == {PEER_REQUIREMENT.split('==')[1]!r}",
            ])
            sentinel.write_text(PEER_REQUIREMENT + "\n")
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
    return str(python)


def run_ccs_driver(
    python: str,
    dirpath: str | os.PathLike[str],
    *,
    size: int,
    n: int,
    method: Literal["write", "write_cas"],
    warmup: int = 5,
    unmanaged: bool = False,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Run ``peer_ccs_driver.py`` under the peer venv's ``python`` and return
    its JSON result. The driver runs with ``-I`` (isolated mode) so a
    ``PYTHONPATH`` pointing at our ``src/`` cannot shadow anything in it."""
    cmd = [
        python, "-I", str(_DRIVER),
        "--dir", str(dirpath), "--size", str(size), "--n", str(n),
        "--method", method, "--warmup", str(warmup),
    ]
    if unmanaged:
        cmd.append("--unmanaged")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"ccs driver failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if not lines:
        raise RuntimeError(f"ccs driver printed nothing; stderr:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


if __name__ == "__main__":
    print(ensure_peer_venv(*sys.argv[1:2]))
