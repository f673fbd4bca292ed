"""Fair sharing of the CPU between sessions: one process-wide admission gate for heavy jobs.

A heavy job (occlusion, SmoothGrad, an optimisation loop, a dataset pass, t-SNE, training) takes a
*slot* before it computes and gives it back when it ends. There are few slots (``plan``: the cores but
one, divided by the threads each job uses), so concurrent jobs never oversubscribe the cores and one
core stays free for pages; the rest wait in one first-come, first-served queue and can say where they
stand. Two rules keep it fair:

- **One job per owner.** An owner (a browser session) holds at most one slot; its second job waits
  until its first ends, while other owners' jobs go ahead of it.
- **Time slices.** A job that reaches a ``checkpoint`` (its progress callback: every step of a loop,
  every batch of occlusion) after holding its slot for ``quantum_s`` while others wait gives the slot
  up and queues again at the back. A 2-second occlusion therefore waits seconds, not minutes, behind
  a long DeepDream, and the DeepDream carries on afterwards.

Waiting is cancellable (``cancelled``) and the waiting callback may raise (Streamlit stops a script
that way when its user clicks Stop): either way the ticket leaves the queue or frees its slot in
``finally``. No Streamlit here; ``ui.admission`` draws the queue position.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

QUANTUM_S = 2.0
"""How long a job keeps its slot while others wait before it yields at its next checkpoint."""

POLL_S = 0.25
"""How often a waiting job reports its position (and checks whether it was cancelled)."""


class Cancelled(Exception):
    """A waiting job was cancelled (its Stop was pressed) before it got a slot."""


@dataclass(frozen=True)
class Plan:
    """How the machine's cores are shared: ``jobs`` heavy jobs at once, ``threads`` torch threads each."""

    jobs: int
    threads: int
    cores: int


def plan(cores: int | None = None, environ: dict[str, str] | None = None) -> Plan:
    """The process's sharing plan: one core kept for light work, the rest for heavy jobs of two threads.

    The kept core serves the event loop, every session's page script and uploads, so that a page, the
    health check and a student's first visit do not queue behind heavy jobs for the CPU. On 2 cores that
    is one job of one thread; on 8, three jobs of two threads; on 1, one job of one thread.

    ``CNNVIZ_JOBS`` and ``CNNVIZ_THREADS`` override either number (positive integers).

    Args:
        cores: CPU cores available to the process (default: the scheduler's affinity set).
        environ: the environment (default ``os.environ``).

    Returns:
        The plan; ``jobs * threads <= max(1, cores - 1)`` unless overridden.
    """
    environ = os.environ if environ is None else environ
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores = max(1, int(cores))
    heavy_cores = max(1, cores - 1)  # one core kept for light work (the only one, on a single core)
    threads = _positive(environ, "CNNVIZ_THREADS") or min(2, heavy_cores)
    jobs = _positive(environ, "CNNVIZ_JOBS") or max(1, heavy_cores // threads)
    return Plan(jobs=jobs, threads=threads, cores=cores)


def _positive(environ: dict[str, str], name: str) -> int | None:
    value = environ.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{name}={value!r}: use a positive whole number, or leave it unset.")
    return int(value)


_THREADS: int | None = None  # what configure_threads set, once
_CONFIGURE_LOCK = threading.Lock()


def configure_threads(threads: int) -> None:
    """Set torch's intra-op threads (and the OpenMP/BLAS pools scikit-learn uses) once per process.

    Later calls with the same number do nothing; a different number raises, since changing thread
    counts while other sessions compute makes their timings (and BLAS pools) unpredictable.
    """
    global _THREADS
    with _CONFIGURE_LOCK:
        if _THREADS is not None:
            if _THREADS != threads:
                raise RuntimeError(f"torch threads were set to {_THREADS} at start-up; not changing them to {threads}.")
            return
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=threads)  # not a context manager: kept for the process
        except ImportError:  # scikit-learn brings threadpoolctl; without it its pools keep their default
            pass
        _THREADS = threads


def align_thread() -> int | None:
    """Give the calling thread the thread count ``configure_threads`` set; a no-op before it ran.

    OpenMP keeps its thread count per thread: a thread started after ``configure_threads`` begins at the
    machine's default (all cores), and oneDNN's convolutions and scikit-learn's t-SNE read it there, so a
    job could compute with another count (and round differently) in another thread, and take the core kept
    for light work. ``torch.get_num_threads`` applies torch's count to the calling thread
    (torch's per-thread initialisation), which sets nothing process-wide.

    Returns:
        The thread count now in force in this thread, or None when nothing was configured.
    """
    if _THREADS is None:
        return None
    import torch

    return torch.get_num_threads()


class Ticket:
    """One job's place at the gate: waiting, holding a slot, or done. Made by ``AdmissionGate.ticket``."""

    def __init__(self, gate: "AdmissionGate", owner: str, name: str):
        self.gate, self.owner, self.name = gate, owner, name
        self.holding = False
        self.since = 0.0  # when the slot was (last) taken

    @property
    def position(self) -> int:
        """1 for the next job to get a slot, 2 behind it, ...; 0 while holding a slot."""
        return self.gate._position(self)

    def wait(self, on_wait: Callable[[int], None] | None = None, cancelled: Callable[[], bool] | None = None) -> None:
        """Block until this ticket holds a slot.

        Args:
            on_wait: called with the queue position about every ``POLL_S`` s while waiting; it may raise
                to abandon the wait (the ticket then leaves the queue).
            cancelled: polled as often; when it returns True the wait ends with ``Cancelled``.
        """
        self.gate._wait(self, on_wait, cancelled)

    def checkpoint(self, on_wait: Callable[[int], None] | None = None, cancelled: Callable[[], bool] | None = None) -> None:
        """Give the slot up for a turn when held for ``quantum_s`` while others wait; else return at once."""
        if self.holding and self.gate._should_yield(self):
            self.gate._release(self, requeue=True)
            self.gate._wait(self, on_wait, cancelled)

    def release(self) -> None:
        """Free the slot, or leave the queue (idempotent)."""
        self.gate._release(self)


class AdmissionGate:
    """At most ``slots`` heavy jobs at once, one per owner, first come first served, in time slices.

    Args:
        slots: heavy jobs that may compute at once.
        quantum_s: how long a job keeps its slot while others wait (see ``Ticket.checkpoint``).
        poll_s: how often waiting jobs report their position.
    """

    def __init__(self, slots: int, quantum_s: float = QUANTUM_S, poll_s: float = POLL_S):
        if slots < 1:
            raise ValueError("An admission gate needs at least one slot.")
        self.slots, self.quantum_s, self.poll_s = int(slots), float(quantum_s), float(poll_s)
        self._changed = threading.Condition()
        self._holders: list[Ticket] = []
        self._queue: list[Ticket] = []
        self._local = threading.local()

    def ticket(self, owner: str, name: str = "job") -> Ticket:
        """A new ticket for ``owner``'s job called ``name`` (not yet queued)."""
        return Ticket(self, owner, name)

    @contextmanager
    def job(self, owner: str, name: str = "job", on_wait: Callable[[int], None] | None = None,
            cancelled: Callable[[], bool] | None = None) -> Iterator[Ticket]:
        """Hold a slot for the ``with`` block; a nested job in the same thread reuses the outer slot.

        Args:
            owner: who asks (a session id); one slot per owner.
            name: what the job is, for ``status``.
            on_wait, cancelled: as in ``Ticket.wait``.

        Yields:
            The ticket: call its ``checkpoint`` from the job's progress callback.
        """
        outer = getattr(self._local, "ticket", None)
        if outer is not None:
            yield outer
            return
        ticket = self.ticket(owner, name)
        try:
            ticket.wait(on_wait, cancelled)
            align_thread()  # this thread computes with the configured thread count, whichever thread it is
            self._local.ticket = ticket
            yield ticket
        finally:
            self._local.ticket = None
            ticket.release()

    def status(self) -> dict[str, list[str]]:
        """The names of the running and the waiting jobs, in order."""
        with self._changed:
            return {"running": [t.name for t in self._holders], "waiting": [t.name for t in self._queue]}

    # --- internals, all under the condition's lock ------------------------------------------------

    def _admissible(self, ticket: Ticket) -> bool:
        if len(self._holders) >= self.slots or any(t.owner == ticket.owner for t in self._holders):
            return False
        busy = {t.owner for t in self._holders}
        first = next((t for t in self._queue if t.owner not in busy), None)  # owners with a running job wait
        return first is ticket

    def _position(self, ticket: Ticket) -> int:
        with self._changed:
            return self._queue.index(ticket) + 1 if ticket in self._queue else 0

    def _wait(self, ticket: Ticket, on_wait: Callable[[int], None] | None, cancelled: Callable[[], bool] | None) -> None:
        with self._changed:
            if ticket not in self._queue:
                self._queue.append(ticket)
        try:
            while True:
                with self._changed:
                    if self._admissible(ticket):
                        self._queue.remove(ticket)
                        self._holders.append(ticket)
                        ticket.holding, ticket.since = True, time.monotonic()
                        self._changed.notify_all()
                        return
                    position = self._queue.index(ticket) + 1
                if cancelled is not None and cancelled():
                    raise Cancelled(f"{ticket.name} was stopped while waiting for a free slot.")
                if on_wait is not None:
                    on_wait(position)
                with self._changed:
                    if not self._admissible(ticket):
                        self._changed.wait(self.poll_s)
        except BaseException:
            self._release(ticket)
            raise

    def _should_yield(self, ticket: Ticket) -> bool:
        with self._changed:
            others = any(t.owner != ticket.owner for t in self._queue)
            return others and time.monotonic() - ticket.since >= self.quantum_s

    def _release(self, ticket: Ticket, requeue: bool = False) -> None:
        with self._changed:
            if ticket in self._holders:
                self._holders.remove(ticket)
            if ticket in self._queue:
                self._queue.remove(ticket)
            ticket.holding = False
            if requeue:
                self._queue.append(ticket)
            self._changed.notify_all()


_GATE: AdmissionGate | None = None
_GATE_LOCK = threading.Lock()


def shared_gate() -> AdmissionGate:
    """The process-wide gate, sized by ``plan()``; the first call also sets the thread counts."""
    global _GATE
    with _GATE_LOCK:
        if _GATE is None:
            sharing = plan()
            configure_threads(sharing.threads)
            _GATE = AdmissionGate(sharing.jobs)
        return _GATE
