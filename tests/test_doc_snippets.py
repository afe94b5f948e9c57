"""Every ```python block in README.md and docs/*.md runs against the package as it stands.

Each block runs as its own script in a fresh temporary directory (the cwd), with a temporary
HOME, CrewAI's telemetry and tracing off and its storage under the temporary directory, and must
exit 0. A doc can mark a block on the line just before its fence:

* ``<!-- snippet: not run (reason) -->``: the block is skipped with that reason (it needs a
  server, a key or the network, or is a fragment that cannot run alone); it must still parse;
* ``<!-- snippet: continues -->``: the block runs after the previous block of the same file, as
  one script, so a walkthrough can split one program across several blocks (a block that
  continues one not run is not run either).

A misplaced or unknown marker fails the suite rather than being ignored.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TIMEOUT = 120

FENCE = re.compile(r"^```python[ \t]*$")
MARK = re.compile(r"^<!--\s*snippet:\s*(.*?)\s*-->\s*$")
SKIP = re.compile(r"^not run\s*\((.+)\)$")


@dataclass
class Block:
    doc: Path
    index: int  # 1-based among the doc's python blocks
    line: int  # 1-based line of the opening fence
    code: str  # the block, with the blocks it continues prepended
    skip: str | None


def blocks(doc: Path) -> list[Block]:
    """The python blocks of ``doc``, each with its marker applied."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        if not FENCE.match(lines[i]):
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        assert i < len(lines), f"{doc.name}:{start + 1}: unclosed ```python block"
        i += 1
        mark = MARK.match(lines[start - 1]) if start > 0 else None
        marker = mark.group(1) if mark else ""
        code = "\n".join(body) + "\n"
        skip = None
        if marker == "continues":
            assert found, f"{doc.name}:{start + 1}: the first block cannot continue another"
            code = found[-1].code + "\n" + code
            skip = found[-1].skip
        elif marker:
            m = SKIP.match(marker)
            assert m, f"{doc.name}:{start}: unknown snippet marker {marker!r}"
            skip = m.group(1)
        found.append(Block(doc, len(found) + 1, start + 1, code, skip))
    return found


ALL = [b for doc in DOCS for b in blocks(doc)]


def test_the_docs_have_python_blocks() -> None:
    assert len(ALL) >= 30, [f"{b.doc.name}#{b.index}" for b in ALL]


def test_every_marker_sits_just_before_a_python_fence() -> None:
    misplaced = []
    for doc in DOCS:
        lines = doc.read_text(encoding="utf-8").splitlines() + [""]
        for n, line in enumerate(lines[:-1]):
            if "<!-- snippet" in line and not (MARK.match(line) and FENCE.match(lines[n + 1])):
                misplaced.append(f"{doc.name}:{n + 1}")
    assert not misplaced, f"a snippet marker applies to the ```python fence on the very next line: {misplaced}"


@pytest.mark.parametrize("block", ALL, ids=[f"{b.doc.name}#{b.index}" for b in ALL])
def test_doc_snippet_runs(block: Block, tmp_path: Path) -> None:
    compile(block.code, f"{block.doc.name}#{block.index}", "exec")  # even a skipped block must parse
    if block.skip is not None:
        pytest.skip(block.skip)
    for extra in ("crewai", "langgraph"):  # looked up, not imported: import crewai writes under $HOME
        if extra in block.code and importlib.util.find_spec(extra) is None:
            pytest.skip(f"{extra} is not installed")
    work = tmp_path / "work"
    home = tmp_path / "home"
    work.mkdir()
    home.mkdir()
    script = tmp_path / "snippet.py"
    script.write_text(block.code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_COHERENCE", "CREWAI", "OTEL"))}
    env.update(
        PYTHONPATH=str(ROOT / "src"),
        HOME=str(home),
        CREWAI_DISABLE_TELEMETRY="true",
        CREWAI_TRACING_ENABLED="false",
        OTEL_SDK_DISABLED="true",
        CREWAI_STORAGE_DIR=str(tmp_path / "crewai"),
    )
    done = subprocess.run([sys.executable, str(script)], cwd=work, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, (
        f"{block.doc.relative_to(ROOT)} block {block.index} (line {block.line}) exited {done.returncode}\n"
        f"--- code\n{block.code}--- stdout\n{done.stdout}--- stderr\n{done.stderr}"
    )
