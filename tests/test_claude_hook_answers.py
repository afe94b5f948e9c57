"""What Claude reads when the hook can't say yes: each refusal names its real cause and gives
advice that fits it. Run as Claude Code runs the hook, one fresh process per event (a fresh
interpreter matters: it is where ``json`` has not been imported yet)."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_claude_hook import reason, root, run_hook  # noqa: F401  (root is a fixture)


@pytest.mark.parametrize("cut", ['"file_path": "src/ap', '"file_path": "src\\q', '"file_path" "x"'])
def test_truncated_or_damaged_json_is_reported_as_such(root: Path, cut: str) -> None:
    """A damaged string or delimiter makes the C decoder fail before ``json`` is imported: the
    refusal must say the input is not valid JSON, not report an internal error."""
    raw = ('{"hook_event_name": "PreToolUse", "session_id": "a", "tool_name": "Write", '
           '"tool_input": {' + cut).encode()
    said = reason(run_hook(root, raw))
    assert "not valid JSON" in said and "internal error" not in said and "SystemError" not in said, said
