"""OTP-style supervisors on trio: ordered start, restart strategies, escalation.

Rules of this module:

- A child is a :class:`ChildSpec`; its ``start`` is an async function run as
  ``await nursery.start(start)``: it calls ``task_status.started()`` once
  ready and then runs. Returning is a *normal* exit, raising an
  :class:`Exception` an *abnormal* one. Raising or returning before
  ``started()`` is a *start failure*, which counts as an abnormal exit.
- Children start one at a time in spec order (the next one starts only after
  the previous one called ``started()``) and stop in reverse order. Dynamic
  children (:meth:`Supervisor.start_child`) are appended after the others.
- Every child runs in its own task and its exceptions are caught there: one
  child's failure never cancels a sibling through the nursery. After
  ``started()`` a child is shielded from cancellation coming from outside the
  supervisor, so that cancelling :meth:`Supervisor.run` still stops children
  one by one in reverse order. ``KeyboardInterrupt`` and ``SystemExit`` are
  not failures; they propagate and take the whole tree down.
- Stopping a child cancels its own cancel scope and waits at most its
  ``shutdown`` seconds (``None``: forever). trio cannot kill a task: code that
  shields itself or runs synchronously without reaching a checkpoint keeps
  running. Such a child is *abandoned*: an error is logged, its state becomes
  ``failed`` and the stop proceeds with the next child; ``run()`` itself
  returns only once the abandoned task has really finished, because a trio
  nursery cannot outlive its tasks.
- ``permanent`` children are always restarted, ``transient`` ones only after
  an abnormal exit, ``temporary`` ones never; a temporary child's spec is
  dropped whenever its task ends, also when a sibling's failure, an operator
  or the supervisor's own stop ends it.
- Strategies: ``one_for_one`` restarts the child alone; ``one_for_all``
  stops every other active child (reverse order) and restarts them all (in
  order); ``rest_for_one`` does the same for the active children started
  after the failed one. Children an operator stopped stay stopped.
- A restart waits the failed child's :class:`Backoff` delay first (the
  child's state is then ``restarting``); the siblings of a group restart are
  stopped at once and restarted together after that delay. A child that ran
  ``reset_after`` seconds before failing starts again from the initial delay.
- Intensity: each restart decision (one per failure, however many children
  the strategy restarts) is counted; more than ``max_restarts`` within
  ``max_seconds`` (sliding window on the trio clock) and the supervisor stops
  all its children in reverse order and :meth:`Supervisor.run` raises
  :class:`SupervisorEscalation` chained to the last child error, so that its
  parent sees an abnormal exit. A start failure during the initial start
  escalates at once, before ``task_status.started()``.
- All changes to the children happen in the supervisor's own task, one at a
  time, as in an OTP supervisor process: operator calls are queued to it and
  complete even if the caller is cancelled while waiting. A child must not
  call its supervisor's operator API before it has called ``started()``
  (the supervisor is waiting for it).
- Each :meth:`Supervisor.run` starts from the specs given to the constructor
  (like OTP's ``init/1`` on a restart); dynamic children and restart counts do
  not survive a restart of the supervisor itself.
- Logs go to ``interlink.supervisor`` with ``supervisor``, ``child``,
  ``error_type`` and ``restarts`` extras; each failure is logged once. Error
  messages are kept only in :class:`ChildInfo` (``last_error``), never logged.
"""

from __future__ import annotations

import functools
import logging
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias, get_args

import trio

from engine import Backoff as RetryBackoff
from engine import LocalError

log = logging.getLogger("interlink.supervisor")

RestartType = Literal["permanent", "transient", "temporary"]
ChildType = Literal["worker", "supervisor"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
ChildState = Literal["starting", "running", "restarting", "stopped", "failed"]

_ACTIVE: frozenset[str] = frozenset({"starting", "running", "restarting"})


class SupervisorEscalation(LocalError):
    """A supervisor gave up (restart intensity or a failed initial start).

    ``__cause__`` is the last child error, if the last exit was abnormal.
    """

    def __init__(self, supervisor: str, child: str, reason: str) -> None:
        super().__init__(f"supervisor {supervisor!r} escalates ({reason}; last child {child!r})")
        self.supervisor = supervisor
        self.child = child
        self.reason = reason


class SupervisorRequestError(LocalError):
    """An operator request was refused; ``reason`` is the OTP error atom.

    One of ``not_found``, ``already_present``, ``running``, ``restarting``,
    ``not_running`` (the supervisor itself is not running).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to start one child and what to do when it exits."""

    id: str
    start: Callable[..., Awaitable[object]]
    restart: RestartType = "permanent"
    shutdown: float | None = 5.0
    type: ChildType = "worker"

    def __post_init__(self) -> None:
        if not self.id:
            raise LocalError("a child spec needs a non-empty id")
        if self.restart not in get_args(RestartType):
            raise LocalError(f"child {self.id!r}: unknown restart type {self.restart!r}")
        if self.type not in get_args(ChildType):
            raise LocalError(f"child {self.id!r}: unknown child type {self.type!r}")
        if self.shutdown is not None and not self.shutdown >= 0:
            raise LocalError(f"child {self.id!r}: shutdown must be >= 0 or None")


@dataclass(frozen=True, slots=True)
class Backoff(RetryBackoff):
    """Exponential restart delay with jitter, so crash loops do not spin: the
    engine's one backoff policy, counted from restart 0 of a crash loop.

    The delay before restart number ``n`` (from 0) of a crash loop is
    ``initial * multiplier**n`` capped at ``maximum``, times a uniform factor
    in ``[1 - jitter, 1 + jitter]``, capped at ``maximum`` again. The loop
    counter resets when the child ran ``reset_after`` seconds before failing.
    """

    reset_after: float = 10.0

    def __post_init__(self) -> None:
        RetryBackoff.__post_init__(self)
        if not self.reset_after >= 0:
            raise LocalError("backoff reset_after must be >= 0")

    def base(self, attempt: int) -> float:
        """The delay of restart ``attempt`` (from 0) before jitter."""
        return RetryBackoff.base(self, attempt + 1)


@dataclass(frozen=True, slots=True)
class ChildInfo:
    """A snapshot of one child, for operators; no tracebacks, no content."""

    id: str
    type: ChildType
    restart: RestartType
    state: ChildState
    restarts: int
    last_error: str
    last_error_at: float | None
    started_at: float | None


class _Run:
    """One running instance of a child: its task's scope and outcome."""

    __slots__ = ("done", "error", "scope", "send", "started_at", "stopping")

    def __init__(self, send: trio.MemorySendChannel[_Message]) -> None:
        self.send = send
        self.scope = trio.CancelScope()
        self.done = trio.Event()
        self.error: Exception | None = None
        self.started_at: float | None = None
        self.stopping = False  # set by the supervisor before it cancels the scope


class _Batch:
    """Identity of one scheduled (group) restart; children point at it while waiting."""

    __slots__ = ()


class _Child:
    __slots__ = ("attempt", "last_error", "last_error_at", "pending", "restarts", "run",
                 "spec", "started_at", "state")

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.state: ChildState = "stopped"
        self.run: _Run | None = None
        self.pending: _Batch | None = None
        self.restarts = 0
        self.attempt = 0  # position in the backoff sequence
        self.last_error = ""
        self.last_error_at: float | None = None
        self.started_at: float | None = None

    def info(self) -> ChildInfo:
        return ChildInfo(self.spec.id, self.spec.type, self.spec.restart, self.state,
                         self.restarts, self.last_error, self.last_error_at, self.started_at)


@dataclass(eq=False, slots=True)
class _Exited:
    child: _Child
    run: _Run


@dataclass(eq=False, slots=True)
class _RestartDue:
    batch: _Batch


@dataclass(eq=False, slots=True)
class _Call:
    op: Callable[[], Awaitable[None]]
    done: trio.Event = field(default_factory=trio.Event)
    error: Exception | None = None


_Message: TypeAlias = _Exited | _RestartDue | _Call


class _StartStatus:
    """Forwards ``started()`` and shields the child once it left its starter.

    The shield is only raised if trio really moved the task into the
    supervisor's nursery: when the starter is being cancelled, trio leaves
    the task where it is, and it must stay cancellable there.
    """

    __slots__ = ("_inner", "_run", "_target", "_task", "called")

    def __init__(self, inner: trio.TaskStatus[object], run: _Run, target: trio.Nursery) -> None:
        self._inner = inner
        self._run = run
        self._target = target
        self._task = trio.lowlevel.current_task()
        self.called = False

    def started(self, value: object = None) -> None:
        self._inner.started(value)
        self.called = True
        self._run.started_at = trio.current_time()
        if self._task.parent_nursery is self._target:
            self._run.scope.shield = True


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _nested(spec: ChildSpec) -> Supervisor | None:
    owner = getattr(spec.start, "__self__", None)
    return owner if isinstance(owner, Supervisor) else None


class Supervisor:
    """Starts, watches and restarts children; see the module rules."""

    def __init__(
        self,
        name: str,
        children: Sequence[ChildSpec] = (),
        *,
        strategy: Strategy = "one_for_one",
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if strategy not in get_args(Strategy):
            raise LocalError(f"supervisor {name!r}: unknown strategy {strategy!r}")
        if max_restarts < 0:
            raise LocalError(f"supervisor {name!r}: max_restarts must be >= 0")
        if not max_seconds > 0:
            raise LocalError(f"supervisor {name!r}: max_seconds must be > 0")
        ids = [spec.id for spec in children]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise LocalError(f"supervisor {name!r}: duplicate child ids {duplicates}")
        self.name = name
        self.strategy: Strategy = strategy
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self.backoff = backoff if backoff is not None else Backoff()
        self._rng = rng if rng is not None else random.Random()
        self._specs = tuple(children)
        self._children = [_Child(spec) for spec in self._specs]
        self._restart_times: deque[float] = deque()
        self._running = False
        self._accepting = False
        self._nursery: trio.Nursery | None = None
        self._send: trio.MemorySendChannel[_Message] | None = None
        self._main_scope = trio.CancelScope()
        self._finished = trio.Event()

    # ------------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the children in order, report started, supervise until stopped.

        Returns normally after :meth:`stop`; re-raises cancellation after
        stopping the children; raises :class:`SupervisorEscalation` when it
        gives up.
        """
        if self._running:
            raise LocalError(f"supervisor {self.name!r} is already running")
        self._running = True
        self._children = [_Child(spec) for spec in self._specs]
        self._restart_times.clear()
        self._main_scope = trio.CancelScope()
        self._finished = trio.Event()
        send, receive = trio.open_memory_channel[_Message](math.inf)
        self._send = send
        self._accepting = True
        escalation: SupervisorEscalation | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    with self._main_scope:
                        try:
                            await self._start_initial()
                            task_status.started()
                            log.info("supervisor started", extra={"supervisor": self.name})
                            await self._serve(receive)
                        except SupervisorEscalation as exc:
                            escalation = exc
                finally:
                    self._accepting = False
                    with trio.CancelScope(shield=True):
                        await self._stop_all()
                    self._fail_queued_calls(receive)
                    nursery.cancel_scope.cancel()  # pending restart timers
        finally:
            self._running = False
            self._nursery = None
            self._send = None
            self._finished.set()
            if escalation is None:
                log.info("supervisor stopped", extra={"supervisor": self.name})
        if escalation is not None:
            raise escalation

    async def stop(self) -> None:
        """Stop all children in reverse order; :meth:`run` then returns normally."""
        if not self._running:
            return
        finished = self._finished
        self._main_scope.cancel()
        await finished.wait()

    def child_spec(self, child_id: str | None = None, *, restart: RestartType = "permanent",
                   shutdown: float | None = None) -> ChildSpec:
        """This supervisor as a child of another; ``shutdown`` is infinite as in OTP."""
        return ChildSpec(child_id or self.name, self.run, restart=restart, shutdown=shutdown,
                         type="supervisor")

    # ---------------------------------------------------------- operator API

    async def start_child(self, spec: ChildSpec) -> None:
        """Append and start a child; returns once it called ``started()``.

        A start failure is re-raised here and the spec is forgotten; it does
        not count toward the restart intensity.
        """
        await self._call(functools.partial(self._do_start_child, spec))

    async def terminate_child(self, child_id: str) -> None:
        """Stop a child (or cancel its pending restart) and keep its spec."""
        await self._call(functools.partial(self._do_terminate_child, child_id))

    async def restart_child(self, child_id: str) -> None:
        """Start a stopped or failed child again; a start failure is re-raised."""
        await self._call(functools.partial(self._do_restart_child, child_id))

    async def delete_child(self, child_id: str) -> None:
        """Forget the spec of a child that is not running (stopped or failed)."""
        await self._call(functools.partial(self._do_delete_child, child_id))

    def which_children(self) -> list[ChildInfo]:
        """A snapshot of every child, in start order."""
        return [child.info() for child in self._children]

    def count_children(self) -> dict[str, int]:
        """Counts as in OTP: specs, active (starting or running), supervisors, workers."""
        children = self._children
        return {
            "specs": len(children),
            "active": sum(1 for c in children if c.state in ("starting", "running")),
            "supervisors": sum(1 for c in children if c.spec.type == "supervisor"),
            "workers": sum(1 for c in children if c.spec.type == "worker"),
        }

    def tree(self) -> dict[str, object]:
        """The live supervision tree as JSON-able data, nested supervisors included."""
        return self._tree(frozenset())

    def _tree(self, seen: frozenset[int]) -> dict[str, object]:
        seen = seen | {id(self)}
        children: list[dict[str, object]] = []
        for child in self._children:
            entry: dict[str, object] = {
                "id": child.spec.id,
                "type": child.spec.type,
                "restart": child.spec.restart,
                "state": child.state,
                "restarts": child.restarts,
                "last_error": child.last_error,
                "last_error_at": child.last_error_at,
                "started_at": child.started_at,
            }
            nested = _nested(child.spec)
            if nested is not None and id(nested) not in seen:
                entry["tree"] = nested._tree(seen)
            children.append(entry)
        return {"name": self.name, "strategy": self.strategy, "running": self._running,
                "children": children}

    # ------------------------------------------------------- supervisor task

    async def _call(self, op: Callable[[], Awaitable[None]]) -> None:
        send = self._send
        if not self._accepting or send is None:
            raise SupervisorRequestError("not_running",
                                         f"supervisor {self.name!r} is not running")
        call = _Call(op)
        send.send_nowait(call)
        await call.done.wait()
        if call.error is not None:
            raise call.error

    def _fail_queued_calls(self, receive: trio.MemoryReceiveChannel[_Message]) -> None:
        while True:
            try:
                message = receive.receive_nowait()
            except trio.WouldBlock:
                return
            if isinstance(message, _Call):
                message.error = SupervisorRequestError(
                    "not_running", f"supervisor {self.name!r} stopped before the request ran")
                message.done.set()

    async def _serve(self, receive: trio.MemoryReceiveChannel[_Message]) -> None:
        while True:
            message = await receive.receive()
            if isinstance(message, _Exited):
                await self._on_exited(message.child, message.run)
            elif isinstance(message, _RestartDue):
                await self._on_restart_due(message.batch)
            else:
                await self._on_call(message)

    async def _on_call(self, call: _Call) -> None:
        try:
            await call.op()
        except Exception as exc:
            call.error = exc
        except BaseException:
            call.error = SupervisorRequestError(
                "not_running", f"supervisor {self.name!r} stopped while the request ran")
            raise
        finally:
            call.done.set()

    async def _start_initial(self) -> None:
        for child in list(self._children):
            try:
                await self._start_instance(child)
            except Exception as exc:
                self._record_error(child, exc)
                child.state = "failed"
                log.error("child failed to start; supervisor gives up",
                          extra=self._extra(child, exc))
                raise SupervisorEscalation(self.name, child.spec.id,
                                           "a child failed to start") from exc

    async def _start_instance(self, child: _Child) -> None:
        """Start one instance of ``child`` and wait for its ``started()``."""
        nursery, send = self._nursery, self._send
        assert nursery is not None and send is not None
        run = _Run(send)
        child.run = run
        child.state = "starting"
        try:
            await nursery.start(self._run_child, child, run)
        except BaseException:
            if child.run is run:
                child.run = None
            raise
        child.state = "running"
        child.started_at = run.started_at

    async def _run_child(self, child: _Child, run: _Run, *,
                         task_status: trio.TaskStatus[object]) -> None:
        """The task of one child instance: catches its failure, reports its exit."""
        assert self._nursery is not None
        status = _StartStatus(task_status, run, self._nursery)
        try:
            try:
                with run.scope:
                    await child.spec.start(task_status=status)
            except Exception as exc:
                if not status.called:
                    raise  # nursery.start() re-raises it to the starter: a start failure
                run.error = exc
            if not status.called:
                raise LocalError(f"child {child.spec.id!r} returned before calling "
                                 "task_status.started()")
        finally:
            run.done.set()
        if not run.stopping:
            run.send.send_nowait(_Exited(child, run))

    async def _stop_instance(self, child: _Child) -> bool:
        """Cancel the running instance, wait up to its shutdown; False if abandoned."""
        run = child.run
        if run is None:
            return True
        already_exited = run.done.is_set()
        run.stopping = True
        run.scope.cancel()
        shutdown = child.spec.shutdown
        with trio.move_on_after(math.inf if shutdown is None else shutdown):
            await run.done.wait()
        child.run = None
        if not run.done.is_set():
            child.last_error = (f"ShutdownTimeout: still running {shutdown} s after "
                                "cancellation; abandoned")
            child.last_error_at = trio.current_time()
            log.error("child ignored cancellation past its shutdown timeout; abandoned "
                      "(trio cannot kill a task that does not reach a checkpoint)",
                      extra=self._extra(child, None))
            return False
        if run.error is not None:
            self._record_error(child, run.error)
            message = "child failed" if already_exited else "child raised while stopping"
            log.warning(message, extra=self._extra(child, run.error))
        return True

    def _settle_stopped(self, child: _Child, clean: bool) -> None:
        if child.spec.restart == "temporary":
            self._drop(child)
        else:
            child.state = "stopped" if clean else "failed"

    def _drop(self, child: _Child) -> None:
        if child in self._children:
            self._children.remove(child)
            log.info("temporary child ended; spec dropped", extra=self._extra(child, None))

    async def _stop_all(self) -> None:
        for child in reversed(list(self._children)):
            child.pending = None
            if child.run is not None:
                self._settle_stopped(child, await self._stop_instance(child))
            elif child.state != "failed":
                self._settle_stopped(child, True)

    async def _on_exited(self, child: _Child, run: _Run) -> None:
        if child.run is not run or child not in self._children:
            return  # already stopped or forgotten by the supervisor
        child.run = None
        now = trio.current_time()
        ran_for = now - (run.started_at if run.started_at is not None else now)
        await self._handle_exit(child, run.error, ran_for)

    async def _on_restart_due(self, batch: _Batch) -> None:
        for child in list(self._children):
            if child.pending is not batch or child not in self._children:
                continue
            child.pending = None
            child.restarts += 1
            log.info("restarting child", extra=self._extra(child, None))
            try:
                await self._start_instance(child)
            except Exception as exc:
                await self._handle_exit(child, exc, 0.0)

    async def _handle_exit(self, child: _Child, error: Exception | None, ran_for: float) -> None:
        """Apply restart type, intensity, backoff and strategy to one exit."""
        spec = child.spec
        if error is not None:
            self._record_error(child, error)
            log.warning("child failed", extra=self._extra(child, error))
        else:
            log.info("child exited normally", extra=self._extra(child, None))
        if spec.restart == "temporary":
            self._drop(child)
            return
        if spec.restart == "transient" and error is None:
            child.state = "stopped"
            return

        now = trio.current_time()
        self._restart_times.append(now)
        while self._restart_times and now - self._restart_times[0] > self.max_seconds:
            self._restart_times.popleft()
        if len(self._restart_times) > self.max_restarts:
            child.state = "failed"
            log.error("restart intensity exceeded; supervisor gives up",
                      extra=self._extra(child, error))
            raise SupervisorEscalation(
                self.name, spec.id,
                f"more than {self.max_restarts} restarts within {self.max_seconds} s",
            ) from error

        if ran_for >= self.backoff.reset_after:
            child.attempt = 0
        delay = self.backoff.delay(child.attempt, self._rng)
        child.attempt += 1
        batch = _Batch()
        for sibling in reversed(self._restart_group(child)):
            if sibling is not child and sibling.run is not None:
                await self._stop_instance(sibling)
            if sibling is not child and sibling.spec.restart == "temporary":
                self._drop(sibling)
                continue
            sibling.pending = batch
            sibling.state = "restarting"
        assert self._nursery is not None and self._send is not None
        self._nursery.start_soon(self._restart_timer, batch, delay, self._send)

    def _restart_group(self, child: _Child) -> list[_Child]:
        """The children the strategy restarts for ``child``'s exit, in start order."""
        if self.strategy == "one_for_one":
            return [child]
        index = self._children.index(child)
        others = self._children if self.strategy == "one_for_all" else self._children[index:]
        return [c for c in others if c is child or c.state in _ACTIVE]

    @staticmethod
    async def _restart_timer(batch: _Batch, delay: float,
                             send: trio.MemorySendChannel[_Message]) -> None:
        await trio.sleep(delay)
        send.send_nowait(_RestartDue(batch))

    # ------------------------------------------------------- operator ops

    def _find(self, child_id: str) -> _Child:
        for child in self._children:
            if child.spec.id == child_id:
                return child
        raise SupervisorRequestError("not_found",
                                     f"no child {child_id!r} in supervisor {self.name!r}")

    @staticmethod
    def _refuse_active(child: _Child, action: str) -> None:
        if child.state in ("starting", "running"):
            raise SupervisorRequestError(
                "running", f"cannot {action} child {child.spec.id!r}: it is {child.state}")
        if child.state == "restarting":
            raise SupervisorRequestError(
                "restarting", f"cannot {action} child {child.spec.id!r}: a restart is pending "
                "(it is not running; terminate it first)")

    async def _do_start_child(self, spec: ChildSpec) -> None:
        if any(c.spec.id == spec.id for c in self._children):
            raise SupervisorRequestError(
                "already_present", f"child {spec.id!r} already exists in {self.name!r}")
        child = _Child(spec)
        self._children.append(child)
        try:
            await self._start_instance(child)
        except Exception as exc:
            self._children.remove(child)
            log.warning("dynamic child failed to start", extra=self._extra(child, exc))
            raise

    async def _do_terminate_child(self, child_id: str) -> None:
        child = self._find(child_id)
        if child.run is not None:
            self._settle_stopped(child, await self._stop_instance(child))
        elif child.state == "restarting":
            child.pending = None
            child.state = "stopped"

    async def _do_restart_child(self, child_id: str) -> None:
        child = self._find(child_id)
        self._refuse_active(child, "restart")
        child.attempt = 0
        try:
            await self._start_instance(child)
        except Exception as exc:
            self._record_error(child, exc)
            child.state = "failed"
            log.warning("child failed to restart", extra=self._extra(child, exc))
            raise

    async def _do_delete_child(self, child_id: str) -> None:
        child = self._find(child_id)
        self._refuse_active(child, "delete")
        self._children.remove(child)

    # ------------------------------------------------------------- helpers

    @staticmethod
    def _record_error(child: _Child, error: BaseException) -> None:
        child.last_error = _describe(error)
        child.last_error_at = trio.current_time()

    def _extra(self, child: _Child, error: BaseException | None) -> dict[str, object]:
        return {
            "supervisor": self.name,
            "child": child.spec.id,
            "error_type": type(error).__name__ if error is not None else None,
            "restarts": child.restarts,
        }
