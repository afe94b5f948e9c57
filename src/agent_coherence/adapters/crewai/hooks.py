"""Global CrewAI tool-call hooks that coordinate every tool call that writes a file.

``install_crewai_hooks(coord)`` registers a before and an after tool-call hook (and the task watch
of :mod:`.tasks`). For a call whose tool is named in ``tools=``, or, by default, whose name or
arguments indicate a file write (:func:`.targets.looks_like_file_write`):

- **before**: the files named in the arguments get the call's leases and are checked (see
  :mod:`.calls`). The hook is fail-closed: a refusal, and any unexpected error inside the hook, blocks
  the call (CrewAI swallows every other exception a hook raises and would let the write through).
- **after**: the bytes the tool wrote are confirmed on disk and recorded as a new version, and the
  leases are released. Before and after are paired by ``id(ctx.tool_input)``, the one dict both
  hooks of a call share, so parallel calls never release each other's leases.

What the model is told: CrewAI answers a blocked call with a fixed text, so the after hook replaces
it with the refusal (what happened, who holds the file, what to do); a write that could not be
confirmed replaces the tool's success text the same way. Both are also recorded as tool failures
(``TaskOutput.tool_failures``). Nothing here raises out of a hook after the call: a problem found
then is reported, never turned into an aborted kickoff (CrewAI aborts the whole kickoff on a
``HookAborted`` raised after a call).

Several installed sets (``install_crewai_hooks`` called again without an uninstall): each call, and
each task's ``output_file``, is coordinated by the first set that takes it on; the others leave it
alone rather than wait for a lease their own process holds.

Limits: hooks see a tool's arguments, not its code; a write to a path not named in the arguments
is not coordinated. Tools that coordinate themselves (``coherent_tool``, the coherent file tools)
are left alone. The crew cannot be stopped from a hook: for that use the coherent tools with
``tool_failure_policy=RAISE``.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from crewai.hooks import (
    ToolCallHookContext, register_after_tool_call_hook, register_before_tool_call_hook,
    unregister_after_tool_call_hook, unregister_before_tool_call_hook,
)
from crewai.tools import BaseTool
from crewai.tools.tool_failure import ToolExecutionFailedError, detect_tool_failure, handle_tool_failure

from ...arguments import wait_seconds
from ...coordinator import Coordinator
from .calls import GuardedCall, Refused, begin_call
from .failures import Refusal, as_tool_failure, internal_error
from .targets import PathArgs, anchored, check_paths, extract_paths, looks_like_file_write
from .tasks import TaskWatch, check_busy_output

if TYPE_CHECKING:
    from ...models import Anomaly

_INSTALLED: list["CrewAIHooks"] = []


class CrewAIHooks:
    """The hooks registered by :func:`install_crewai_hooks`; ``uninstall()`` removes them."""

    def __init__(
        self, coordinator: Coordinator, *, holder: str | None = None, tools: Iterable[str | BaseTool] | None = None,
        paths: PathArgs = None, lease_wait: float = 10.0,
        outputs: Mapping[str, Sequence[str]] | Callable[[Any], Iterable[str]] | None = None,
        on_anomaly: Callable[[Anomaly], None] | None = None, watch_tasks: bool = True,
        on_busy_output: str = "write",
    ) -> None:
        # Checked here, not at the first tool call: there a wrong argument would only block every
        # write, one InternalError at a time.
        if not isinstance(coordinator, Coordinator):
            raise TypeError(f"install_crewai_hooks needs a Coordinator (Coordinator.open(root=...)), not "
                            f"{type(coordinator).__name__} {coordinator!r}")
        if holder is not None and not isinstance(holder, str):
            raise TypeError(f"holder= is the agent's name (a string), not {type(holder).__name__} {holder!r}")
        wait_seconds(lease_wait)
        check_busy_output(on_busy_output)
        check_paths(paths)
        if isinstance(outputs, Mapping):
            for label, declared in outputs.items():
                check_paths(declared, f"outputs[{label!r}]")
        elif outputs is not None and not callable(outputs):
            raise TypeError(f"outputs= maps task names to paths ({{'write the plan': ['plan.md']}}) or is a "
                            f"function of the task, not {type(outputs).__name__} {outputs!r}")
        if on_anomaly is not None and not callable(on_anomaly):
            raise TypeError(f"on_anomaly= is a function of the anomaly, not {type(on_anomaly).__name__} {on_anomaly!r}")
        self.coordinator = coordinator
        self.holder = holder
        self.tools = tool_names(tools) if tools is not None else None
        self.paths = paths
        self.lease_wait = lease_wait
        self.tasks = TaskWatch(coordinator, outputs=outputs, on_anomaly=on_anomaly, lease_wait=lease_wait,
                               holder=holder, on_busy_output=on_busy_output) if watch_tasks else None
        self._lock = threading.Lock()
        self._calls: dict[int, GuardedCall] = {}
        self._refused: dict[int, Refusal] = {}

    # -- the two hooks ----------------------------------------------------------------------

    def before(self, ctx: ToolCallHookContext) -> bool | None:
        """Take the leases of a file-writing call, or block it (False) with the reason kept for
        the after hook. Never raises: an internal error blocks the call too."""
        try:
            if any(other is not self and other.has_call(id(ctx.tool_input)) for other in list(_INSTALLED)):
                return None  # another installed set coordinates this call; a second lease would wait on it
            pairs = self._targets(ctx)
            if not pairs:
                return None
            call = begin_call(self.coordinator, self._holder(ctx), pairs, lease_wait=self.lease_wait)
        except Refused as refused:
            return self._block(ctx, refused.refusal)
        except Exception as error:  # fail closed: CrewAI would swallow it and run the write
            return self._block(ctx, internal_error(error, str(ctx.tool_name)))
        with self._lock:
            self._calls[id(ctx.tool_input)] = call
        return None

    def after(self, ctx: ToolCallHookContext) -> str | None:
        """Confirm and record what the call wrote, release its leases; replace the result with
        the problem if there was one. Never raises."""
        marker = id(ctx.tool_input)
        with self._lock:
            call = self._calls.pop(marker, None)
            refusal = self._refused.pop(marker, None)
        if refusal is not None:
            return refusal.text
        if call is None:
            return None
        try:
            try:
                # The tool did not run (another hook blocked it) or did not succeed: a missing file
                # is then no surprise; bytes it changed anyway are still recorded.
                failed = detect_tool_failure(ctx.raw_tool_result) is not None or str(ctx.tool_result).startswith(
                    ("Error executing tool", "Tool execution blocked by hook"))
                problems = call.confirm(kind="write.crewai", expect_written=not failed, said=ctx.tool_result)
            finally:
                call.close()
        except Exception as error:
            problems = [Refusal("WriteUnconfirmed", (
                f"agent-coherence: the write could not be confirmed ({type(error).__name__}: {error}). Read the "
                f"file and check it before going on."), True)]
        if not problems:
            return None
        self._record(ctx, problems[0])
        return problems[0].text

    # -- helpers ----------------------------------------------------------------------------

    def has_call(self, marker: int) -> bool:
        """Whether this set took on the call whose ``tool_input`` has id ``marker``."""
        with self._lock:
            return marker in self._calls or marker in self._refused

    def _targets(self, ctx: ToolCallHookContext) -> list[tuple[str, str]]:
        original = getattr(ctx.tool, "_original_tool", None)
        if getattr(type(original), "coordinates_itself", False):
            return []
        args = ctx.tool_input if isinstance(ctx.tool_input, dict) else {}
        if self.tools is not None:
            if ctx.tool_name not in self.tools:
                return []
        elif not looks_like_file_write(ctx.tool_name, args):
            return []
        named = extract_paths(self.paths, args)
        if not named:
            raise Refused(Refusal("NoTarget", (
                f"agent-coherence: refused {ctx.tool_name}: none of its arguments names the file it writes. "
                f"Nothing was written."), False))
        base = getattr(original, "base_dir", None)
        return [(shown, anchored(shown, base)) for shown in named]

    def _holder(self, ctx: ToolCallHookContext) -> str | None:
        if self.holder:
            return self.holder
        role = getattr(ctx.agent, "role", None)
        return f"crewai:{role}" if role else None

    def _block(self, ctx: ToolCallHookContext, refusal: Refusal) -> bool:
        with self._lock:
            self._refused[id(ctx.tool_input)] = refusal
        self._record(ctx, refusal)
        return False

    def _record(self, ctx: ToolCallHookContext, refusal: Refusal) -> None:
        """Journal the refusal and add it to the task's tool failures (never aborting)."""
        try:
            self.coordinator.backend.journal_append("crewai.refused", refusal.details.get("key"),
                                                    self._holder(ctx), {"code": refusal.code,
                                                                        "tool": ctx.tool_name})
            handle_tool_failure(as_tool_failure(refusal), tool_name=ctx.tool_name, tool_args=dict(ctx.tool_input),
                                tool=ctx.tool, agent=ctx.agent, task=ctx.task, crew=ctx.crew)
        except ToolExecutionFailedError:
            pass  # recorded; a hook must not abort the kickoff
        except Exception:
            pass  # the record is best effort; the call itself was already blocked or reported

    # -- registration -----------------------------------------------------------------------

    def install(self) -> "CrewAIHooks":
        register_before_tool_call_hook(self.before)
        register_after_tool_call_hook(self.after)
        if self.tasks is not None:
            self.tasks.install()
        _INSTALLED.append(self)
        return self

    def uninstall(self) -> None:
        unregister_before_tool_call_hook(self.before)
        unregister_after_tool_call_hook(self.after)
        if self.tasks is not None:
            self.tasks.uninstall()
        if self in _INSTALLED:
            _INSTALLED.remove(self)
        with self._lock:
            calls, self._calls = list(self._calls.values()), {}
            self._refused.clear()
        for call in calls:
            call.close()


def tool_names(tools: Iterable[str | BaseTool]) -> set[str]:
    """The names CrewAI gives the hooks (``ctx.tool_name``, sanitized) of ``tools``: names as the
    model or the tool spells them, or the tools themselves."""
    from crewai.utilities.string_utils import sanitize_tool_name

    if isinstance(tools, (str, BaseTool)):
        raise TypeError(f"tools= takes a list of tool names or tools, not one {type(tools).__name__}: "
                        f"tools=[{tools!r}]")
    names: set[str] = set()
    for tool in tools:
        if isinstance(tool, BaseTool):
            tool = tool.name
        if not isinstance(tool, str):
            raise TypeError(f"tools= takes tool names or tools, not {type(tool).__name__} {tool!r}")
        names.add(sanitize_tool_name(tool))
    return names


def install_crewai_hooks(
    coordinator: Coordinator, *, holder: str | None = None, tools: Iterable[str | BaseTool] | None = None,
    paths: PathArgs = None, lease_wait: float = 10.0,
    outputs: Mapping[str, Sequence[str]] | Callable[[Any], Iterable[str]] | None = None,
    on_anomaly: Callable[[Anomaly], None] | None = None, watch_tasks: bool = True,
    on_busy_output: str = "write",
) -> CrewAIHooks:
    """Coordinate every file-writing tool call of every crew in this process (see the module doc).

    ``tools``: the tools to coordinate, by name or the tools themselves; default: any call whose
    name or arguments indicate a file write. ``paths``: which files a call writes (default: read from common argument names); it
    does not select calls, so a tool naming its file under another argument name must be in ``tools``.
    ``holder``: the agent identity (default ``crewai:<agent role>``). ``outputs``: the files each
    task must write (task name -> paths, or a function of the task), besides ``Task.output_file``;
    a task that finishes without a coordinated write to one of them is a ``zero_work`` anomaly,
    journaled and passed to ``on_anomaly``. ``on_busy_output``: when a ``Task.output_file``'s lease
    cannot be taken, ``"write"`` lets CrewAI write it anyway (journaled ``crewai.output_unleased``),
    ``"abort"`` fails the task before its write (``HookAborted``). Returns the hooks; remove them with
    :func:`uninstall_crewai_hooks` (or ``hooks.uninstall()``).
    """
    return CrewAIHooks(coordinator, holder=holder, tools=tools, paths=paths, lease_wait=lease_wait,
                       outputs=outputs, on_anomaly=on_anomaly, watch_tasks=watch_tasks,
                       on_busy_output=on_busy_output).install()


def uninstall_crewai_hooks(hooks: CrewAIHooks | None = None) -> int:
    """Remove ``hooks`` (default: every set installed by this module); returns how many."""
    targets = [hooks] if hooks is not None else list(_INSTALLED)
    for installed in targets:
        installed.uninstall()
    return len(targets)
