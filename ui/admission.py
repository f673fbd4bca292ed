"""The admission gate in the app: heavy jobs take a slot of ``cnnviz.admission.shared_gate()``, and a
session that waits sees its place in the queue in the job's own progress bar, never a frozen page.

The session id (``ui.training.session_uid``) is the owner, so a session runs one heavy job at a time.
Stop works as for any computation: the click reruns the script, and Streamlit stops the old run at its
next call (the progress bar's update, made at least every ``POLL_S`` s while waiting), whose ``finally``
frees the slot or leaves the queue.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import streamlit as st

from cnnviz.admission import AdmissionGate, shared_gate
from ui.training import session_uid


def gate() -> AdmissionGate:
    """The process-wide gate (created, and torch's threads set, on the first script run)."""
    return shared_gate()


def waiting_text(position: int, name: str) -> str:
    """What a waiting job's progress bar says."""
    status = gate().status()
    running, slots = len(status["running"]), gate().slots
    at_once = "one heavy job at a time" if slots == 1 else f"{slots} heavy jobs at a time"
    return (f"{name}: waiting for a free slot, number {position} in the queue ({running} running; this server runs "
            f"{at_once}, in turns, so every student's page keeps moving)…")


@contextmanager
def heavy(name: str, bar) -> Iterator[Callable[[], None]]:
    """Hold a slot of the gate while the ``with`` block computes ``name``.

    Args:
        name: what is computed (the progress bar's label).
        bar: the job's ``st.progress`` element: it shows the queue position while waiting.

    Yields:
        ``checkpoint()``: call it from the job's progress callback; it gives the slot up for a turn
        when others wait (see ``cnnviz.admission``).
    """
    def on_wait(position: int) -> None:
        bar.progress(0.0, text=waiting_text(position, name))

    with gate().job(session_uid(), name, on_wait=on_wait) as ticket:
        yield lambda: ticket.checkpoint(on_wait=on_wait)


def sidebar_status() -> None:
    """A caption in the sidebar while heavy jobs run or wait on this server."""
    status = gate().status()
    if status["running"] or status["waiting"]:
        st.sidebar.caption(f"Server: {len(status['running'])} heavy job(s) running, {len(status['waiting'])} waiting.")
