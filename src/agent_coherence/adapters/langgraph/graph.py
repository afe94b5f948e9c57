"""``coherent_graph``: one writer per thread for the whole run, in every process on the backend.

Each run (``invoke``, ``ainvoke``, ``stream``, ``astream``, ``stream_events``, ``astream_events``,
each element of ``batch`` / ``abatch``) and each ``update_state`` holds the lease
``langgraph:thread/<thread_id>`` from before its first read of the thread to the end of the run:
renewed every ttl/3 while it runs, released on return, error, cancellation, or when a stream is
closed. A second run on the same thread raises ``ThreadBusy`` (``on_busy="reject"``) or waits up to
``wait_timeout`` seconds for the lease (``on_busy="wait"``), then runs on the state the first left.

The run's fence reaches the checkpointer through ``config["configurable"]`` (see ``keys.py``), so
a run whose lease expired or was taken over is refused at its next ``put`` / ``put_writes``
(``LeaseLost``) and at the start of its next hooked node. Fenced runs default to
``durability="sync"`` so that refusal stops the run before the next step (under ``"async"`` later
nodes would run first); a graph compiled without a checkpointer keeps LangGraph's default, having
no put to fence (its runs still hold the thread, and its hooked nodes still check the fence). The
compiled graph's checkpointer is wrapped in ``CoherentCheckpointer`` unless it is one already. A
builder that was not compiled, an unknown ``durability``, or a ``CoherentCheckpointer`` on another
coordinator's database or schema (or another kind of backend), is refused when wrapping; an unknown
``durability`` passed to one run is refused before that run takes its thread.
``get_state``, ``get_state_history`` and every other attribute pass through to the compiled graph
unchanged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, Literal

from langgraph.checkpoint.base import BaseCheckpointSaver

from ...errors import LeaseHeld, LeaseLost
from ..offload import in_thread, in_thread_undone
from .checkpointer import CoherentCheckpointer
from .errors import ThreadBusy, place_text, require_coordinator, state_place
from .heads import Heads
from .renewal import Holding, Renewer, renewer_for
from .keys import COORDINATOR_KEY, FENCE_KEY, HOLDER_KEY, run_holder, thread_lease_key

if TYPE_CHECKING:
    from ...coordinator import Coordinator

OnBusy = Literal["reject", "wait"]
DURABILITIES = ("sync", "async", "exit", None)


class ThreadRun:
    """The lease one run holds on its thread, and the config that carries its fence."""

    def __init__(self, coordinator: "Coordinator", renewer: Renewer, thread_id: Any, *, ttl: float,
                 wait: float) -> None:
        self.coordinator = coordinator
        self.renewer = renewer
        self.thread_id = thread_id
        self.key = thread_lease_key(thread_id)
        self.holder = run_holder("langgraph-run")
        self.ttl = ttl
        self.wait = wait
        self.holding: Holding | None = None

    def acquire(self) -> None:
        """Take the thread lease and start renewing it. Raises ThreadBusy."""
        try:
            lease = self.coordinator.acquire(self.key, self.holder, self.ttl, wait=self.wait)
            self.holding = self.renewer.hold(lease)
        except LeaseHeld as error:
            held: Any = error  # its facts are attributes: holder, expires_at, acquired_at
            waited = f" after waiting {self.wait:.1f}s" if self.wait else ""
            raise ThreadBusy(
                f"thread {str(self.thread_id)!r} is busy{waited}: run {held.holder!r} holds it "
                f"until {time.ctime(held.expires_at)} (renewed while that run is alive)",
                key=self.key, holder=held.holder, expires_at=held.expires_at,
                acquired_at=held.acquired_at, thread_id=self.thread_id,
            ) from None
        except BaseException:
            self.abandon()
            raise

    def release(self, heads: Heads | None) -> None:
        """Flush the run's head moves (``heads``: the checkpointer's, when it defers the flush
        to the end of the run), then give the thread back."""
        holding, self.holding = self.holding, None
        if holding is None:
            return
        try:
            self.renewer.drop(holding)
            if heads is None:
                self.coordinator.release(holding.lease)
            else:
                heads.seal_and_release(self.thread_id, holding.lease)
        except BaseException:  # a failed commit released nothing; an interrupt may have landed anywhere
            self.abandon()
            raise

    def abandon(self) -> None:
        """Stop renewing and give the thread back, on a way out of ``acquire`` or ``release`` that
        did not finish them: an error, or an interrupt wherever it landed (right after the grant
        committed, its result lost, or between the renewer's taking the lease and ``holding``
        being set). By the run's holder, which is this run's alone."""
        self.holding = None
        self.renewer.drop_holder(self.holder)
        self.coordinator.backend.release_holder(self.holder)

    def config(self, config: dict[str, Any]) -> dict[str, Any]:
        assert self.holding is not None
        configurable = {**config.get("configurable", {}), HOLDER_KEY: self.holder,
                        FENCE_KEY: self.holding.lease.fence, COORDINATOR_KEY: self.coordinator}
        return {**config, "configurable": configurable}


class CoherentGraph:
    """A compiled graph whose runs each hold their thread (see the module docstring)."""

    def __init__(self, graph: Any, coordinator: "Coordinator", *, on_busy: OnBusy = "reject",
                 wait_timeout: float = 30.0, ttl: float = 30.0, durability: str | None = "sync") -> None:
        _check_graph(graph)
        require_coordinator(coordinator, "coherent_graph")
        if on_busy not in ("reject", "wait"):
            raise ValueError(f"on_busy must be 'reject' or 'wait', not {on_busy!r}")
        if ttl <= 0 or wait_timeout < 0:
            raise ValueError("ttl must be positive and wait_timeout not negative")
        _check_durability(durability)
        saver = getattr(graph, "checkpointer", None)
        if isinstance(saver, CoherentCheckpointer):
            _check_same_backend(saver.coordinator, coordinator)
        if isinstance(saver, BaseCheckpointSaver) and not isinstance(saver, CoherentCheckpointer):
            # each head move skips its own flush: the run's end flushes them all at once (seal)
            saver = CoherentCheckpointer(saver, coordinator, durable_head=False)
            graph = graph.copy({"checkpointer": saver})
        self.renewer = renewer_for(coordinator)
        self.heads = saver.heads if isinstance(saver, CoherentCheckpointer) else None
        # Without a saver there is no put to fence, and LangGraph's "sync" mode fails outright
        # (it waits on a put that is never made): the graph keeps LangGraph's own default.
        self.has_saver = isinstance(saver, BaseCheckpointSaver)
        self.graph = graph
        self.coordinator = coordinator
        self.on_busy = on_busy
        self.wait_timeout = wait_timeout
        self.ttl = ttl
        self.durability = durability

    def __getattr__(self, name: str) -> Any:
        return getattr(self.graph, name)

    def with_config(self, config: dict[str, Any] | None = None, **kwargs: Any) -> "CoherentGraph":
        """The compiled graph's ``with_config``, still holding threads."""
        return CoherentGraph(self.graph.with_config(config, **kwargs), self.coordinator, on_busy=self.on_busy,
                             wait_timeout=self.wait_timeout, ttl=self.ttl, durability=self.durability)

    def __repr__(self) -> str:
        return f"coherent_graph({self.graph!r}, on_busy={self.on_busy!r})"

    # -- the lease around a run --------------------------------------------------------------

    def _thread_run(self, config: dict[str, Any] | None) -> ThreadRun | None:
        """The run to hold, or None when the config names no thread or already carries this
        thread's fence (a nested call inside a fenced run of the same thread)."""
        bound = (getattr(self.graph, "config", None) or {}).get("configurable") or {}  # with_config
        configurable = {**bound, **((config or {}).get("configurable") or {})}
        thread_id = configurable.get("thread_id")
        if thread_id is None or self._holds(configurable):
            return None
        wait = self.wait_timeout if self.on_busy == "wait" else 0.0
        return ThreadRun(self.coordinator, self.renewer, thread_id, ttl=self.ttl, wait=wait)

    def _holds(self, configurable: dict[str, Any]) -> bool:
        """Whether the config carries a live fence on its own thread (a call nested in a run)."""
        fence = configurable.get(FENCE_KEY)
        if fence is None:
            return False
        try:
            self.coordinator.backend.check_fence(thread_lease_key(configurable["thread_id"]),
                                                 str(configurable.get(HOLDER_KEY)), int(fence))
        except LeaseLost:
            return False  # a stale fence (a config kept from an earlier run): take the lease anew
        return True

    @contextmanager
    def _held(self, config: dict[str, Any] | None) -> Iterator[dict[str, Any] | None]:
        run = self._thread_run(config)
        if run is None:
            yield config
            return
        try:  # acquire inside: an interrupt right after it returned must not keep the thread
            run.acquire()
            yield run.config(config or {})
        finally:
            try:
                run.release(self.heads)
            except BaseException:  # an interrupt before release was entered: it gave nothing back
                run.abandon()
                raise

    @asynccontextmanager
    async def _aheld(self, config: dict[str, Any] | None) -> AsyncIterator[dict[str, Any] | None]:
        run = self._thread_run(config)
        if run is None:
            yield config
            return
        # Cancelled while the acquire waits in its thread (on_busy="wait"), the lease it then gets
        # is given back there, at once, even after the event loop has stopped.
        await in_thread_undone(lambda _: run.release(None), run.acquire)
        try:
            yield run.config(config or {})
        finally:
            await in_thread(run.release, self.heads)

    def _run_options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The run's keyword arguments with the fenced default durability added, checked before
        the run takes its thread. A run that chose for itself keeps its choice: ``durability``, or
        the deprecated ``checkpoint_during``, which LangGraph refuses beside a ``durability``."""
        _check_durability(kwargs.get("durability"))
        chose = kwargs.get("durability") is not None or kwargs.get("checkpoint_during") is not None
        if not chose and self.durability is not None and self.has_saver:
            return {**kwargs, "durability": self.durability}
        return kwargs

    # -- runs --------------------------------------------------------------------------------

    def invoke(self, input: Any, config: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        options = self._run_options(kwargs)
        with self._held(config) as run_config:
            return self.graph.invoke(input, run_config, **options)

    async def ainvoke(self, input: Any, config: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        options = self._run_options(kwargs)
        async with self._aheld(config) as run_config:
            return await self.graph.ainvoke(input, run_config, **options)

    def stream(self, input: Any, config: dict[str, Any] | None = None, **kwargs: Any) -> Iterator[Any]:
        """The lease is taken at the first ``next()`` and given back when the stream ends or
        is closed."""
        options = self._run_options(kwargs)
        with self._held(config) as run_config:
            yield from self.graph.stream(input, run_config, **options)

    async def astream(self, input: Any, config: dict[str, Any] | None = None, **kwargs: Any) -> AsyncIterator[Any]:
        options = self._run_options(kwargs)
        async with self._aheld(config) as run_config:
            async for chunk in self.graph.astream(input, run_config, **options):
                yield chunk

    def stream_events(self, input: Any, config: dict[str, Any] | None = None, **kwargs: Any) -> Iterator[Any]:
        options = self._run_options(kwargs)
        with self._held(config) as run_config:
            yield from self.graph.stream_events(input, run_config, **options)

    async def astream_events(self, input: Any, config: dict[str, Any] | None = None,
                             **kwargs: Any) -> AsyncIterator[Any]:
        options = self._run_options(kwargs)
        async with self._aheld(config) as run_config:
            async for event in self.graph.astream_events(input, run_config, **options):
                yield event

    def batch(self, inputs: Sequence[Any], config: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
              *, return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        """Each input is its own run, holding its own thread. Runs on one thread follow
        ``on_busy`` like any concurrent runs (reject: all but one raise ThreadBusy)."""
        configs = _per_input(config, len(inputs))
        if not inputs:
            return []

        def one(pair: tuple[Any, dict[str, Any] | None]) -> Any:
            try:
                return self.invoke(pair[0], pair[1], **kwargs)
            except Exception as error:
                if return_exceptions:
                    return error
                raise

        limit = (configs[0] or {}).get("max_concurrency") or len(inputs)
        with ThreadPoolExecutor(max_workers=max(1, min(limit, len(inputs)))) as pool:
            return list(pool.map(one, zip(inputs, configs)))

    async def abatch(self, inputs: Sequence[Any], config: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
                     *, return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        """As ``batch``: at most ``max_concurrency`` (of the first config) runs at a time."""
        configs = _per_input(config, len(inputs))
        limit = (configs[0] or {}).get("max_concurrency") if configs else None
        gate = asyncio.Semaphore(limit) if limit else None

        async def one(item: Any, cfg: dict[str, Any] | None) -> Any:
            if gate is None:
                return await self.ainvoke(item, cfg, **kwargs)
            async with gate:
                return await self.ainvoke(item, cfg, **kwargs)

        runs = [one(item, cfg) for item, cfg in zip(inputs, configs)]
        return list(await asyncio.gather(*runs, return_exceptions=return_exceptions))

    # -- state updates take the lease too ------------------------------------------------------

    def update_state(self, config: dict[str, Any], values: Any, as_node: str | None = None,
                     task_id: str | None = None) -> Any:
        with self._held(config) as run_config:
            return self.graph.update_state(run_config, values, as_node=as_node, task_id=task_id)

    async def aupdate_state(self, config: dict[str, Any], values: Any, as_node: str | None = None,
                            task_id: str | None = None) -> Any:
        async with self._aheld(config) as run_config:
            return await self.graph.aupdate_state(run_config, values, as_node=as_node, task_id=task_id)

    def bulk_update_state(self, config: dict[str, Any], supersteps: Sequence[Any]) -> Any:
        with self._held(config) as run_config:
            return self.graph.bulk_update_state(run_config, supersteps)

    async def abulk_update_state(self, config: dict[str, Any], supersteps: Sequence[Any]) -> Any:
        async with self._aheld(config) as run_config:
            return await self.graph.abulk_update_state(run_config, supersteps)


def _check_durability(durability: Any) -> None:
    # LangGraph does not check it: a misspelt mode would run unnoticed as "async", and a fenced
    # run would lose its fail-stop without a word
    if durability not in DURABILITIES:
        raise ValueError(f"durability must be one of {DURABILITIES}, not {durability!r}")


def _check_graph(graph: Any) -> None:
    """Refuse what is not a compiled graph up front, rather than at the first run."""
    if hasattr(graph, "compile") and not hasattr(graph, "invoke"):
        raise TypeError(f"coherent_graph takes a compiled graph, not the builder {type(graph).__name__}: "
                        "pass builder.compile(checkpointer=saver)")
    missing = [name for name in ("invoke", "get_state") if not callable(getattr(graph, name, None))]
    if missing:
        raise TypeError(f"coherent_graph takes a compiled LangGraph graph; {type(graph).__name__} has no "
                        f"{' or '.join(missing)}")


def _check_same_backend(saver_coordinator: "Coordinator", coordinator: "Coordinator") -> None:
    """Refuse a CoherentCheckpointer whose coordinator keeps its state somewhere else than the
    graph's: the run's thread lease would not be there, and every put would be refused as a lost
    lease. Two coordinators over one store are fine (see ``state_place``)."""
    mine, theirs = state_place(coordinator), state_place(saver_coordinator)
    if mine is not None and theirs is not None and mine != theirs:
        raise ValueError(f"the graph's CoherentCheckpointer uses the coordinator at {saver_coordinator.root!r} "
                         f"({place_text(theirs)}), coherent_graph the one at {coordinator.root!r} "
                         f"({place_text(mine)}): the thread lease would not reach the checkpointer. Pass the "
                         "same coordinator to both, or compile with the plain saver and let coherent_graph wrap it")


def _per_input(config: dict[str, Any] | Sequence[dict[str, Any]] | None, count: int) -> list[dict[str, Any] | None]:
    if isinstance(config, Sequence) and not isinstance(config, (str, bytes, dict)):
        if len(config) != count:
            raise ValueError(f"batch got {count} inputs but {len(config)} configs")
        return list(config)
    return [config] * count  # type: ignore[list-item]


def coherent_graph(graph: Any, coordinator: "Coordinator", *, on_busy: OnBusy = "reject",
                   wait_timeout: float = 30.0, ttl: float = 30.0, durability: str | None = "sync") -> CoherentGraph:
    """Wrap a compiled graph so each run holds its thread (see the module docstring).

    ``durability`` is the default for runs that do not pass one (None: LangGraph's own default,
    ``"async"``, under which a refused put surfaces only when the run ends); not applied to a graph
    without a checkpointer. Raises TypeError for a graph that is not compiled, ValueError for an
    unknown ``on_busy`` or ``durability``."""
    return CoherentGraph(graph, coordinator, on_busy=on_busy, wait_timeout=wait_timeout, ttl=ttl,
                         durability=durability)
