"""The pykka peer: an actor per thread, a router actor in front of the session actors.

::

    sender thread ─tell─► router actor (thread) ─(work.route)─tell─► session actor k (thread)
                                                                    ─(work.handle)─► done

Two hops per event (pykka has no way to route inline in the sender the way
Interlink's inbound task does, short of making the sender the router). Every
inbox is a bounded ``queue.Queue`` (capacity 1000, as Interlink's mailboxes),
so ``tell`` blocks when it is full: the same backpressure. Threads are
daemons, starting them is capped and time-boxed, and a failure to start (the
OS refusing a thread, memory) is reported as where and how it failed.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Literal

import pykka

from engine import Message

from ._load import Timeline
from ._traffic import Traffic
from ._trio_pipeline import DEFAULT_CAPACITY
from ._workload import EngineWork

#: how long one actor may take to stop before the rest are left to the daemon flag
STOP_TIMEOUT_S = 10.0
_POLL_S = 0.001


StartStatus = Literal["failed", "timeout", "skipped"]


class StartFailure(Exception):
    """The peer could not start all its threads; the message says where and how."""

    def __init__(self, message: str, *, started: int, status: StartStatus) -> None:
        super().__init__(message)
        self.started = started
        self.status = status


class _BoundedActor(pykka.ThreadingActor):
    """A daemon-thread actor whose inbox holds at most :data:`DEFAULT_CAPACITY` messages."""

    use_daemon_thread = True

    @staticmethod
    def _create_actor_inbox() -> queue.Queue[Any]:
        return queue.Queue(maxsize=DEFAULT_CAPACITY)


class _RouterActor(_BoundedActor):
    def __init__(self, pipeline: PykkaPipeline) -> None:
        super().__init__()
        self._pipeline = pipeline

    def on_receive(self, message: Any) -> None:
        self._pipeline.route(message)


class _SessionActor(_BoundedActor):
    def __init__(self, pipeline: PykkaPipeline) -> None:
        super().__init__()
        self._pipeline = pipeline

    def on_receive(self, message: Any) -> None:
        self._pipeline.handle(message)


class PykkaPipeline:
    """The pykka actors of one run; :meth:`start` them, :meth:`stop` them."""

    name = "pykka-threads"
    hops = 2

    def __init__(self, traffic: Traffic, work: EngineWork) -> None:
        self._traffic = traffic
        self._work = work
        self._router: pykka.ActorRef[Any] | None = None
        self._sessions: dict[str, pykka.ActorRef[Any]] = {}
        self._timeline: Timeline | None = None
        self._submitted = 0
        self._handled = 0
        self._handled_lock = threading.Lock()

    @property
    def threads(self) -> int:
        """Actor threads this pipeline needs: one per session, plus the router."""
        return self._traffic.sessions + 1

    def start(self, *, max_threads: int, timeout: float) -> None:
        """Start the router and one actor per session, or raise :class:`StartFailure`."""
        if self.threads > max_threads:
            raise StartFailure(f"needs {self.threads:,} threads; the cap is {max_threads:,}",
                               started=0, status="skipped")
        deadline = time.perf_counter() + timeout
        try:
            self._router = _RouterActor.start(self)
            for record in self._traffic.session_records():
                if time.perf_counter() > deadline:
                    raise StartFailure(
                        f"started {len(self._sessions):,} of {self._traffic.sessions:,} session "
                        f"threads in {timeout:.0f}s", started=len(self._sessions),
                        status="timeout")
                self._sessions[record.session_id] = _SessionActor.start(self)
        except (RuntimeError, MemoryError, OSError) as exc:
            raise StartFailure(
                f"started {len(self._sessions):,} of {self._traffic.sessions:,} session threads, "
                f"then {type(exc).__name__}: {exc}", started=len(self._sessions),
                status="failed") from exc

    def stop(self) -> None:
        """Ask every actor to stop and wait a bounded time; daemon threads do the rest."""
        refs = [ref for ref in (self._router, *self._sessions.values()) if ref is not None]
        futures = [ref.stop(block=False) for ref in refs]
        deadline = time.perf_counter() + STOP_TIMEOUT_S
        for future in futures:
            try:
                future.get(timeout=max(0.0, deadline - time.perf_counter()))
            except pykka.Timeout:
                break
        self._router = None
        self._sessions.clear()

    # -- what the actors run ------------------------------------------------
    def route(self, event: Message) -> None:
        routed = self._work.route(event)
        self._sessions[routed.session_id].tell(routed)

    def handle(self, event: Message) -> None:
        self._work.handle(event)
        timeline = self._timeline
        if timeline is not None:
            timeline.complete(event.event_id)
        with self._handled_lock:
            self._handled += 1

    # -- the trial protocol (bench._runner.SyncPipeline) ---------------------
    def attach(self, timeline: Timeline | None) -> None:
        self._timeline = timeline

    def submit(self, seq: int) -> None:
        timeline = self._timeline
        router = self._router
        assert timeline is not None and router is not None, "start and attach first"
        self._submitted += 1
        router.tell(self._traffic.event(timeline.event_id(seq), seq))

    def settle(self, timeout: float) -> bool:
        deadline = time.perf_counter() + timeout
        while self._handled < self._submitted:
            if time.perf_counter() > deadline:
                return False
            time.sleep(_POLL_S)
        self._work.reset()
        return True
