"""Node hooks: ``@coherent_node(writes=[...])`` and ``coherent_nodes(builder, writes={...})``.

A hooked node, before its body runs, checks the run's thread fence (``LeaseLost`` if the run lost
its thread: the body never starts) and takes the leases of the artifacts it declares (sorted, so two
nodes never deadlock), renewed while it runs and released when it returns or raises. Its body gets a
:class:`NodeHandle` (as a ``coherence`` parameter if it declares one, else from
:func:`current_node`) for confirmed durable writes of those artifacts.

Each write is a side effect keyed by ``(thread_id, checkpoint_ns, task_id, artifact, n)`` for the
node's n-th write of that artifact. LangGraph keeps the task id of a node retried by ``RetryPolicy``
and of a node re-run when an interrupted run resumes, so the second attempt gets the first one's
recorded receipt back instead of writing again. The receipt is recorded (a ref in the backend) right
after the write commits. A crash between the two is recognised on the next attempt from the
artifact's version record, whose writer names the task; that recognition fails only if another
writer committed to the same artifact after the crash and before the re-run, and then the
artifact is written again.

A node that declared writes, returned normally and made none is reported as a ``zero_work``
anomaly (journal, log, ``Liveness.on_anomaly``).

Limits: only writes made through the handle are keyed; the body itself runs again on a retry (its
other side effects are its own business). Do not put a ``CachePolicy`` on a hooked node: a cache
hit skips the body and so the checks.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import inspect
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from langgraph.config import get_config
from langgraph.runtime import get_runtime

from ... import faults
from ...arguments import ttl_seconds, wait_seconds
from ...errors import VersionConflict
from ...models import Anomaly, Snapshot, WriteReceipt
from ..offload import in_thread, in_thread_undone
from .errors import place_text, require_coordinator, state_place
from .keys import COORDINATOR_KEY, FENCE_KEY, HOLDER_KEY, effect_ref_name, thread_lease_key
from .renewal import Holding, renewer_for

if TYPE_CHECKING:
    from ...coordinator import Coordinator
    from ...models import Lease

F = TypeVar("F", bound=Callable[..., Any])
HANDLE_PARAMETER = "coherence"

_CURRENT: contextvars.ContextVar["NodeHandle | None"] = contextvars.ContextVar("coherent_node", default=None)


def _stored_receipt(text: str, root: str) -> WriteReceipt:
    """A receipt as ``_record`` stored it (its fields as JSON), its path under ``root``: the run
    may resume on another host, or after the project moved, where the recorded path is elsewhere."""
    fields = json.loads(text)
    fields["path"] = os.path.join(root, fields["key"])
    return WriteReceipt(**fields)


def current_node() -> "NodeHandle":
    """The handle of the hooked node running now (in its thread or task). Raises LookupError."""
    handle = _CURRENT.get()
    if handle is None:
        raise LookupError("current_node() is only available inside a node wrapped by coherent_node")
    return handle


class NodeHandle:
    """Confirmed durable writes of a node's declared artifacts, each at most once per task.

    ``write`` / ``update`` return a WriteReceipt; ``replayed`` lists the receipts that came from an
    earlier attempt of the same task instead of a new write. Writes to an artifact the node did not
    declare are refused (ValueError, nothing written).
    """

    def __init__(self, coordinator: "Coordinator", node: str, thread_id: str, checkpoint_ns: str,
                 task_id: str, attempt: int, leases: dict[str, "Lease"]) -> None:
        self.coordinator = coordinator
        self.node = node
        self.thread_id = thread_id
        self.checkpoint_ns = checkpoint_ns
        self.task_id = task_id
        self.attempt = attempt
        self.leases = leases
        self.receipts: list[WriteReceipt] = []
        self.replayed: list[WriteReceipt] = []
        self._counts: dict[str, int] = {}

    @property
    def task_prefix(self) -> str:
        """The start of every holder name this task's attempts write under."""
        return task_holder_prefix(self.thread_id, self.task_id)

    def read(self, key: str | os.PathLike[str]) -> Snapshot:
        return self.coordinator.read(key)

    def write(self, key: str | os.PathLike[str], data: bytes | str) -> WriteReceipt:
        """Write ``data`` durably under the node's lease, or return the receipt an earlier attempt
        of this task recorded for the same write."""
        artifact, n = self._next(key)
        return self._replay(artifact, n) or self._commit(artifact, n, data)

    def update(self, key: str | os.PathLike[str], fn: Callable[[bytes], bytes | str]) -> WriteReceipt:
        """Read-modify-write under the node's lease (no conflict possible while it holds it);
        replayed like ``write``, without calling ``fn`` again."""
        artifact, n = self._next(key)
        replayed = self._replay(artifact, n)
        if replayed is not None:
            return replayed
        return self._commit(artifact, n, fn(self.coordinator.read(artifact).data))

    async def awrite(self, key: str | os.PathLike[str], data: bytes | str) -> WriteReceipt:
        """``write`` in a worker thread. Cancelled, it lets the cancellation out once the write has
        ended (committed and recorded, or undone): the node's leases are given back after it."""
        return await in_thread(self.write, key, data)

    async def aupdate(self, key: str | os.PathLike[str], fn: Callable[[bytes], bytes | str]) -> WriteReceipt:
        """``update`` in a worker thread; cancelled, as ``awrite``."""
        return await in_thread(self.update, key, fn)

    def _next(self, key: str | os.PathLike[str]) -> tuple[str, int]:
        artifact = self.coordinator.key(key)
        if artifact not in self.leases:
            raise ValueError(f"node {self.node!r} did not declare writes to {artifact!r} "
                             f"(declared: {sorted(self.leases)}); nothing was written")
        self._counts[artifact] = self._counts.get(artifact, 0) + 1
        return artifact, self._counts[artifact]

    def _effect(self, artifact: str, n: int) -> str:
        return effect_ref_name(self.thread_id, f"{self.checkpoint_ns}/{self.task_id}", artifact, n)

    def _replay(self, artifact: str, n: int) -> WriteReceipt | None:
        backend = self.coordinator.backend
        recorded = backend.get_ref(self._effect(artifact, n))
        if recorded is not None:
            receipt = _stored_receipt(recorded.value, self.coordinator.root)
        else:
            recognised = self._recognise(artifact, n)
            if recognised is None:
                return None
            receipt = recognised
            self._record(artifact, n, receipt)
        self.replayed.append(receipt)
        self.receipts.append(receipt)
        return receipt

    def _recognise(self, artifact: str, n: int) -> WriteReceipt | None:
        """The n-th write of an earlier attempt that committed but whose receipt was never
        recorded (a crash in between): the artifact's current version was written by this task,
        and after its (n-1)-th recorded write."""
        version = self.coordinator.backend.get_version(artifact)
        if version is None or not version.writer.startswith(self.task_prefix):
            return None
        if n > 1:
            previous = self.coordinator.backend.get_ref(self._effect(artifact, n - 1))
            if previous is None or _stored_receipt(previous.value, self.coordinator.root).version >= version.version:
                return None
        path = os.path.join(self.coordinator.root, artifact)
        return WriteReceipt(key=artifact, path=path, version=version.version, sha256=version.sha256 or "",
                            size=version.size, fence=version.fence, holder=version.writer,
                            committed_at=version.updated_at)

    def _commit(self, artifact: str, n: int, data: bytes | str) -> WriteReceipt:
        receipt = self.coordinator.write(artifact, data, lease=self.leases[artifact])
        faults.check("langgraph.effect")  # the seam between the commit and its receipt record
        self._record(artifact, n, receipt)
        self.receipts.append(receipt)
        return receipt

    def _record(self, artifact: str, n: int, receipt: WriteReceipt) -> None:
        try:
            self.coordinator.backend.set_ref(
                self._effect(artifact, n), receipt.model_dump_json(), expect=None,
                holder=self.leases[artifact].holder, kind="langgraph.effect",
                data={"thread_id": self.thread_id, "checkpoint_ns": self.checkpoint_ns,
                      "task_id": self.task_id, "artifact": artifact, "n": n, "version": receipt.version})
        except VersionConflict:
            pass  # recorded already (by the attempt whose receipt this is)


def task_holder_prefix(thread_id: str, task_id: str) -> str:
    return f"langgraph-task:{quote(thread_id, safe='')}/{task_id}:"


class NodeRun:
    """One attempt of a hooked node: fence check, artifact leases, the handle, zero-work check."""

    def __init__(self, name: str, writes: Iterable[str], coordinator: "Coordinator | None",
                 ttl: float | None, lease_wait: float) -> None:
        config = get_config()
        configurable = config.get("configurable", {})
        found = coordinator or configurable.get(COORDINATOR_KEY)
        if found is None:
            raise TypeError(f"node {name!r} is wrapped by coherent_node but has no coordinator: run the "
                            "graph through coherent_graph, or pass coherent_node(..., coordinator=coord)")
        self.coordinator: "Coordinator" = found
        self.configurable = configurable
        self.name = name
        self.writes = sorted({self.coordinator.key(key) for key in writes})
        self.ttl = ttl
        self.lease_wait = lease_wait
        self.holdings: list[Holding] = []
        self.renewer = renewer_for(self.coordinator)
        self.started = time.time()
        self.handle: NodeHandle | None = None
        self.holder: str | None = None  # unique to this entry of the node, set by ``enter``

    def enter(self) -> NodeHandle:
        fence = self.configurable.get(FENCE_KEY)
        thread_id = self.configurable.get("thread_id")
        if fence is not None:  # a run that lost its thread stops here, before the body
            self._refuse_another_place()
            self.coordinator.backend.check_fence(thread_lease_key(thread_id), str(self.configurable.get(HOLDER_KEY)),
                                                 int(fence))
        info = get_runtime().execution_info
        if info is None:
            raise TypeError(f"node {self.name!r} is wrapped by coherent_node and must run as a node of a graph")
        thread = str(info.thread_id if info.thread_id is not None else thread_id)
        holder = self.holder = task_holder_prefix(thread, info.task_id) + f"{os.getpid()}:{os.urandom(4).hex()}"
        leases: dict[str, "Lease"] = {}
        try:
            for key in self.writes:
                lease = self.coordinator.acquire(key, holder, self.ttl, wait=self.lease_wait)
                leases[key] = lease
                self.holdings.append(self.renewer.hold(lease))
        except BaseException:
            self.abandon()
            raise
        self.handle = NodeHandle(self.coordinator, self.name, thread, info.checkpoint_ns, info.task_id,
                                 info.node_attempt, leases)
        return self.handle

    def _refuse_another_place(self) -> None:
        """A node given a coordinator whose state is not where the run holds its thread would
        look for the run's fence there and stop every run with LeaseLost ("expired")."""
        run_coordinator = self.configurable.get(COORDINATOR_KEY)
        if run_coordinator is None or run_coordinator is self.coordinator:
            return
        mine, the_runs = state_place(self.coordinator), state_place(run_coordinator)
        if mine is not None and the_runs is not None and mine != the_runs:
            raise ValueError(f"node {self.name!r} was given the coordinator at {self.coordinator.root!r} "
                             f"({place_text(mine)}), but its run holds the thread in the one at "
                             f"{run_coordinator.root!r} ({place_text(the_runs)}): pass coherent_node the "
                             "graph's coordinator, or none (coherent_graph hands it to the node)")

    def abandon(self) -> None:
        """Stop renewing and give back every lease of this entry, on a way out of ``enter`` or
        ``exit`` that did not finish them: an error, or an interrupt wherever it landed (right
        after a grant committed, its result lost; inside ``hold``; between a drop and its
        release). By the entry's holder, which is its alone."""
        self.holdings = []
        if self.holder is not None:
            self.renewer.drop_holder(self.holder)
            self.coordinator.backend.release_holder(self.holder)

    def exit(self, succeeded: bool) -> None:
        try:
            for holding in self.holdings:
                self.renewer.drop(holding)
                self.coordinator.release(holding.lease)
        except BaseException:
            self.abandon()
            raise
        self.holdings = []
        handle = self.handle
        if succeeded and handle is not None and self.writes and not handle.receipts:
            self.coordinator.liveness.report(Anomaly(
                kind="zero_work", subject=f"langgraph-node:{handle.thread_id}/{handle.checkpoint_ns}",
                since=self.started,
                detail=f"node {self.name!r} declared writes to {self.writes} and returned without making any",
                facts={"node": self.name, "task_id": handle.task_id, "declared": self.writes,
                       "attempt": handle.attempt},
            ))


def coherent_node(writes: Iterable[str] = (), *, coordinator: "Coordinator | None" = None,
                  ttl: float | None = None, lease_wait: float = 30.0, name: str | None = None) -> Callable[[F], F]:
    """Decorate a sync or async node function (its signature is kept, so LangGraph still injects
    ``config``, ``runtime``, ``store``, ...). ``writes``: the artifact keys it may write; leased
    while it runs (waiting up to ``lease_wait`` s, ``LeaseHeld`` after that). ``coordinator``:
    default, the one ``coherent_graph`` hands the run. Raises TypeError for ``writes`` that is
    not a collection of keys."""
    declared = _declared_writes(writes, name)
    if coordinator is not None:
        require_coordinator(coordinator, "coherent_node")
    lease_wait = wait_seconds(lease_wait, "lease_wait")
    if ttl is not None:
        ttl = ttl_seconds(ttl)

    def decorate(fn: F) -> F:
        label = str(name or getattr(fn, "__name__", "node"))
        wants_handle = HANDLE_PARAMETER in inspect.signature(fn).parameters

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                run = NodeRun(label, declared, coordinator, ttl, lease_wait)
                # Cancelled while the leases are awaited in the thread: given back there on arrival.
                handle = await in_thread_undone(lambda _: run.exit(False), run.enter)
                token = _CURRENT.set(handle)
                succeeded = False
                try:
                    result = await fn(*args, **_with_handle(kwargs, handle, wants_handle))
                    succeeded = True
                    return result
                finally:
                    _CURRENT.reset(token)
                    await in_thread(run.exit, succeeded)

            run_async.__coherent_node__ = True  # type: ignore[attr-defined]
            return run_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def run_sync(*args: Any, **kwargs: Any) -> Any:
            run = NodeRun(label, declared, coordinator, ttl, lease_wait)
            succeeded = False
            try:  # enter inside, and exit guarded: an interrupt landing anywhere keeps no lease
                handle = run.enter()
                token = _CURRENT.set(handle)
                try:
                    result = fn(*args, **_with_handle(kwargs, handle, wants_handle))
                    succeeded = True
                    return result
                finally:
                    _CURRENT.reset(token)
            finally:
                try:
                    run.exit(succeeded)
                except BaseException:  # an interrupt before exit was entered: it gave nothing back
                    run.abandon()
                    raise

        run_sync.__coherent_node__ = True  # type: ignore[attr-defined]
        return run_sync  # type: ignore[return-value]

    return decorate


def _declared_writes(writes: Iterable[str], name: str | None) -> list[str]:
    """``writes`` as a list, refused when it is one key: a string is iterable, and taken as its
    characters it would lease one-letter files and refuse the node's write of the key itself."""
    node = f" of node {name!r}" if name else ""
    if isinstance(writes, (str, bytes, os.PathLike)):
        raise TypeError(f"writes{node} takes a list of artifact keys, not one key: writes=[{writes!r}]")
    declared = list(writes)
    wrong = [key for key in declared if not isinstance(key, (str, os.PathLike))]
    if wrong:
        raise TypeError(f"writes{node} takes artifact keys (str or path), not {wrong!r}")
    return declared


def _with_handle(kwargs: dict[str, Any], handle: NodeHandle, wanted: bool) -> dict[str, Any]:
    return {**kwargs, HANDLE_PARAMETER: handle} if wanted else kwargs


def coherent_nodes(builder: Any, writes: Mapping[str, Iterable[str]] | None = None, *,
                   coordinator: "Coordinator | None" = None, **options: Any) -> Any:
    """Wrap every function node of a StateGraph ``builder`` (before ``compile``) with
    ``coherent_node``; ``writes`` maps node names to their declared artifacts. Nodes that are not
    functions (a compiled subgraph) are left as they are, unless ``writes`` names them (TypeError).
    Returns the builder."""
    writes = dict(writes or {})
    unknown = set(writes) - set(builder.nodes)
    if unknown:
        raise ValueError(f"writes names nodes the graph does not have: {sorted(unknown)}")
    for node_name, spec in list(builder.nodes.items()):
        runnable = spec.runnable
        if not hasattr(runnable, "func") or not hasattr(runnable, "afunc"):
            if node_name in writes:
                raise TypeError(f"node {node_name!r} is not a function; wrap the nodes inside it instead")
            continue
        if getattr(runnable.func or runnable.afunc, "__coherent_node__", False):
            continue  # wrapped already
        hook = coherent_node(writes.get(node_name, ()), coordinator=coordinator, name=node_name, **options)
        replacement = type(runnable)(
            hook(runnable.func) if runnable.func is not None else None,
            hook(runnable.afunc) if runnable.afunc is not None else None,
            name=runnable.name, tags=runnable.tags, trace=runnable.trace, recurse=runnable.recurse,
            explode_args=runnable.explode_args, **runnable.kwargs,
        )
        builder.nodes[node_name] = dataclasses.replace(spec, runnable=replacement)
    return builder
