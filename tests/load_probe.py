"""The load test's light requests, in a process of their own (``load.run_load``):
the health endpoint every half second and, with ``home``, Home reopened in a fresh session of its own
Chromium, timed to its top prediction.

Apart from the process that drives the heavy sessions, its timings hold no waiting for that process's
event loop or interpreter, as a student's laptop would not. It prints one JSON line per measurement
(``{"health": s}``, ``{"home": s}`` or ``{"error": text}``). It opens Home once untimed (a warm browser, as
the in-process probe's), starts measuring when it reads the line "go", and stops when its input closes.

Run: ``python tests/load_probe.py URL [home|health] TIMEOUT_S``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

_PRINT = threading.Lock()


def emit(kind: str, value: float | str) -> None:
    with _PRINT:
        print(json.dumps({kind: value}), flush=True)


def health(url: str, go: threading.Event, stop: threading.Event) -> None:
    go.wait()
    while not stop.is_set():
        began = time.monotonic()
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=30).read()
            emit("health", time.monotonic() - began)
        except OSError as error:
            emit("error", f"health check failed: {error}")
        stop.wait(0.5)


def home(url: str, go: threading.Event, stop: threading.Event, timeout_s: float) -> None:
    from playwright.sync_api import sync_playwright

    from load import ARGS, CHROMIUM

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        try:
            page.goto(url)  # untimed: Chromium's first page (fonts, scripts) is slow on any server
            page.get_by_text("Top prediction").first.wait_for(timeout=timeout_s * 1000)
            go.wait()
            while not stop.is_set():
                began = time.monotonic()
                page.goto(url)
                page.get_by_text("Top prediction").first.wait_for(timeout=timeout_s * 1000)
                emit("home", time.monotonic() - began)
                stop.wait(2.0)
        except Exception as error:  # noqa: BLE001 - reported to the load test, which counts it as an error
            emit("error", f"Home probe failed: {str(error).splitlines()[0][:300]}")
        finally:
            browser.close()


def main() -> None:
    url, what, timeout_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
    go, stop = threading.Event(), threading.Event()

    def listen() -> None:
        for line in sys.stdin:
            if line.strip() == "go":
                go.set()
        go.set()
        stop.set()

    threading.Thread(target=listen, daemon=True).start()
    checks = threading.Thread(target=health, args=(url, go, stop))
    checks.start()
    if what == "home":
        home(url, go, stop, timeout_s)
    checks.join()


if __name__ == "__main__":
    main()
