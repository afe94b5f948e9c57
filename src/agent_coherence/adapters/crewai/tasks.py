"""Tasks and the files they promise: ``Task.output_file`` under a lease, and zero-work detection.

Installed with the hooks (:func:`.hooks.install_crewai_hooks`):

- **When a task starts** (the ``PRE_STEP`` interception point, kind ``task``), the version of each
  file it declared is noted: its ``Task.output_file`` and the paths declared to the adapter for it.
- **``Task.output_file``**: CrewAI writes it itself, after the task's last step, with a plain
  ``open("w")`` and no hook around the write. The watch takes the file's lease at the task's
  ``POST_STEP`` (just before that write), and when the task completes (``TaskCompletedEvent``) it
  confirms the bytes on disk (fsync, hash), records them as a new version and releases the lease.
  So the write is serialised against every coordinated writer and recorded; it is **not** atomic
  (CrewAI truncates and rewrites in place: a reader that bypasses the layer can see a partial file,
  and a crash mid-write leaves a torn file that the next coordinated access reports as a foreign
  edit). An ``output_file`` outside the coordinator's root is left to CrewAI. When the lease
  cannot be taken within ``lease_wait`` (another writer holds it), ``on_busy_output`` decides:
  ``"write"`` (the default) lets CrewAI write the file anyway, journaled as
  ``crewai.output_unleased`` on the file, and the lease's holder meets a ``ForeignEdit`` at its
  next write (detected, not prevented); ``"abort"`` raises CrewAI's ``HookAborted`` from the hook,
  so the task fails before its write and the file keeps the holder's bytes (journaled as
  ``crewai.output_refused``; the task's output is lost with the kickoff, as for any failed task).
- **When a task completes**, each declared file whose version did not change during the task had
  no coordinated write: a ``zero_work`` anomaly (journaled as ``anomaly.zero_work``, logged, and
  passed to ``on_anomaly``). A write that left the bytes unchanged does not count as one.

Limit: the completion event reaches the watch on CrewAI's event thread pool; ``kickoff()`` waits
for it before returning.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping, Sequence

from crewai.events import TaskCompletedEvent, TaskFailedEvent, crewai_event_bus
from crewai.hooks import HookAborted, InterceptionPoint, register_hook, unregister_hook

from ...errors import CoherenceError
from ...models import Anomaly
from .calls import GuardedCall, Refused, begin_call, resolve_target
from .targets import anchored, returned_paths

if TYPE_CHECKING:
    from ...coordinator import Coordinator

Outputs = Mapping[str, Sequence[str]] | Callable[[Any], Iterable[str]] | None
BUSY_OUTPUT_CHOICES = ("write", "abort")


def check_busy_output(value: object) -> str:
    """``on_busy_output`` as given, if it is one of the choices; else ValueError."""
    if value not in BUSY_OUTPUT_CHOICES:
        raise ValueError(f"on_busy_output= is one of {', '.join(map(repr, BUSY_OUTPUT_CHOICES))}, not {value!r}")
    return str(value)


class TaskWatch:
    """The task-level half of the hooks (see the module doc)."""

    active: ClassVar[list["TaskWatch"]] = []  # the installed watches: one leases each output file

    def __init__(self, coordinator: Coordinator, *, outputs: Outputs = None,
                 on_anomaly: Callable[[Anomaly], None] | None = None, lease_wait: float = 10.0,
                 holder: str | None = None, on_busy_output: str = "write") -> None:
        self.coordinator = coordinator
        self.on_busy_output = check_busy_output(on_busy_output)
        self.outputs = outputs
        self.on_anomaly = on_anomaly
        self.lease_wait = lease_wait
        self.holder = holder
        self._lock = threading.Lock()
        self._started: dict[str, tuple[float, dict[str, tuple[str, int]]]] = {}
        self._saving: dict[str, GuardedCall] = {}

    # -- what a task declared ---------------------------------------------------------------

    def declared(self, task: Any) -> list[tuple[str, str]]:
        """The files ``task`` promises, as (declared, path) pairs: its ``output_file`` (relative to
        the working directory, as CrewAI opens it), then the paths declared to the adapter
        (relative to the coordinator's root)."""
        found = [(task.output_file, anchored(task.output_file, None))] if getattr(task, "output_file", None) else []
        named: Iterable[str] = ()
        if callable(self.outputs):
            named = returned_paths(self.outputs(task), "outputs")
        elif self.outputs is not None:
            label = next((x for x in (getattr(task, "name", None), getattr(task, "description", None))
                          if x and x in self.outputs), None)
            named = self.outputs[label] if label else ()
        found.extend((shown, anchored(shown, self.coordinator.root)) for shown in named)
        return found

    def _keys(self, task: Any) -> dict[str, tuple[str, int]]:
        """key -> (as declared, version now), for the declared files inside the root."""
        keys: dict[str, tuple[str, int]] = {}
        for shown, path in self.declared(task):
            try:
                artifact = resolve_target(self.coordinator, shown, path, None)
            except CoherenceError:
                continue  # outside the root: not ours to watch
            info = self.coordinator.version(artifact.key)
            keys[artifact.key] = (shown, info.version if info else 0)
        return keys

    # -- the lifecycle ----------------------------------------------------------------------

    def task_started(self, ctx: Any) -> None:
        if getattr(ctx, "kind", None) != "task" or ctx.task is None:
            return
        try:
            with self._lock:
                self._started[str(ctx.task.id)] = (time.time(), self._keys(ctx.task))
        except Exception as error:  # a watch must never break the task it watches: record it instead
            self._journal_error(ctx.task, error)

    def task_finishing(self, ctx: Any) -> None:
        """Just before CrewAI writes ``output_file``: take its lease for that write."""
        task = getattr(ctx, "task", None)
        if getattr(ctx, "kind", None) != "task" or task is None or not getattr(task, "output_file", None):
            return
        if any(other is not self and other.saving(str(task.id)) for other in list(TaskWatch.active)):
            return  # another installed watch holds its lease; a second one would wait on it
        try:
            call = begin_call(self.coordinator, self.holder or f"crewai:task:{task.name or task.id}",
                              [(task.output_file, anchored(task.output_file, None))], lease_wait=self.lease_wait)
        except Refused as refused:
            self._unleased(task, refused.refusal.code, refused.refusal.details.get("key"))
            return
        except Exception as error:
            self._unleased(task, type(error).__name__, None)
            return
        with self._lock:
            self._saving[str(task.id)] = call

    def _unleased(self, task: Any, code: str, key: object) -> None:
        """The output file's lease could not be taken: stop the task (``"abort"``) or let CrewAI
        write it, in either case saying so on the file's own history (not the refusal's "nothing
        was written", which would be untrue for ``"write"``)."""
        if self.on_busy_output == "abort":
            reason = (f"task {task.name or task.description!r} stopped before writing {task.output_file}: its "
                      f"lease could not be taken ({code}); rerun the task when the file's holder is done, or "
                      f"install the hooks with on_busy_output='write' to write it anyway")
            self._journal_output(task, "crewai.output_refused", key, code, reason)
            raise HookAborted(reason, source="agent-coherence")
        self._journal_output(task, "crewai.output_unleased", key, code,
                             f"CrewAI writes {task.output_file} without its lease, which could not be taken "
                             f"({code}); a writer holding the lease meets a ForeignEdit at its next write")

    def _journal_output(self, task: Any, kind: str, key: object, code: str, detail: str) -> None:
        try:
            self.coordinator.backend.journal_append(kind, key if isinstance(key, str) else None, None, {
                "task": str(task.id), "output_file": task.output_file, "code": code, "detail": detail})
        except Exception:
            pass  # the journal itself is unavailable; the task goes on

    def task_completed(self, _source: Any, event: Any) -> None:
        task = getattr(event, "task", None)
        if task is None:
            return
        task_id = str(task.id)
        with self._lock:
            call = self._saving.pop(task_id, None)
            started = self._started.pop(task_id, None)
        try:
            if call is not None:
                try:
                    call.confirm(kind="write.crewai.output_file")
                finally:
                    call.close()
            if started is not None:
                self._check_work(task, *started)
        except Exception as error:  # on CrewAI's event thread: record it, never raise into the bus
            self._journal_error(task, error)

    def _journal_error(self, task: Any, error: Exception) -> None:
        try:
            self.coordinator.backend.journal_append("crewai.task_watch_error", None, None, {
                "task": str(task.id), "error": f"{type(error).__name__}: {error}"})
        except Exception:
            pass  # the journal itself is unavailable; the task goes on

    def task_failed(self, _source: Any, event: Any) -> None:
        task = getattr(event, "task", None)
        if task is None:
            return
        with self._lock:
            call = self._saving.pop(str(task.id), None)
            self._started.pop(str(task.id), None)
        if call is not None:
            call.close()

    def _check_work(self, task: Any, since: float, keys: dict[str, tuple[str, int]]) -> None:
        name = task.name or task.description
        for key, (shown, before) in keys.items():
            info = self.coordinator.version(key)
            if info is not None and info.version > before:
                continue
            anomaly = Anomaly(
                kind="zero_work", subject=f"crewai-task:{task.id}:{key}", since=since,
                detail=f"task {name!r} finished without a coordinated write to {shown} (still at version "
                       f"{before}), a file it declared as its output",
                facts={"task": str(task.id), "task_name": name, "key": key, "version": before})
            if self.coordinator.liveness.report(anomaly) and self.on_anomaly is not None:
                self.on_anomaly(anomaly)

    def saving(self, task_id: str) -> bool:
        """Whether this watch holds the lease of task ``task_id``'s output file."""
        with self._lock:
            return task_id in self._saving

    # -- registration -----------------------------------------------------------------------

    def install(self) -> None:
        TaskWatch.active.append(self)
        register_hook(InterceptionPoint.PRE_STEP, self.task_started)
        register_hook(InterceptionPoint.POST_STEP, self.task_finishing)
        crewai_event_bus.on(TaskCompletedEvent)(self.task_completed)
        crewai_event_bus.on(TaskFailedEvent)(self.task_failed)

    def uninstall(self) -> None:
        unregister_hook(InterceptionPoint.PRE_STEP, self.task_started)
        unregister_hook(InterceptionPoint.POST_STEP, self.task_finishing)
        crewai_event_bus.off(TaskCompletedEvent, self.task_completed)
        crewai_event_bus.off(TaskFailedEvent, self.task_failed)
        if self in TaskWatch.active:
            TaskWatch.active.remove(self)
        with self._lock:
            calls, self._saving = list(self._saving.values()), {}
            self._started.clear()
        for call in calls:
            call.close()
