"""The LangGraph examples run offline and reach their conclusions (stock loss shown, fix holds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("langgraph.checkpoint.sqlite")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_double_run_example_counts_the_stock_fork_beside_coherent_graph(tmp_path: Path) -> None:
    out = run_example("langgraph_double_run.py", "--trials", "1", "--root", str(tmp_path))
    assert "stock SqliteSaver                  1 trials: history forked 1x" in out
    assert "returned runs missing from the thread's state 1" in out  # the stock loss, shown
    assert "on_busy='reject'   1 trials: history forked 0x, invokes returned 1, ThreadBusy 1" in out


def test_plan_nodes_example_checks_every_item_once(tmp_path: Path) -> None:
    out = run_example("langgraph_plan_nodes.py", "--root", str(tmp_path))
    assert "--- coherent_node: 3 of 3 items checked, 3 log lines, 3 worker writes" in out
    assert "--- stock nodes: 3 of 3 items checked, 3 log lines, 3 worker writes" not in out
