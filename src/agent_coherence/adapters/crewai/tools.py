"""``coherent_tool``: any CrewAI tool, with its file writes coordinated.

The wrapper has the tool's name, description and argument schema, so the model sees the same tool.
Around each call it takes the leases on the files the arguments name (see :mod:`.calls`), runs the
tool, then confirms and records what the tool wrote. A refusal (a file held by another writer, a
stale read, a path outside the root, an unconfirmed write, a lost lease) comes back as a CrewAI
``ToolFailure``; the tool's own result is returned only when every write was confirmed.

Limits: the tool writes the bytes itself, so the write is only as atomic as the tool makes it; the
layer confirms and records it afterwards. Files the tool writes without naming them in its
arguments are not coordinated unless declared with ``paths=``. Results are never cached.

This module imports crewai; ``agent_coherence.adapters.crewai`` loads it on first use.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

from crewai.tools import BaseTool
from pydantic import ConfigDict, Field, PrivateAttr

from ...coordinator import Coordinator
from ..offload import in_thread, in_thread_undone
from .calls import GuardedCall, Refused, begin_call
from .failures import Refusal, as_tool_failure, internal_error
from .targets import PathArgs, anchored, check_paths, extract_paths


def never_cache(_args: Any = None, _result: Any = None) -> bool:
    """``cache_function`` of every coordinated tool: a write must run every time it is asked for."""
    return False


class CoherentTool(BaseTool):
    """A tool whose calls hold the leases on the files they write (built by :func:`coherent_tool`)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    coordinates_itself: ClassVar[bool] = True  # the global hooks leave it alone

    inner: BaseTool
    coordinator: Coordinator
    holder: str | None = None
    # Checked when the tool is built: a wait no lease can honour would block every call.
    lease_wait: float = Field(10.0, ge=0, allow_inf_nan=False)
    base_dir: str | None = None
    _paths: PathArgs = PrivateAttr(default=None)

    def _guard(self, kwargs: dict[str, Any]) -> GuardedCall:
        named = extract_paths(self._paths, kwargs)
        if not named:
            raise Refused(Refusal("NoTarget", (
                f"agent-coherence: refused the call: none of its arguments names the file to write "
                f"({sorted(kwargs)}). Nothing was written. Name the file in the arguments."), False))
        base = self.base_dir or getattr(self.inner, "base_dir", None)
        pairs = [(shown, anchored(shown, base)) for shown in named]
        return begin_call(self.coordinator, self.holder, pairs, lease_wait=self.lease_wait)

    def _finish(self, call: GuardedCall, result: Any) -> Any:
        from crewai.tools.tool_failure import detect_tool_failure

        failed = detect_tool_failure(result) is not None
        problems = call.confirm(expect_written=not failed, said=result)
        if problems and not failed:
            return as_tool_failure(problems[0])
        return result

    def _run(self, **kwargs: Any) -> Any:
        try:
            call = self._guard(kwargs)
        except Refused as refused:
            return as_tool_failure(refused.refusal)
        except Exception as error:  # fail closed: never let an uncoordinated write through
            return as_tool_failure(internal_error(error, _unresolved_call(self.name, kwargs)))
        try:
            result: Any = None
            try:
                result = self.inner.run(**kwargs)
            except BaseException:
                call.confirm(expect_written=False)  # record what the tool left on disk before re-raising
                raise
            return self._finish(call, result)
        finally:
            call.close()

    async def _arun(self, **kwargs: Any) -> Any:
        # Cancelled while the guard waits for its leases in a thread, the leases it then gets are
        # closed there (a clean-up run beside it would miss them, and they would be renewed for
        # good); the other steps end before the cancellation comes out.
        if not _has_async(self.inner):
            return await in_thread(self._run, **kwargs)
        try:
            call = await in_thread_undone(GuardedCall.close, self._guard, kwargs)
        except Refused as refused:
            return as_tool_failure(refused.refusal)
        except Exception as error:
            return as_tool_failure(internal_error(error, _unresolved_call(self.name, kwargs)))
        try:
            try:
                result = await self.inner.arun(**kwargs)
            except BaseException:
                await in_thread(call.confirm, expect_written=False)
                raise
            return await in_thread(self._finish, call, result)
        finally:
            await in_thread(call.close)


def _has_async(tool: BaseTool) -> bool:
    """Whether ``tool`` has a real async implementation (an overridden ``_arun``, or a ``@tool``
    around a coroutine function)."""
    func = getattr(tool, "func", None)
    if func is not None:
        return inspect.iscoroutinefunction(func)
    return type(tool)._arun is not BaseTool._arun


def coherent_tool(
    tool: BaseTool, coordinator: Coordinator, *, paths: PathArgs = None, holder: str | None = None,
    lease_wait: float = 10.0, base_dir: str | None = None,
) -> CoherentTool:
    """Wrap ``tool`` (a ``BaseTool`` subclass instance or a ``@tool`` function) so its file writes
    are coordinated through ``coordinator``.

    ``paths``: which files a call writes, as a function of its arguments (``args -> paths``) or a
    fixed list; by default the common argument names are read (see :mod:`.targets`). ``holder``:
    who the agent is (its reads and writes are tracked under it; default ``crewai:<host>:<pid>``;
    give each agent its own and the same one to its read tool). ``lease_wait``: how long a call
    waits for another writer of the same file before it is refused (retryable). ``base_dir``:
    what relative paths are relative to (default: the tool's ``base_dir``, else the working
    directory; a relative one is taken from the working directory at each call), which must be
    where the tool opens them.

    Raises TypeError for anything that is not a CrewAI tool (a plain function: decorate it with
    ``crewai.tools.tool`` first), for a tool that coordinates itself (a ``coherent_tool``, the
    coherent file tools) and for a ``paths`` that is neither a function nor a list of paths;
    ValueError (pydantic's ValidationError) for a ``lease_wait`` that is negative or not finite.
    """
    if not isinstance(tool, BaseTool):
        raise TypeError(f"coherent_tool wraps a CrewAI tool (a BaseTool instance or an @tool function), not "
                        f"{type(tool).__name__} {tool!r}; decorate a plain function with crewai.tools.tool first")
    if getattr(type(tool), "coordinates_itself", False):
        # Wrapped again, each call would wait for the lease its own inner call then asks for,
        # and be refused as held (by itself) after lease_wait.
        raise TypeError(f"{type(tool).__name__} {tool.name!r} coordinates its own writes already; use it as it is, "
                        f"not wrapped with coherent_tool")
    check_paths(paths)
    wrapper = CoherentTool(
        name=tool.name, description=tool.description, args_schema=tool.args_schema,
        result_schema=tool.result_schema, env_vars=tool.env_vars, result_as_answer=tool.result_as_answer,
        max_usage_count=tool.max_usage_count, tool_failure_policy=tool.tool_failure_policy,
        cache_function=never_cache, inner=tool, coordinator=coordinator, holder=holder, lease_wait=lease_wait, base_dir=base_dir,
    )
    wrapper._paths = paths
    return wrapper


def _unresolved_call(tool: str, kwargs: dict[str, Any]) -> str:
    """The call, for a message written before its paths were known: the tool and its argument
    names, not their values (which may be the content, not a path)."""
    return f"the {tool!r} call (arguments: {', '.join(kwargs) or 'none'})"[:200]
