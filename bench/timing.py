"""Timing shared by the bench scripts: interleaved repeats, medians, per-round ratios."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def median_times(jobs: dict[str, Callable[[], object]], repeats: int, ratio_to: str | None = None) -> dict[str, float]:
    """Run every job once as warm-up, then ``repeats`` interleaved rounds; median seconds per job.

    With ``ratio_to``, also ``"<job>/ratio"``: the median over rounds of the job's time divided by
    that job's time in the same round (robust to the load of a shared CPU changing between rounds).
    """
    for job in jobs.values():
        job()
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, job in jobs.items():
            start = time.perf_counter()
            job()
            times[name].append(time.perf_counter() - start)
    result = {name: statistics.median(t) for name, t in times.items()}
    if ratio_to is not None:
        for name, t in times.items():
            result[f"{name}/ratio"] = statistics.median(a / b for a, b in zip(t, times[ratio_to]))
    return result
