"""Bad input from the model: a clear ToolFailure, and nothing written anywhere."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from agent_coherence import Coordinator
from conftest import tree_snapshot

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def writer(work: Path, wcoord: Coordinator) -> Any:
    from agent_coherence.adapters.crewai import CoherentFileWriterTool

    os.symlink(work / "outside", work / "root" / "escape")
    return CoherentFileWriterTool(coordinator=wcoord, base_dir=str(work / "root"), max_bytes=1024)


BAD = [
    ({"filename": "../outside/x.txt"}, "PathOutsideRoot", "resolves outside"),
    ({"filename": "escape/x.txt"}, "PathOutsideRoot", "symlink"),
    ({"filename": "new/dir/a\x00b.txt"}, "InvalidInput", "NUL byte"),
    ({"filename": "x.txt", "directory": "/tmp"}, "InvalidInput", "absolute path"),
    ({"filename": "x.txt", "directory": "{root}"}, "InvalidInput", "absolute path"),
    ({"filename": "{root}/x.txt"}, "InvalidInput", "absolute path"),
    ({"filename": "new/x.txt", "content": "y" * 1025}, "InvalidInput", "over this tool's limit of 1024"),
    ({"filename": "new/x.txt", "content": "bad \udcff"}, "InvalidInput", "not valid utf-8"),
    ({"filename": "new/\udcff.txt"}, "PathOutsideRoot", "unencodable"),
    ({"filename": "x.txt", "overwrite": "perhaps"}, "InvalidInput",
     "write 'x.txt': overwrite must be true or false, not 'perhaps'"),
    ({"filename": "x.txt", "expected_version": 7}, "VersionConflict", "version 7 that your change names does not exist"),
]


@pytest.mark.parametrize("args, code, why", BAD, ids=[c[1] + ":" + c[2] for c in BAD])
def test_refused_and_nothing_written(work: Path, writer: Any, args: dict[str, Any], code: str, why: str) -> None:
    from crewai.tools import ToolFailure

    args = {k: v.replace("{root}", str(work / "root")) if isinstance(v, str) else v for k, v in args.items()}
    call = {"content": "data", "overwrite": True, **args}
    before = tree_snapshot(work, skip=".agent-coherence")
    result = writer.run(**call)
    assert isinstance(result, ToolFailure), result
    assert result.code == code and why in result.message and "Nothing was written" in result.message, result
    assert tree_snapshot(work, skip=".agent-coherence") == before


def test_a_refusal_reaches_the_model_and_the_task_record(work: Path, writer: Any) -> None:
    from agent_coherence.adapters.crewai.scripted import ScriptedLLM, run_crew

    from .conftest import tool_results

    told: list[str] = []

    def script(messages: list[dict[str, Any]]) -> Any:
        if not tool_results(messages):
            return [("file_writer_tool", {"filename": "../outside/x.txt", "content": "x", "overwrite": True})]
        told.extend(tool_results(messages))
        return "done"

    before = tree_snapshot(work, skip=".agent-coherence")
    output = run_crew(ScriptedLLM(script), [writer])
    assert len(told) == 1 and told[0].startswith("agent-coherence: refused") and "(code: PathOutsideRoot)" in told[0]
    assert [f.failure.code for f in output.tool_failures] == ["PathOutsideRoot"]
    assert tree_snapshot(work, skip=".agent-coherence") == before


def test_a_negative_expected_version_is_an_argument_error_not_a_retry(work: Path, writer: Any) -> None:
    """It was an InternalError the model was told to retry, which can never succeed."""
    from agent_coherence.adapters.crewai.scripted import ScriptedLLM, run_crew

    from .conftest import tool_results

    told: list[str] = []

    def script(messages: list[dict[str, Any]]) -> Any:
        if not tool_results(messages):
            return [("file_writer_tool", {"filename": "x.txt", "content": "x", "overwrite": True,
                                          "expected_version": -1})]
        told.extend(tool_results(messages))
        return "done"

    before = tree_snapshot(work, skip=".agent-coherence")
    output = run_crew(ScriptedLLM(script), [writer])
    assert len(told) == 1 and "arguments validation failed" in told[0] and "greater than or equal to 0" in told[0]
    assert [(f.failure.code, f.failure.retryable) for f in output.tool_failures] == [("ValueError", False)]
    assert tree_snapshot(work, skip=".agent-coherence") == before


def test_tool_failure_policy_raise_stops_the_crew(work: Path, writer: Any) -> None:
    from crewai.tools import ToolExecutionFailedError

    from agent_coherence.adapters.crewai.scripted import ScriptedLLM, run_crew

    writer.tool_failure_policy = "raise"
    llm = ScriptedLLM([[("file_writer_tool", {"filename": "../x", "content": "x", "overwrite": True})], "done"])
    with pytest.raises(ToolExecutionFailedError, match="PathOutsideRoot"):
        run_crew(llm, [writer])


@pytest.mark.parametrize("through", ["wrapper", "hooks"])
def test_a_fifo_at_the_path_is_refused_before_the_tool_opens_it(work: Path, wcoord: Coordinator, through: str) -> None:
    """It read as "no file", so the tool ran and its open() of the FIFO blocked the call (the
    lease renewed all the while)."""
    from crewai.tools import ToolFailure, tool

    from agent_coherence.adapters.crewai import coherent_tool, install_crewai_hooks
    from agent_coherence.adapters.crewai.scripted import ScriptedLLM, run_crew

    from .conftest import tool_results

    opened: list[str] = []

    @tool("save_file")
    def save_file(path: str, content: str) -> str:
        """Save content to the file at path."""
        opened.append(path)  # a real tool would open(path, "w") here, and block on the FIFO
        return "saved"

    os.mkfifo(work / "root" / "pipe")
    if through == "wrapper":
        result = coherent_tool(save_file, wcoord, base_dir=str(work / "root")).run(path="pipe", content="x")
        assert isinstance(result, ToolFailure) and result.code == "NotARegularFile", result
        told = result.message
    else:
        seen: list[str] = []

        def script(messages: list[dict[str, Any]]) -> Any:
            seen[:] = tool_results(messages)
            return "done" if seen else [("save_file", {"path": str(work / "root" / "pipe"), "content": "x"})]

        hooks = install_crewai_hooks(wcoord)
        try:
            run_crew(ScriptedLLM(script), [save_file])
        finally:
            hooks.uninstall()
        [told] = seen
    assert "pipe' is a FIFO (named pipe), not a regular file" in told, told
    assert opened == [] and wcoord.leases() == [] and (work / "root" / "pipe").is_fifo()


def test_base_dir_outside_the_root_is_refused_at_construction(work: Path, wcoord: Coordinator) -> None:
    from agent_coherence.adapters.crewai import CoherentFileWriterTool

    with pytest.raises(ValueError, match="outside the coordinator's root"):
        CoherentFileWriterTool(coordinator=wcoord, base_dir=str(work / "outside"))


@pytest.mark.parametrize("build, why", [
    ("writer", {"lease_wait": -1}), ("writer", {"lease_wait": float("nan")}), ("writer", {"max_bytes": -1}),
    ("writer", {"base_dir": "a-file"}), ("reader", {"lease_wait": -1}), ("wrapped", {"lease_wait": -1}),
    ("wrapped", {"lease_wait": float("inf")}), ("writer", {"encoding": "no-such-codec"}),
    ("reader", {"encoding": "no-such-codec"}), ("writer", {"encoding": "rot13"}), ("reader", {"encoding": "base64"}),
], ids=lambda v: v if isinstance(v, str) else ",".join(f"{k}={v[k]}" for k in v))
def test_an_argument_no_call_could_honour_is_refused_at_construction(
        work: Path, wcoord: Coordinator, build: str, why: dict[str, Any]) -> None:
    """Accepted, these blocked (or refused) every call of the tool at run time instead."""
    from crewai_tools import FileWriterTool

    from agent_coherence.adapters.crewai import CoherentFileReadTool, CoherentFileWriterTool, coherent_tool

    (work / "root" / "a-file").write_text("x")
    options = {k: str(work / "root" / v) if k == "base_dir" else v for k, v in why.items()}
    with pytest.raises(ValueError):
        if build == "writer":
            CoherentFileWriterTool(coordinator=wcoord, **options)
        elif build == "reader":
            CoherentFileReadTool(coordinator=wcoord, **options)
        else:
            coherent_tool(FileWriterTool(), wcoord, **options)


def test_the_reader_reports_the_version_and_refuses_outside_paths(work: Path, wcoord: Coordinator) -> None:
    from crewai.tools import ToolFailure

    from agent_coherence.adapters.crewai import CoherentFileReadTool

    wcoord.write("notes.md", b"one\ntwo\nthree\n", holder="setup")
    reader = CoherentFileReadTool(coordinator=wcoord, holder="crewai:me")
    assert reader.name == "Read a file's content"
    text = reader.run(file_path="notes.md", start_line=2, line_count=1)
    assert text == "two\n\n[agent-coherence: this is version 1 of notes.md; to replace it, write with expected_version=1]"
    assert wcoord.backend.get_view("crewai:me", "notes.md") == (1, wcoord.version("notes.md").sha256)  # type: ignore[union-attr]
    (work / "outside" / "secret.txt").write_text("secret")
    for path in ("../outside/secret.txt", str(work / "outside" / "secret.txt")):
        refused = reader.run(file_path=path)
        assert isinstance(refused, ToolFailure) and refused.code == "PathOutsideRoot", refused
        # A read writes nothing: its refusal says what it could not read, not that nothing was written.
        assert refused.message.startswith(f"agent-coherence: refused to read {path!r}: "), refused
        assert "written" not in refused.message, refused


def test_a_read_with_no_path_says_so(wcoord: Coordinator) -> None:
    from crewai.tools import ToolFailure

    from agent_coherence.adapters.crewai import CoherentFileReadTool

    result = CoherentFileReadTool(coordinator=wcoord).run(file_path="")
    assert isinstance(result, ToolFailure) and result.code == "InvalidInput", result
    assert result.message.startswith("agent-coherence: refused to read '': no file_path was given"), result


@pytest.mark.parametrize("window, answer", [
    ({"start_line": -2}, "one\ntwo\nthree\n"),  # before line 1 is line 1, as with the stock tool
    ({"start_line": 4}, "start line 4 exceeds the number of lines in the file (3)"),
    ({"line_count": -1}, "line_count must be a number of lines, not -1"),
])
def test_the_reader_takes_the_stock_tools_line_window(wcoord: Coordinator, window: dict[str, int], answer: str) -> None:
    from crewai.tools import ToolFailure

    from agent_coherence.adapters.crewai import CoherentFileReadTool

    wcoord.write("notes.md", b"one\ntwo\nthree\n", holder="setup")
    result = CoherentFileReadTool(coordinator=wcoord, holder="crewai:me").run(file_path="notes.md", **window)
    if answer.startswith("one"):
        assert isinstance(result, str) and result.startswith(answer), result
        return
    assert isinstance(result, ToolFailure) and result.code == "InvalidInput" and answer in result.message, result
    assert wcoord.backend.get_view("crewai:me", "notes.md") is None  # nothing was read
