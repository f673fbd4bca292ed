"""Lecture-hall load bench: N browser sessions (default 8) open the heavy pages of one real server at
once (Saliency with occlusion, DeepDream, Embeddings with t-SNE, Gatys' style transfer and training,
in turn), each on its own photo or seed, on the app's default model (SqueezeNet with the cat when
its weights are fetched). First each scenario runs alone on a fresh server; then all at once on
another. Prints, per session, seconds alone and under load and whether the result is identical, and
the summary: sessions held, slowest heavy job, slowest Home visit with the model loaded (bar 2 s),
slowest health check (bar 1 s), errors (bar 0).

Run: ``.venv/bin/python bench/bench_load.py [--sessions 8] [--small] [--no-alone] [--sessions-nice 19]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from load import lecture_scenarios, run_alone, run_load, serve_app, small_cnn_scenarios  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--small", action="store_true", help="the small CNN's scenarios (occlusion, DeepDream, t-SNE)")
    parser.add_argument("--no-alone", action="store_true", help="skip the runs alone (no identity check)")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--sessions-nice", type=int, default=0,
                        help="run the sessions' Chromium at this niceness (e.g. 19): the simulated students' browsers "
                             "then yield the cores to the server, as on their own laptops")
    args = parser.parse_args()
    scenarios = small_cnn_scenarios(args.sessions) if args.small else lecture_scenarios(args.sessions)
    model = "small_cnn" if args.small else None
    alone = None
    if not args.no_alone:
        began = time.monotonic()
        with serve_app("bench_load_alone", default_model=model) as url:
            alone = run_alone(url, scenarios, args.timeout)
        print(f"alone, one after another: {time.monotonic() - began:.0f} s")
    with serve_app("bench_load", default_model=model) as url:
        report = run_load(url, scenarios, args.timeout, sessions_nice=args.sessions_nice)
    if args.sessions_nice:
        print(f"The sessions' Chromium ran at nice {args.sessions_nice}.")
    print("The health checks and Home's visits came from a process of their own (tests/load_probe.py, Home in its "
          "own Chromium) at normal priority.")
    print("| session | alone (s) | under load (s) | same result | error |\n|---|---|---|---|---|")
    for k, outcome in enumerate(report.outcomes):
        solo = alone[k] if alone and k < len(alone) else None
        same = "" if solo is None else ("yes" if solo.fingerprint == outcome.fingerprint else "**no**")
        print(f"| {outcome.scenario.name} | {solo.seconds:.1f} |" if solo else f"| {outcome.scenario.name} | – |",
              f"{outcome.seconds:.1f} | {same} | {outcome.error or ''} |")
    print(report.summary())
    print(report.distribution())
    differ = [o.scenario.name for k, o in enumerate(report.outcomes) if alone and k < len(alone)
              and alone[k].fingerprint != o.fingerprint]
    ok = not report.errors and not differ and report.health_max_s < 1.0 and max(report.home_s, default=99) < 2.0
    print("PASS" if ok else f"FAIL: errors {report.errors}, different results {differ}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
