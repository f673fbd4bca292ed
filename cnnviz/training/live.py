"""Run a long computation (training, a search, an ensemble) in a background thread and read its
progress from another thread: what the Train page polls. No Streamlit here.

``BackgroundRun(make_items)`` calls ``make_items(stop_event)``, which returns an iterator, in a
daemon thread and keeps every item it yields. ``snapshot()`` returns a consistent copy for drawing;
``stop()`` sets the event, which the training loop checks before every iteration. The thread never
changes torch's thread count or global seed.
"""

from __future__ import annotations

import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Iterator

from cnnviz.admission import AdmissionGate, Cancelled


@dataclass
class Snapshot:
    """What a page draws: the items so far, the status and, at the end, the error message."""

    items: list
    status: str  # "running", "done", "stopped" or "error"
    error: str
    seconds: float
    queued: int = 0  # place in the admission gate's queue while waiting for a slot; 0 once computing


class BackgroundRun:
    """One background computation whose yielded items are kept for polling.

    Args:
        make_items: ``make_items(stop_event) -> iterator``; it should stop soon after the event is set.
        name: what is running, for messages.
        errors: exception types whose message is shown as is (others show their type too).
        gate: compute in a slot of this admission gate (``cnnviz.admission``), waiting for one first and
            taking turns at every item; ``stop()`` also ends the wait.
        owner: who the job belongs to at the gate (a session id).
    """

    def __init__(self, make_items: Callable[[threading.Event], Iterator], name: str = "training",
                 errors: tuple[type[BaseException], ...] = (ValueError,), gate: AdmissionGate | None = None,
                 owner: str = ""):
        self.name = name
        self._make, self._errors = make_items, errors
        self._gate, self._owner, self._queued = gate, owner, 0
        self._items: list = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._status, self._error = "running", ""
        self._began = time.perf_counter()
        self._ended: float | None = None
        self._thread = threading.Thread(target=self._work, name=f"cnnviz-{name}", daemon=True)

    def start(self) -> "BackgroundRun":
        self._thread.start()
        return self

    def add(self, item) -> None:
        """Keep one item (the training loop's callback)."""
        with self._lock:
            self._items.append(item)

    def _queue_position(self, position: int) -> None:
        with self._lock:
            self._queued = position

    def _work(self) -> None:
        slot = (self._gate.job(self._owner, self.name, on_wait=self._queue_position, cancelled=self._stop.is_set)
                if self._gate is not None else nullcontext(None))
        try:
            with slot as ticket:
                self._queue_position(0)
                for item in self._make(self._stop):
                    self.add(item)
                    if ticket is not None:
                        ticket.checkpoint(on_wait=self._queue_position, cancelled=self._stop.is_set)
                        self._queue_position(0)
            status, error = ("stopped" if self._stop.is_set() else "done"), ""
        except Cancelled:
            status, error = "stopped", ""
        except self._errors as exc:
            status, error = "error", str(exc).strip("'\"")
        except Exception as exc:  # noqa: BLE001  (shown on the page; the thread must not die silently)
            status, error = "error", f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._status, self._error, self._ended = status, error, time.perf_counter()

    def stop(self) -> None:
        """Ask the computation to stop (within one iteration for training)."""
        self._stop.set()

    @property
    def stop_event(self) -> threading.Event:
        return self._stop

    @property
    def running(self) -> bool:
        with self._lock:
            return self._status == "running"

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def snapshot(self) -> Snapshot:
        """A consistent copy of the items so far and the status."""
        with self._lock:
            end = self._ended if self._ended is not None else time.perf_counter()
            return Snapshot(list(self._items), self._status, self._error, end - self._began, self._queued)
