"""Actors: bounded mailboxes, refs by id, and virtual activation.

Rules of this module:

- An actor is reached only through an :class:`ActorRef` (an id plus the
  system that hosts it), never through the Python object that handles its
  messages. That keeps the door open to hosting actors on other nodes.
- Every actor has one bounded mailbox, handled one message at a time, in
  order. ``tell`` waits while the mailbox is full (backpressure);
  ``tell_nowait`` raises :class:`MailboxFullError`; ``ask`` waits for the
  handler's return value at most ``timeout`` seconds.
- Actors are **virtual**: an actor *kind* (``session``, ``contact``) is
  registered with an activation function; the first message to an id of that
  kind activates it (the function typically loads the actor's directory
  entry), and an actor idle for ``idle_timeout`` seconds with an empty
  mailbox is passivated. At most one activation per id exists: a new one
  waits until the previous one has finished passivating.
- Ids are ``"<kind>/<key>"``. Activations are spread over shards by a stable
  hash of the id (``crc32(id) % shard_count``); each shard is one service a
  supervisor owns. An actor has no task of its own: its shard's **runners**
  take actors with work from a ready queue and handle their messages in
  batches (see :class:`_Shard`), so a message costs no task switch. A
  handler that blocks keeps its runner, and another runner takes over the
  shard's queue: only actors that truly wait hold a task.
- When a handler raises, the actor *crashes* and is restarted: after a
  backoff (exponential with jitter) its state is rebuilt by a fresh
  activation and the message is retried, up to ``max_attempts`` tries in
  total; then the kind's ``on_undeliverable`` callback answers it (sessions
  tell the sender that delivery failed) and the actor carries on with the
  next message. Messages waiting in the mailbox survive every restart.
- Each actor has its own restart budget (``max_restarts`` within
  ``restart_window`` seconds), so a few bad actors among 100k cannot exhaust
  a shared one. An actor over budget is **failed**: it stays listed with its
  last error, and every message sent to it is answered through
  ``on_undeliverable`` (never held, never dropped) until an operator restarts
  (:meth:`ActorSystem.restart`) or stops (:meth:`ActorSystem.stop`) it.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Literal, NamedTuple, Protocol, TypeVar

import trio

from ._backoff import Backoff
from ._errors import (
    ActorStoppedError,
    AskTimeoutError,
    InterlinkError,
    LocalError,
    MailboxFullError,
)
from ._gc import release_free_memory
from ._mailbox import EMPTY, Mailbox

log = logging.getLogger("interlink.actors")

#: a sender or a shard's runner yields to the scheduler at least this often
YIELD_EVERY = 64
#: messages of one actor handled in a row before its shard turns to the next actor
TURN_BUDGET = 16
#: runners a shard keeps when idle: the one that runs the next burst, and one to take
#: over when a handler in it blocks (more would be spawned and ended per burst)
MAX_IDLE_RUNNERS = 2
#: passivations (in one sweep or several in a row) after which the C heap is trimmed
TRIM_AFTER_PASSIVATIONS = 1000

M = TypeVar("M")


class Actor(Protocol):
    """What an activated actor is: something that handles one message at a time."""

    async def handle(self, message: Any) -> Any:
        """Handle one message; the return value answers an ``ask``."""
        ...


class ActorCrashedError(LocalError):
    """An ``ask`` whose handler kept raising; ``__cause__`` is the last error."""


Activate = Callable[[str], Awaitable[Actor]]
OnUndeliverable = Callable[[str, Any, BaseException], Awaitable[None]]
OnPassivate = Callable[[str, Actor], Awaitable[None]]


ActorState = Literal["running", "failed"]


class ActorFailedError(LocalError):
    """The actor is failed (over its restart budget) until an operator restarts it."""


class ActorKind:
    """How actors of one kind are activated, restarted, passivated and answered on failure."""

    __slots__ = ("activate", "backoff", "idle_timeout", "max_attempts",
                 "max_restarts", "name", "on_passivate", "on_undeliverable", "restart_window")

    def __init__(
        self,
        name: str,
        activate: Activate,
        *,
        idle_timeout: float = math.inf,
        max_attempts: int = 3,
        max_restarts: int = 10,
        restart_window: float = 60.0,
        backoff_initial: float = 0.05,
        backoff_max: float = 2.0,
        on_undeliverable: OnUndeliverable | None = None,
        on_passivate: OnPassivate | None = None,
    ) -> None:
        if "/" in name:
            raise LocalError(f"actor kind {name!r} must not contain '/'")
        if max_attempts < 1 or max_restarts < 0:
            raise LocalError("max_attempts must be at least 1 and max_restarts at least 0")
        self.name = name
        self.activate = activate
        self.idle_timeout = idle_timeout
        self.max_attempts = max_attempts
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        #: the delay before each crash retry of one message
        self.backoff = Backoff(initial=backoff_initial, maximum=backoff_max)
        self.on_undeliverable = on_undeliverable
        self.on_passivate = on_passivate


class _Ask:
    """A message that wants its handler's return value back."""

    __slots__ = ("done", "error", "message", "result")

    def __init__(self, message: Any) -> None:
        self.message = message
        self.done = trio.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class ActivationStats:
    """A snapshot of one activation, for operators and tests (times on trio's clock)."""

    __slots__ = ("actor_id", "crashes", "handled", "last_activity", "last_error",
                 "last_error_at", "mailbox_depth", "state")

    def __init__(self, actor_id: str, *, state: ActorState, mailbox_depth: int, handled: int,
                 crashes: int, last_activity: float, last_error: str,
                 last_error_at: float | None) -> None:
        self.actor_id = actor_id
        self.state = state
        self.mailbox_depth = mailbox_depth
        self.handled = handled
        self.crashes = crashes
        self.last_activity = last_activity
        self.last_error = last_error
        self.last_error_at = last_error_at


class RunnerStats(NamedTuple):
    """The runner tasks of one actor kind's shards (see :class:`_Shard`)."""

    #: runner tasks alive: parked, running turns, or held by a handler that waits
    runners: int
    #: runners started since start because every runner was held by a handler
    handoffs: int
    #: actors with messages waiting for a runner
    ready: int


def describe_error(error: BaseException) -> str:
    """An error for operators: our own errors' messages are content-free by
    convention; a foreign exception's message might quote content, so only its
    type is kept."""
    if isinstance(error, InterlinkError):
        return f"{type(error).__name__}: {str(error)[:200]}"
    return type(error).__name__


class _Activation:
    """One live activation. Kept small: 100,000 of them may be active at once,
    so what only some need (a crash history, a passivation waiter's event) is
    created on first use."""

    __slots__ = (
        "_done",
        "actor",
        "actor_id",
        "busy",
        "crash_times",
        "crashes",
        "finished",
        "handled",
        "kind",
        "last_activity",
        "last_error",
        "last_error_at",
        "mailbox",
        "previous",
        "scheduled",
        "state",
    )

    def __init__(self, actor_id: str, kind: ActorKind, capacity: int,
                 previous: _Activation | None) -> None:
        self.actor_id = actor_id
        self.kind = kind
        #: the activation of the same id still passivating: this one waits for it
        self.previous = previous
        #: queued in its shard's ready queue
        self.scheduled = False
        self.mailbox: Mailbox[Any] = Mailbox(capacity)
        self.actor: Actor | None = None
        self.busy = False
        self.handled = 0
        self.crashes = 0
        #: times of recent crashes (within the restart window); None until the first
        self.crash_times: deque[float] | None = None
        self.state: ActorState = "running"
        self.last_error = ""
        self.last_error_at: float | None = None
        self.last_activity = trio.current_time()
        #: the activation's loop has ended (passivated, stopped or cancelled)
        self.finished = False
        self._done: trio.Event | None = None

    async def wait_finished(self) -> None:
        """Wait until the activation's loop has ended and ``on_passivate`` has run."""
        if self.finished:
            await trio.lowlevel.checkpoint()
            return
        if self._done is None:
            self._done = trio.Event()
        await self._done.wait()

    def set_finished(self) -> None:
        self.finished = True
        if self._done is not None:
            self._done.set()

    def idle_since(self, now: float) -> float:
        return now - self.last_activity

    def can_passivate(self) -> bool:
        mailbox = self.mailbox
        return (not self.busy and self.state == "running" and not len(mailbox)
                and not mailbox.senders_waiting)

    def stats(self, actor_id: str) -> ActivationStats:
        return ActivationStats(
            actor_id, state=self.state, mailbox_depth=len(self.mailbox),
            handled=self.handled, crashes=self.crashes, last_activity=self.last_activity,
            last_error=self.last_error, last_error_at=self.last_error_at)

    def record_crash(self, error: BaseException) -> bool:
        """Count a crash; ``True`` when the actor is still within its restart budget."""
        now = trio.current_time()
        self.crashes += 1
        self.last_error = describe_error(error)
        self.last_error_at = now
        self.actor = None  # the next attempt starts from a fresh activation
        window = self.crash_times
        if window is None:
            window = self.crash_times = deque()
        window.append(now)
        while window and window[0] < now - self.kind.restart_window:
            window.popleft()
        return len(window) <= self.kind.max_restarts


class _Shard:
    """The activations whose ids hash to one shard, and the runners that execute them.

    How a shard runs its actors (rules):

    - Activations with work (a message in the mailbox, or a closed mailbox to
      finish) wait in the ``ready`` queue, each at most once. A **runner** task
      takes one, handles up to :data:`TURN_BUDGET` of its messages in order,
      and puts it back at the end of the queue if more are waiting. Handling a
      message is a plain ``await`` of the handler inside the runner: when the
      handler does not block, no task switch happens per message. Runners
      yield to trio every :data:`YIELD_EVERY` messages.
    - A runner is *free* while it is in its own loop, not inside a handler.
      When a handler blocks (platform I/O, a full mailbox, a backoff), its
      runner stays with it, and another runner takes over the queue: one is
      woken whenever work is queued (or a handler starts with work queued)
      and no runner is free. A woken runner that finds another free runner
      parks again. So an actor that truly waits holds a task of its own, and
      its neighbours go on.
    - At most :data:`MAX_IDLE_RUNNERS` runners stay parked per shard; others
      end when the queue is empty. A shard at rest holds its parked runners
      and its sweeper.
    """

    def __init__(self, system: ActorSystem, kind: str, index: int) -> None:
        self.system = system
        self.index = index
        self.name = f"{kind}-shard-{index}"
        self.activations: dict[str, _Activation] = {}
        self.passivating: dict[str, _Activation] = {}
        self.nursery: trio.Nursery | None = None
        self._populated = trio.Event()  # set while there are activations to sweep
        #: activations with work to do, each at most once
        self.ready: deque[_Activation] = deque()
        #: runners in their own loop (not inside a handler, not parked)
        self._free = 0
        #: runner tasks alive (free, inside a handler, or parked)
        self.runners = 0
        #: the parked runner woken first, if any, and the others parked behind it
        self._parked: trio.lowlevel.Task | None = None
        self._standby: list[trio.lowlevel.Task] = []
        #: a runner has been woken (or spawned) and has not yet run
        self._waking = False
        #: runners started beyond the first because a handler blocked
        self.handoffs = 0
        #: trio's clock, read by the runners when they start, wake and yield (a read
        #: per message cost ~0.4 us; idle timeouts are seconds)
        self.now = 0.0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self._sweep_idle)
            self.runners += 1
            self._waking = True
            nursery.start_soon(self._runner, True, name=f"{self.name}-runner")
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self.nursery = None
                self.ready.clear()
                for act in (*self.activations.values(), *self.passivating.values()):
                    act.set_finished()

    def activation(self, actor_id: str) -> _Activation:
        """The live activation of ``actor_id``, activating it if needed.

        Synchronous on purpose: there is no checkpoint between the lookup and
        the insert, so two concurrent first messages cannot both activate.
        """
        act = self.activations.get(actor_id)
        if act is not None:
            return act
        if self.nursery is None:
            raise ActorStoppedError(f"the actor system is not running (actor {actor_id})")
        kind_name, _, _ = actor_id.partition("/")
        act = _Activation(actor_id, self.system.kinds[kind_name], self.system.mailbox_capacity,
                          self.passivating.get(actor_id))
        self.activations[actor_id] = act
        self._populated.set()
        return act

    # -- scheduling ---------------------------------------------------------------
    def schedule(self, act: _Activation) -> None:
        """Queue ``act`` for a turn (it has a message, or its mailbox is closed)."""
        if act.scheduled or act.busy:
            return  # its runner looks at the mailbox again after the current message
        act.scheduled = True
        self.ready.append(act)
        if not self._free and not self._waking:
            self._wake_runner()

    def _wake_runner(self) -> None:
        self._waking = True
        parked = self._parked
        if parked is not None:
            self._parked = self._standby.pop() if self._standby else None
            trio.lowlevel.reschedule(parked)
        elif self.nursery is not None:
            self.runners += 1
            self.handoffs += 1
            self.nursery.start_soon(self._runner, True, name=f"{self.name}-runner")

    async def _park(self) -> None:
        task = trio.lowlevel.current_task()
        if self._parked is not None:
            self._standby.append(self._parked)  # the newest parks in front
        self._parked = task

        def abort(_: object) -> trio.lowlevel.Abort:
            # Cancelled while parked (the shard is stopping). This runs in the
            # cancelling task, so the parked one is named, not looked up.
            if self._parked is task:
                self._parked = self._standby.pop() if self._standby else None
            elif task in self._standby:
                self._standby.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def _runner(self, woken: bool) -> None:
        self.now = trio.current_time()
        if woken:
            self._waking = False
        self._free += 1
        free = True  # whether this runner is counted in _free
        ready = self.ready
        turns = 0
        try:
            while True:
                if not ready or (woken and self._free > 1):
                    # Nothing to do, or another runner is free to do it.
                    self._free -= 1
                    free = False
                    if self._parked is not None and self.runners > MAX_IDLE_RUNNERS:
                        self.runners -= 1
                        return  # enough runners stay for the next burst
                    await self._park()
                    self.now = trio.current_time()
                    self._waking = False
                    self._free += 1
                    free = True
                    woken = True
                    continue
                woken = False
                act = ready.popleft()
                act.scheduled = False
                self._free -= 1
                free = False
                if ready and not self._free and not self._waking:
                    self._wake_runner()  # in case this turn blocks: the queue must not wait
                try:
                    handled = await self._turn(act)
                finally:
                    self._free += 1
                    free = True
                turns += handled
                if turns >= YIELD_EVERY:
                    turns = 0
                    await trio.lowlevel.checkpoint()
                    self.now = trio.current_time()
        except BaseException:
            if free:
                self._free -= 1
            self.runners -= 1
            raise

    async def _turn(self, act: _Activation) -> int:
        """Handle up to TURN_BUDGET of ``act``'s messages; finish it if its mailbox closed."""
        if act.previous is not None:
            await act.previous.wait_finished()  # single activation: let it finish passivating
            act.previous = None
        mailbox = act.mailbox
        system = self.system
        handled = 0
        act.busy = True
        act.last_activity = self.now  # the runner's clock: idle detection needs no finer
        try:
            while handled < TURN_BUDGET:
                message = mailbox.take()
                if message is EMPTY:
                    break
                handled += 1
                try:
                    actor = act.actor
                    if actor is not None and act.state == "running" and \
                            message.__class__ is not _Ask:
                        # The common case, without _handle's coroutine: a running
                        # actor and a plain message; a crash takes the slow path.
                        try:
                            await actor.handle(message)
                        except Exception as exc:
                            await self._handle(act, message, first_error=exc)
                    else:
                        await self._handle(act, message)
                finally:
                    act.handled += 1
                    system.message_done()
        finally:
            act.busy = False
        if len(mailbox):
            self.schedule(act)
        elif mailbox.closed and not act.finished:
            await self._finish(act)
        return handled

    async def _finish(self, act: _Activation) -> None:
        """The end of an activation whose mailbox was closed and has been read."""
        actor_id = act.actor_id
        act.busy = True
        try:
            if self.activations.get(actor_id) is act:
                del self.activations[actor_id]
            if act.actor is not None and act.kind.on_passivate is not None:
                with trio.CancelScope(shield=True):
                    await act.kind.on_passivate(actor_id, act.actor)
        finally:
            act.busy = False
            passivated = self.passivating.get(actor_id) is act
            if passivated:
                del self.passivating[actor_id]
            act.set_finished()
            if passivated:
                self.system.passivation_done()

    def passivate(self, act: _Activation) -> None:
        """Close ``act``'s mailbox; it finishes once what is queued has been handled."""
        self.passivating[act.actor_id] = act
        act.mailbox.close()
        self.schedule(act)

    async def _handle(self, act: _Activation, message: Any, *,
                      first_error: Exception | None = None) -> None:
        """Handle ``message`` with crash retries; ``first_error``: the first attempt was
        made (by the turn's fast path) and raised it."""
        actor_id = act.actor_id
        ask = message if isinstance(message, _Ask) else None
        payload = ask.message if ask is not None else message
        kind = act.kind
        error: BaseException | None = None
        first_attempt = 0
        if first_error is not None:
            error = first_error
            self._crashed(act, first_error, 0)
            first_attempt = 1
        for attempt in range(first_attempt, kind.max_attempts):
            if act.state == "failed":
                error = error or ActorFailedError(f"{actor_id} is failed: {act.last_error}")
                break
            if attempt:
                await trio.sleep(kind.backoff.delay(attempt))
            try:
                if act.actor is None:
                    act.actor = await kind.activate(actor_id)
                result = await act.actor.handle(payload)
            except Exception as exc:
                error = exc
                self._crashed(act, exc, attempt)
                continue
            if ask is not None:
                ask.result = result
                ask.done.set()
            return
        assert error is not None
        if ask is not None:
            ask.error = error
            ask.done.set()
        if kind.on_undeliverable is not None:
            await kind.on_undeliverable(actor_id, payload, error)
        if not isinstance(error, ActorFailedError):
            log.error("message undeliverable after retries", extra={
                "actor_id": actor_id, "attempts": kind.max_attempts,
                "error_type": type(error).__name__})

    def _crashed(self, act: _Activation, error: Exception, attempt: int) -> None:
        """Count a crash; over its restart budget the actor is failed."""
        kind = act.kind
        within_budget = act.record_crash(error)
        self.system.crash_counts[kind.name] += 1
        log.warning("actor crashed", extra={
            "actor_id": act.actor_id, "error_type": type(error).__name__,
            "crashes": act.crashes, "attempt": attempt + 1})
        if not within_budget:
            act.state = "failed"
            log.error("actor failed: restart budget exhausted", extra={
                "actor_id": act.actor_id, "max_restarts": kind.max_restarts,
                "restart_window_s": kind.restart_window, "last_error": act.last_error})

    async def _sweep_idle(self) -> None:
        """Passivate activations idle for longer than their kind's idle timeout."""
        interval = self.system.sweep_interval
        while True:
            if not self.activations:
                self._populated = trio.Event()
                await self._populated.wait()  # nothing to sweep: sleep until there is
            await trio.sleep(interval)
            self.sweep_once()

    def sweep_once(self) -> int:
        now = trio.current_time()
        idle = [
            (actor_id, act) for actor_id, act in self.activations.items()
            if act.idle_since(now) >= act.kind.idle_timeout and act.can_passivate()
        ]
        for actor_id, act in idle:
            del self.activations[actor_id]
            self.passivate(act)
        self.system.passivations_started(len(idle))
        return len(idle)


class ActorRef(Generic[M]):
    """A handle on an actor by id. Cheap to create; holds no reference to the actor."""

    __slots__ = ("_shard", "_system", "actor_id")

    def __init__(self, system: ActorSystem, actor_id: str) -> None:
        self.actor_id = actor_id
        self._system = system
        self._shard = system.shard_of(actor_id)

    def __repr__(self) -> str:
        return f"ActorRef({self.actor_id!r})"

    async def tell(self, message: M) -> None:
        """Deliver ``message``; waits while the mailbox is full."""
        system = self._system
        shard = self._shard
        system.in_flight += 1  # before sending: the handler may finish before send returns
        try:
            while True:
                act = shard.activation(self.actor_id)
                mailbox = act.mailbox
                try:
                    # A mailbox with room takes the message without a scheduler
                    # pass; the sender yields every YIELD_EVERY tells instead.
                    if not mailbox.put_nowait(message):
                        await mailbox.put(message)  # full: wait for room (a checkpoint)
                        shard.schedule(act)
                        return
                except trio.ClosedResourceError:
                    continue  # passivated or stopped meanwhile: activate again
                break
        except BaseException:
            system.message_done()
            raise
        # Delivered: a cancellation from here on must not undo the in-flight count.
        shard.schedule(act)
        system.tells += 1
        if system.tells % YIELD_EVERY == 0:
            await trio.lowlevel.checkpoint()

    def tell_nowait(self, message: M) -> None:
        """Deliver ``message`` or raise :class:`MailboxFullError` at once."""
        shard = self._shard
        while True:
            act = shard.activation(self.actor_id)
            try:
                taken = act.mailbox.put_nowait(message)
            except trio.ClosedResourceError:
                continue  # passivated or stopped since: activate again
            break
        if not taken:
            raise MailboxFullError(f"mailbox of {self.actor_id} is full")
        self._system.in_flight += 1  # no checkpoint since the send: nothing handled it yet
        shard.schedule(act)

    async def ask(self, message: M, *, timeout: float) -> Any:
        """Deliver ``message`` and wait for the handler's return value.

        Raises :class:`AskTimeoutError` after ``timeout`` seconds (the
        message may still be handled later) and :class:`ActorCrashedError`
        when every attempt to handle it raised.
        """
        request = _Ask(message)
        with trio.move_on_after(timeout) as scope:
            await self.tell(request)  # type: ignore[arg-type]
            await request.done.wait()
        if scope.cancelled_caught:
            raise AskTimeoutError(f"{self.actor_id} did not answer within {timeout}s")
        if request.error is not None:
            raise ActorCrashedError(f"{self.actor_id} failed to handle the request") \
                from request.error
        return request.result


class ActorSystem:
    """Hosts every actor of this process; each kind's actors spread over its own shards.

    ``await nursery.start(system.run)`` starts every shard; a supervisor may
    instead start each of :meth:`shards` itself (one child per shard, so that
    sessions and contacts are supervised apart). Cancelling stops every actor;
    use :meth:`drain` first for a graceful stop.
    """

    def __init__(self, *, shard_count: int = 16, mailbox_capacity: int = 1000,
                 sweep_interval: float = 1.0, trim_after: int = TRIM_AFTER_PASSIVATIONS,
                 release_memory: Callable[[], bool] = release_free_memory) -> None:
        if shard_count < 1 or mailbox_capacity < 1:
            raise LocalError("shard_count and mailbox_capacity must be at least 1")
        self.mailbox_capacity = mailbox_capacity
        #: passivations after which the C heap is trimmed, once none is in progress
        self.trim_after = trim_after
        self._release_memory = release_memory
        self._passivations_pending = 0
        self._passivated_since_trim = 0
        #: times the C heap was trimmed after a passivation sweep
        self.heap_trims = 0
        self.sweep_interval = sweep_interval
        self.shard_count = shard_count
        self.kinds: dict[str, ActorKind] = {}
        self._shards: dict[str, list[_Shard]] = {}
        #: messages accepted into a mailbox and not yet fully handled
        self.in_flight = 0
        self.tells = 0
        self._drained: trio.Event | None = None
        #: crashes since start, by kind (restarts survive passivation here)
        self.crash_counts: Counter[str] = Counter()

    def register(self, kind: ActorKind) -> None:
        if kind.name in self.kinds:
            raise LocalError(f"actor kind {kind.name!r} is already registered")
        self.kinds[kind.name] = kind
        self._shards[kind.name] = [_Shard(self, kind.name, i) for i in range(self.shard_count)]

    def shards(self, kind: str | None = None) -> list[_Shard]:
        """The shards of one kind, or of every kind."""
        if kind is not None:
            return self._shards[kind]
        return [shard for shards in self._shards.values() for shard in shards]

    def shard_of(self, actor_id: str) -> _Shard:
        kind, _, _ = actor_id.partition("/")
        shards = self._shards.get(kind)
        if shards is None:
            raise LocalError(f"no actor kind {kind!r} is registered (actor {actor_id})")
        return shards[zlib.crc32(actor_id.encode()) % len(shards)]

    def ref(self, actor_id: str) -> ActorRef[Any]:
        return ActorRef(self, actor_id)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for shard in self.shards():
                await nursery.start(shard.run)
            task_status.started()

    # -- inspection -------------------------------------------------------
    def runner_stats(self, kind: str) -> RunnerStats:
        """How the shards of ``kind`` run their actors now, and since start."""
        shards = self._shards.get(kind)
        if shards is None:
            raise LocalError(f"no actor kind {kind!r} is registered")
        return RunnerStats(runners=sum(s.runners for s in shards),
                           handoffs=sum(s.handoffs for s in shards),
                           ready=sum(len(s.ready) for s in shards))

    def active_count(self) -> int:
        return sum(len(s.activations) for s in self.shards())

    def is_active(self, actor_id: str) -> bool:
        return actor_id in self.shard_of(actor_id).activations

    def stats(self, actor_id: str) -> ActivationStats | None:
        act = self.shard_of(actor_id).activations.get(actor_id)
        return None if act is None else act.stats(actor_id)

    def list_active(self, *, kind: str | None = None,
                    state: ActorState | None = None) -> list[ActivationStats]:
        """Snapshots of live activations (running or failed), sorted by id."""
        prefix = None if kind is None else f"{kind}/"
        return sorted(
            (act.stats(actor_id) for shard in self.shards()
             for actor_id, act in shard.activations.items()
             if (prefix is None or actor_id.startswith(prefix))
             and (state is None or act.state == state)),
            key=lambda s: s.actor_id)

    # -- operator control ----------------------------------------------------
    def start(self, actor_id: str) -> ActivationStats:
        """Activate ``actor_id`` now (it loads on its first message or restart)."""
        return self.shard_of(actor_id).activation(actor_id).stats(actor_id)

    def restart(self, actor_id: str) -> ActivationStats:
        """Clear a failed state (or force a fresh activation) and reset the restart budget.

        The actor's state is rebuilt from its directory entry on its next
        message; messages already in its mailbox are kept.
        """
        act = self.shard_of(actor_id).activation(actor_id)
        act.state = "running"
        act.actor = None
        act.crash_times = None
        log.info("actor restarted by operator", extra={"actor_id": actor_id})
        return act.stats(actor_id)

    def stop(self, actor_id: str) -> bool:
        """Passivate ``actor_id`` now: it handles what is already in its mailbox
        (or answers it, when failed), then stops. ``False`` if it was not active."""
        shard = self.shard_of(actor_id)
        act = shard.activations.pop(actor_id, None)
        if act is None:
            return False
        shard.passivate(act)
        self.passivations_started(1)
        log.info("actor stopped by operator", extra={"actor_id": actor_id})
        return True

    def pending_messages(self) -> int:
        """Messages waiting in every mailbox, plus those being handled."""
        return self.in_flight

    def message_done(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self._drained is not None:
            self._drained.set()
            self._drained = None

    def passivations_started(self, count: int) -> None:
        self._passivations_pending += count

    def passivation_done(self) -> None:
        """One passivation finished; trim the C heap once a large sweep has completed.

        Freed activations leave their pages in the C heap (see
        :func:`engine._gc.release_free_memory`); trimming once no passivation
        is in progress and at least ``trim_after`` have finished since the
        last trim gives them back without trimming on every small sweep.
        """
        self._passivations_pending -= 1
        self._passivated_since_trim += 1
        if self._passivations_pending == 0 and self._passivated_since_trim >= self.trim_after:
            self._passivated_since_trim = 0
            if self._release_memory():
                self.heap_trims += 1

    def sweep_idle(self) -> int:
        """Passivate idle actors now (the shards also do it every ``sweep_interval``)."""
        return sum(shard.sweep_once() for shard in self.shards())

    async def drain(self) -> None:
        """Wait until every mailbox is empty and no handler is running."""
        while self.in_flight:
            if self._drained is None:
                self._drained = trio.Event()
            await self._drained.wait()
