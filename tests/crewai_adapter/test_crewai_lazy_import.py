"""``import agent_coherence`` and ``import agent_coherence.adapters.crewai`` load no crewai."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CHECK = """
import sys
import agent_coherence
import agent_coherence.adapters.crewai as adapter
assert callable(adapter.__getattr__)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("crewai", "crewai_tools", "crewai_core"))
print("loaded:", loaded)
sys.exit(1 if loaded else 0)
"""


def test_the_adapter_package_does_not_import_crewai(tmp_path: Path) -> None:
    env = dict(os.environ, HOME=str(tmp_path), CREWAI_STORAGE_DIR=str(tmp_path / "storage"))
    done = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "loaded: []"
    assert not (tmp_path / ".local").exists()  # nothing of crewai's was written under HOME
