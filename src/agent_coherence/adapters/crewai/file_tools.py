"""Coherent drop-ins for crewai_tools' ``FileWriterTool`` and ``FileReadTool``.

``CoherentFileWriterTool`` has the stock tool's name, description, arguments (``filename``,
``content``, ``directory``, ``overwrite``) and success message, plus an optional
``expected_version``. Each write is :meth:`Coordinator.write` under the file's lease: the file is
replaced atomically and confirmed durable, so two parallel calls never leave a torn or mixed file;
the later one waits for the earlier and then writes on top of it, or fails visibly (a stale read, an
``expected_version`` that no longer holds, ``overwrite`` false on a file that now exists). Paths are
confined to ``base_dir``, fixed when the tool is built (not the working directory of each call);
``..``, absolute paths and symlinks that leave it are refused before anything is created.

``CoherentFileReadTool`` returns the content and the version it read, and remembers that version
for the agent, so the agent's next write of that file is refused if someone wrote it in between.
A read that finds the file missing is remembered the same way (a write creating it is refused if
someone else created it first).

Every failure is a CrewAI ``ToolFailure``; a success message is returned only for a confirmed write.
This module imports crewai and crewai_tools; ``agent_coherence.adapters.crewai`` loads it lazily.
"""

from __future__ import annotations

import os
from itertools import islice
from typing import Any, ClassVar

from crewai.tools import BaseTool
from crewai_tools import FileReadTool, FileWriterTool
from crewai_tools.tools.file_read_tool.file_read_tool import FileReadToolSchema
from crewai_tools.tools.file_writer_tool.file_writer_tool import FileWriterToolInput, strtobool
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ...coordinator import Coordinator
from ...errors import CoherenceError
from ..offload import in_thread
from .calls import Refused, advance_view, begin_call, default_holder, resolve_target
from .failures import Refusal, as_tool_failure, internal_error, invalid_input, refusal_for
from .tools import never_cache

DEFAULT_MAX_BYTES = 16 << 20


class CoherentFileWriterToolInput(FileWriterToolInput):
    """FileWriterTool's arguments, plus the version the change is based on."""

    expected_version: int | None = Field(
        None, ge=0, description=(
            "Optional: the version of the file your change is based on (as the file read tool reported "
            "it). The write is refused if the file has changed since."),
    )


class _Coordinated(BaseModel):
    """Fields shared by the two tools: the coordinator, the directory they are confined to, and
    the agent they act for."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    coordinates_itself: ClassVar[bool] = True  # the global hooks leave these tools alone

    coordinator: Coordinator
    holder: str | None = None
    # Checked when the tool is built: a wait no lease can honour would block every call.
    lease_wait: float = Field(10.0, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _anchor(self) -> "_Coordinated":
        """Fix ``base_dir`` (default: the coordinator's root) once, inside the root."""
        root = self.coordinator.root
        base = os.path.realpath(getattr(self, "base_dir", None) or root)
        if base != root and not base.startswith(root + os.sep):
            raise ValueError(f"base_dir {base!r} is outside the coordinator's root {root!r}")
        if os.path.exists(base) and not os.path.isdir(base):
            raise ValueError(f"base_dir {base!r} is not a directory")
        object.__setattr__(self, "base_dir", base)
        return self

    @model_validator(mode="after")
    def _known_encoding(self) -> "_Coordinated":
        """An unknown ``encoding`` is refused here: at a call it would fail every read or write."""
        encoding = getattr(self, "encoding", "utf-8")
        try:
            "".encode(encoding)  # unlike codecs.lookup, refuses codecs that are not text encodings (rot13)
        except (LookupError, TypeError):
            raise ValueError(f"encoding {encoding!r} is not a text encoding Python knows") from None
        return self

    @property
    def agent(self) -> str:
        return self.holder or default_holder()


class CoherentFileWriterTool(_Coordinated, FileWriterTool):
    """``FileWriterTool`` whose writes are coordinated, atomic and confirmed (see the module doc).

    ``CoherentFileWriterTool(coordinator=coord, base_dir="out", holder="crewai:writer")``;
    ``max_bytes`` caps one write (default 16 MiB).
    """

    args_schema: type[BaseModel] = CoherentFileWriterToolInput
    max_bytes: int = Field(DEFAULT_MAX_BYTES, ge=0)
    cache_function: Any = Field(default=never_cache)

    def _run(  # type: ignore[override]
        self, filename: str, content: str, directory: str | None = "./", overwrite: str | bool = False,
        expected_version: int | None = None, **_: Any,
    ) -> Any:
        try:
            return self._write(filename, content, directory or "./", overwrite, expected_version)
        except Refused as refused:
            return as_tool_failure(refused.refusal)
        except Exception as error:  # fail closed: an unexpected error is a failure, never a success
            return as_tool_failure(internal_error(error, str(filename)[:200]))

    async def _arun(self, **kwargs: Any) -> Any:  # type: ignore[override]
        """``_run`` in a worker thread; cancelled, the cancellation comes out once the write has
        ended (committed, or refused and undone) and its lease is given back."""
        return await in_thread(self._run, **kwargs)

    def _write(self, filename: str, content: str, directory: str, overwrite: str | bool,
               expected_version: int | None) -> str:
        replace, payload = self._checked(filename, content, directory, overwrite)
        base = str(self.base_dir)
        shown = os.path.join(directory, filename) if directory not in ("./", ".") else filename
        call = begin_call(self.coordinator, self.agent, [(shown, os.path.join(base, directory, filename))],
                          lease_wait=self.lease_wait, confine=base, renew=False,
                          check_disk=False)
        try:
            target = call.targets[0]
            display = os.path.relpath(target.artifact.path, os.path.realpath(os.path.join(base, directory)))
            if os.path.lexists(target.artifact.path) and not replace:
                raise Refused(Refusal("FileExists", (
                    f"File {display} already exists and overwrite option was not passed. Nothing was written; "
                    f"read it first, then write with overwrite=true to replace it."), False,
                    {"key": target.artifact.key}))
            try:
                receipt = self.coordinator.write(target.artifact.key, payload, lease=target.lease,
                                                 expect_version=expected_version)
            except CoherenceError as error:
                raise Refused(refusal_for(error, shown)) from error
            advance_view(self.coordinator, call.holder, receipt.key, receipt.version, receipt.sha256)
            return f"Content successfully written to {display}"
        finally:
            call.close()

    def _checked(self, filename: object, content: object, directory: object,
                 overwrite: str | bool) -> tuple[bool, bytes]:
        """Refuse bad input before anything touches the disk; (overwrite, payload bytes)."""
        if not isinstance(filename, str) or not isinstance(content, str) or not isinstance(directory, str):
            raise Refused(invalid_input(filename, "filename, content and directory must be strings"))
        for name, value in (("filename", filename), ("directory", directory)):
            if "\x00" in value:
                raise Refused(invalid_input(value, f"the {name} contains a NUL byte"))
            if os.path.isabs(value):
                raise Refused(invalid_input(value, f"the {name} is an absolute path; give a path relative "
                                                   f"to the tool's directory"))
        try:
            replace = strtobool(overwrite)
        except ValueError:
            raise Refused(invalid_input(filename, f"overwrite must be true or false, not {overwrite!r}")) from None
        try:
            payload = content.encode(self.encoding)
        except UnicodeEncodeError as error:
            raise Refused(invalid_input(filename, f"the content is not valid {self.encoding} ({error.reason} at "
                                                  f"character {error.start})")) from None
        if len(payload) > self.max_bytes:
            raise Refused(invalid_input(filename, f"the content is {len(payload)} bytes, over this tool's limit of "
                                                  f"{self.max_bytes} bytes"))
        return replace, payload


class CoherentFileReadTool(_Coordinated, BaseTool):
    """``FileReadTool`` (same name and arguments) that reports the version it read and records it
    for the agent, so the agent's next write of the file is checked against it. Reads are confined
    to ``base_dir``; ``file_path`` given here is the default file."""

    name: str = FileReadTool.model_fields["name"].default
    description: str = (
        f"{FileReadTool.model_fields['description'].default} The result ends with a line giving the file's "
        f"version; pass it as expected_version when you write the file."
    )
    args_schema: type[BaseModel] = FileReadToolSchema
    file_path: str | None = None
    base_dir: str | None = None
    encoding: str = "utf-8"

    def _run(  # type: ignore[override]
        self, file_path: str | None = None, start_line: int | None = 1, line_count: int | None = None, **_: Any,
    ) -> Any:
        shown = file_path or self.file_path
        if not isinstance(shown, str) or not shown:
            return as_tool_failure(invalid_input(shown or "", "no file_path was given", "read"))
        try:
            return self._read(shown, start_line or 1, line_count or None)
        except Refused as refused:
            return as_tool_failure(refused.refusal)
        except CoherenceError as error:
            return as_tool_failure(refusal_for(error, shown, "read"))
        except Exception as error:
            return as_tool_failure(internal_error(error, shown[:200], "read"))

    async def _arun(self, **kwargs: Any) -> Any:  # type: ignore[override]
        return await in_thread(self._run, **kwargs)

    def _read(self, shown: str, start_line: int, line_count: int | None) -> str:
        if "\x00" in shown:
            raise Refused(invalid_input(shown, "the path contains a NUL byte", "read"))
        if line_count is not None and line_count < 0:
            raise Refused(invalid_input(shown, f"line_count must be a number of lines, not {line_count}", "read"))
        base = str(self.base_dir)
        artifact = resolve_target(self.coordinator, shown, os.path.join(base, shown), base)
        snapshot = self.coordinator.read(artifact.key)
        if not snapshot.exists:
            if not snapshot.foreign_edit:
                # Seeing the file absent is a read too: a write creating it is then refused if
                # someone else created it in between, instead of replacing their file unseen.
                self.coordinator.backend.put_view(self.agent, artifact.key, snapshot.version, None)
            raise Refused(Refusal("FileNotFound", (
                f"agent-coherence: {shown} does not exist. To create it, write it: the write is refused if "
                f"someone else creates it first."), False, {"key": artifact.key, "version": snapshot.version}))
        try:
            text = snapshot.data.decode(self.encoding)
        except UnicodeDecodeError:
            raise Refused(invalid_input(shown, f"the file is not valid {self.encoding} text", "read")) from None
        # The stock tool's window: a start before line 1 is line 1, a start past the end an error
        # (an empty answer would read as an empty file to a model about to write it).
        start = max(start_line - 1, 0)
        lines = text.splitlines(keepends=True)
        if start and start >= len(lines):
            raise Refused(invalid_input(shown, f"start line {start_line} exceeds the number of lines in the file "
                                               f"({len(lines)})", "read"))
        selected = "".join(islice(lines, start, None if line_count is None else start + line_count))
        if not snapshot.foreign_edit:
            self.coordinator.backend.put_view(self.agent, artifact.key, snapshot.version, snapshot.sha256)
        note = (f"[agent-coherence: this is version {snapshot.version} of {shown}; to replace it, write with "
                f"expected_version={snapshot.version}]")
        if snapshot.foreign_edit:
            note = (f"[agent-coherence: {shown} was changed outside agent-coherence since version "
                    f"{snapshot.version}; a write to it will be refused until that change is accepted]")
        return f"{selected}\n{note}"
