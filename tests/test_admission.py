"""The admission gate (cnnviz.admission): bounded concurrency, first come first served, one job per
owner, time slices, and waits that end cleanly when cancelled or interrupted."""

from __future__ import annotations

import os
import threading
import time

import pytest

from cnnviz.admission import AdmissionGate, Cancelled, plan
from cnnviz.training.live import BackgroundRun


def _until(condition, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_plan_keeps_a_core_for_light_work_and_reads_overrides():
    assert plan(2, {}) == plan(cores=2, environ={}) and (plan(2, {}).jobs, plan(2, {}).threads) == (1, 1)
    assert (plan(8, {}).jobs, plan(8, {}).threads) == (3, 2)
    assert (plan(16, {}).jobs, plan(16, {}).threads) == (7, 2)
    assert (plan(1, {}).jobs, plan(1, {}).threads) == (1, 1)
    for cores in range(2, 65):  # heavy jobs never take every core
        sharing = plan(cores, {})
        assert 1 <= sharing.jobs * sharing.threads <= cores - 1, cores
    assert (plan(16, {"CNNVIZ_JOBS": "3", "CNNVIZ_THREADS": "4"}).jobs, plan(16, {"CNNVIZ_THREADS": "4"}).jobs) == (3, 3)
    assert plan(2, {"CNNVIZ_THREADS": "2"}).threads == 2
    with pytest.raises(ValueError, match="CNNVIZ_JOBS"):
        plan(4, {"CNNVIZ_JOBS": "zero"})


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs a machine default above one thread")
def test_a_new_thread_computes_with_the_configured_thread_count(monkeypatch):
    import torch
    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

    from cnnviz import admission

    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # as configure_threads(1) does on a 2-core server
    monkeypatch.setattr(admission, "_THREADS", 1)
    seen = {}

    def plain() -> None:
        seen["before"] = _openmp_effective_n_threads()  # OpenMP's count is per thread: the machine's default
        seen["aligned"] = admission.align_thread()
        seen["after"] = _openmp_effective_n_threads()

    def in_a_job() -> None:
        with AdmissionGate(1).job("someone"):
            seen["in job"] = _openmp_effective_n_threads()

    try:
        for target in (plain, in_a_job):
            thread = threading.Thread(target=target)
            thread.start()
            thread.join()
    finally:
        torch.set_num_threads(previous)
    assert seen["before"] > 1 and seen["aligned"] == seen["after"] == seen["in job"] == 1, seen
    monkeypatch.setattr(admission, "_THREADS", None)
    assert admission.align_thread() is None  # nothing configured (a notebook): nothing to apply


def test_never_more_jobs_than_slots_and_every_job_runs():
    gate, lock = AdmissionGate(2, poll_s=0.01), threading.Lock()
    running, peak, done = [0], [0], []

    def job(owner: str) -> None:
        with gate.job(owner):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.02)
            with lock:
                running[0] -= 1
                done.append(owner)

    threads = [threading.Thread(target=job, args=(f"s{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert peak[0] == 2 and sorted(done) == sorted(f"s{i}" for i in range(8))
    assert gate.status() == {"running": [], "waiting": []}


def _waiter(gate: AdmissionGate, owner: str, name: str, admitted: list, positions: dict, release: threading.Event):
    def run() -> None:
        def seen(position: int) -> None:
            positions.setdefault(name, []).append(position)

        with gate.job(owner, name, on_wait=seen):
            admitted.append(name)
            release.wait(5)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_first_come_first_served_with_queue_positions():
    gate = AdmissionGate(1, poll_s=0.01)
    admitted, positions, release = [], {}, threading.Event()
    holder = gate.ticket("a", "first")
    holder.wait()
    threads = []
    for name in ("b", "c", "d"):
        threads.append(_waiter(gate, name, name, admitted, positions, release))
        _until(lambda n=name: n in gate.status()["waiting"])
    _until(lambda: all(positions.get(n) for n in "bcd"))
    assert [positions[n][-1] for n in "bcd"] == [1, 2, 3]
    holder.release()
    release.set()
    for t in threads:
        t.join(5)
    assert admitted == ["b", "c", "d"]


def test_one_job_per_owner_lets_other_owners_go_first():
    gate = AdmissionGate(2, poll_s=0.01)
    admitted, positions, release = [], {}, threading.Event()
    first = gate.ticket("alice", "training")
    first.wait()
    second = _waiter(gate, "alice", "alice's occlusion", admitted, positions, release)  # asks first ...
    _until(lambda: "alice's occlusion" in gate.status()["waiting"])
    other = _waiter(gate, "bob", "bob's occlusion", admitted, positions, release)  # ... but bob's gets the free slot
    _until(lambda: admitted == ["bob's occlusion"])
    time.sleep(0.05)
    assert admitted == ["bob's occlusion"], "a second slot went to an owner that already holds one"
    first.release()
    _until(lambda: len(admitted) == 2)
    release.set()
    for t in (second, other):
        t.join(5)


def test_a_long_job_takes_turns_at_its_checkpoints():
    gate = AdmissionGate(1, quantum_s=0.05, poll_s=0.01)
    order, stop = [], threading.Event()

    def long_job() -> None:
        with gate.job("dreamer", "deepdream") as ticket:
            while not stop.is_set():
                order.append("dream")
                time.sleep(0.01)
                ticket.checkpoint()

    dreamer = threading.Thread(target=long_job)
    dreamer.start()
    _until(lambda: "dream" in order)
    with gate.job("student", "occlusion"):  # admitted within about one quantum, not when the dream ends
        order.append("occlusion")
    _until(lambda: order[-1] == "dream")  # and the dream carries on afterwards
    stop.set()
    dreamer.join(5)
    assert order.count("occlusion") == 1 and order.index("occlusion") < len(order) - 1
    assert gate.status() == {"running": [], "waiting": []}


def test_a_wait_cancelled_or_interrupted_leaves_the_queue():
    gate = AdmissionGate(1, poll_s=0.01)
    holder = gate.ticket("a")
    holder.wait()
    with pytest.raises(Cancelled):
        gate.ticket("b", "cancelled").wait(cancelled=lambda: True)

    class Stopped(Exception):  # what Streamlit raises in a stopped script's next call
        pass

    def interrupt(position: int) -> None:
        raise Stopped

    with pytest.raises(Stopped):
        with gate.job("c", "interrupted", on_wait=interrupt):
            pass
    assert gate.status() == {"running": ["job"], "waiting": []}
    holder.release()
    with gate.job("d", "next"):  # the slot is free again
        assert gate.status()["running"] == ["next"]


def test_nested_jobs_in_one_thread_share_the_outer_slot():
    gate = AdmissionGate(1, poll_s=0.01)
    with gate.job("a", "outer") as outer:
        with gate.job("a", "inner") as inner:  # would deadlock if it queued for a second slot
            assert inner is outer
    assert gate.status() == {"running": [], "waiting": []}


def test_background_run_waits_for_a_slot_and_stop_ends_the_wait():
    gate = AdmissionGate(1, poll_s=0.01)
    holder = gate.ticket("someone else")
    holder.wait()
    job = BackgroundRun(lambda stop: iter(range(3)), name="training", gate=gate, owner="me").start()
    _until(lambda: job.snapshot().queued == 1)
    assert job.snapshot().items == [] and job.running
    job.stop()
    job.join(5)
    assert job.snapshot().status == "stopped" and gate.status()["waiting"] == []
    holder.release()
    done = BackgroundRun(lambda stop: iter(range(3)), name="training", gate=gate, owner="me").start()
    done.join(5)
    snap = done.snapshot()
    assert (snap.status, snap.items, snap.queued) == ("done", [0, 1, 2], 0)


def test_the_app_computes_a_heavy_map_only_in_a_slot_of_the_shared_gate():
    """Saliency's occlusion waits in the process-wide queue while another session holds the only slot
    free, then computes; a plain gradient (light) does not wait."""
    from test_app import new_app

    from cnnviz.admission import shared_gate

    gate = shared_gate()
    holders = [gate.ticket(f"other session {k}", "someone's DeepDream") for k in range(gate.slots)]
    for ticket in holders:
        ticket.wait()
    seen: list[dict] = []

    def release_later() -> None:
        _until(lambda: bool(gate.status()["waiting"]), timeout=120)
        seen.append(gate.status())
        for ticket in holders:
            ticket.release()

    releaser = threading.Thread(target=release_later)
    releaser.start()
    try:
        at = new_app(model_name="small_cnn", saliency_methods=["vanilla gradient", "occlusion"]).run()
        at.switch_page("pages/saliency.py").run()
    finally:
        releaser.join(150)
        for ticket in holders:
            ticket.release()
    assert not at.exception
    assert seen and seen[0]["waiting"] == ["occlusion on small_cnn…"], seen
    assert gate.status() == {"running": [], "waiting": []}
