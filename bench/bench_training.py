"""Training benchmark: the small CNN on the real MNIST digits (4,000 train / 1,000 held out).

1. Time to train the Train page's default configuration and its validation accuracy
   (bar: >= 97 % in < 60 s).
2. Cost of the live page: the same run in a ``BackgroundRun`` (the page's callback keeps every
   record) while a poller thread builds the curves figure and serialises it once a second, as the
   page's fragment does, against the plain loop (bar: < 10 % overhead).

Run: .venv/bin/python bench/bench_training.py [--epochs N] [--repeats R]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from cnnviz.training import TrainConfig, mnist_data, run  # noqa: E402
from cnnviz.training.live import BackgroundRun  # noqa: E402
from cnnviz.training.loop import train  # noqa: E402
from cnnviz.training.plots import training_figure  # noqa: E402


def plain(config, data) -> tuple[float, float]:
    began = time.perf_counter()
    result = run(config, data)
    return time.perf_counter() - began, result.val_accuracy


def live(config, data, poll_s: float = 1.0) -> tuple[float, float, int]:
    began = time.perf_counter()
    job = BackgroundRun(lambda stop: train(config, data, stop=stop)).start()
    polls = 0
    while job.running:
        snap = job.snapshot()
        training_figure(snap.items, "live").to_json()
        polls += 1
        job.join(poll_s)
    snap = job.snapshot()
    seconds = time.perf_counter() - began
    if snap.status != "done":
        raise RuntimeError(snap.error)
    return seconds, snap.items[-1].result.val_accuracy, polls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = mnist_data()
    config = TrainConfig()
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
          f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} at start")
    print(f"Data: {data.name}; config: {config.epochs} epochs of {config.optimizer}, lr {config.lr}, "
          f"{config.schedule} schedule, batch {config.batch_size}, width {config.net.width}\n")
    rows = []
    for r in range(args.repeats):
        t_plain, acc_plain = plain(config, data)
        t_live, acc_live, polls = live(config, data)
        rows.append((t_plain, acc_plain, t_live, acc_live, polls))
        print(f"repeat {r + 1}: plain {t_plain:.1f} s ({acc_plain:.2%}), live page {t_live:.1f} s ({acc_live:.2%}, "
              f"{polls} figure refreshes), ratio {t_live / t_plain:.3f}; load {os.getloadavg()[0]:.1f}", flush=True)
    best_plain = min(r[0] for r in rows)
    best_live = min(r[2] for r in rows)
    print("\n| task | time | validation accuracy | bar |")
    print("| --- | ---: | ---: | --- |")
    print(f"| small CNN, MNIST 4,000 train, {config.epochs} epochs, plain loop (best of {args.repeats}) | "
          f"{best_plain:.1f} s | {rows[0][1]:.2%} | >= 97 % in < 60 s |")
    print(f"| same, live page (callback + figure every 1 s), best of {args.repeats} | {best_live:.1f} s | "
          f"{rows[0][3]:.2%} | overhead < 10 % (measured {best_live / best_plain - 1:+.1%}) |")


if __name__ == "__main__":
    main()
