"""Memory bound: the server's resident memory while one browser session visits Home and Saliency
with every model of the zoo (``cnnviz.models.MODEL_NAMES``: the small CNN, torchvision's zoo with
ImageNet weights where they are cached, else random ones, and the package models).

The real server (``streamlit run app.py``, as the browser tests start it) is driven by Chromium
through Playwright: for each model the session picks it on Home, waits for the page, opens Saliency
(vanilla gradient, guided backprop, Grad-CAM and occlusion by default) and waits until its run is over.
The server's RSS is read from ``/proc/<pid>/status`` (VmRSS, and VmHWM for the peak).

Run: ``nice -n 5 .venv/bin/python bench/bench_memory.py [--models a,b] [--limit-gb 2.5]``.
Prints RSS at start, after each model, the peak, and PASS/FAIL against the limit (exit status 1 on FAIL).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conftest import CHROMIUM, serve_app, wait_for_app  # noqa: E402

TIMEOUT = 600_000
EXCEPTION = "[data-testid='stException']"


def server_pid() -> int:
    """The pid of the ``streamlit run`` child of this process."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"streamlit" in cmdline:
            return int(entry.name)
    raise RuntimeError("no streamlit child process found")


def status_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of ``pid`` in MB, from /proc/<pid>/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the select box labelled ``label``."""
    box = page.locator("[data-testid='stSelectbox']").filter(has_text=label)
    box.locator("input").click()
    page.keyboard.type(option)
    page.get_by_role("option", name=option, exact=True).click()


def open_page(page, title: str) -> None:
    """Open a page through the sidebar's navigation (same session, unlike a new URL)."""
    more = page.locator("[data-testid='stSidebarNavViewButton']")  # a long navigation is folded
    if more.count() and "more" in more.first.inner_text().lower():
        more.first.click()
    page.locator("[data-testid='stSidebarNav'] a").filter(has_text=title).first.click()


def main() -> None:
    from cnnviz.models import MODEL_NAMES
    from ui import MODEL_LABELS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="comma-separated; default: every model of the zoo")
    parser.add_argument("--limit-gb", type=float, default=2.5)
    parser.add_argument("--log", default="bench_memory", help="the server log: artifacts/<LOG>.log")
    args = parser.parse_args()
    names = args.models.split(",") if args.models else list(MODEL_NAMES)

    from playwright.sync_api import sync_playwright

    rows: list[tuple[str, float, float, float, str]] = []
    peak_sampled = 0.0
    with serve_app(args.log) as url, sync_playwright() as p:
        pid = server_pid()
        start = status_mb(pid)
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak_sampled
            while not stop.is_set():
                try:
                    peak_sampled = max(peak_sampled, status_mb(pid)["VmRSS"])
                except (OSError, KeyError):  # the server has exited
                    return
                stop.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        print(f"start: RSS {start['VmRSS']:.0f} MB", file=sys.stderr, flush=True)
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        page.set_default_timeout(TIMEOUT)  # a busy shared CPU: clicks may wait for a long run
        page.goto(url)
        wait_for_app(page, timeout=TIMEOUT)
        after_home = status_mb(pid)["VmRSS"]
        print(f"home (small CNN): RSS {after_home:.0f} MB", file=sys.stderr, flush=True)
        for name in names:
            t0 = time.perf_counter()
            open_page(page, "Home")
            wait_for_app(page, timeout=TIMEOUT)
            choose(page, "Architecture", MODEL_LABELS.get(name, name))
            wait_for_app(page, f"{name} · ", timeout=TIMEOUT)
            open_page(page, "Saliency")
            page.get_by_text("Saliency: which pixels matter").first.wait_for(timeout=TIMEOUT)
            try:
                wait_for_app(page, timeout=TIMEOUT, quiet=2.0)
            except TimeoutError:  # a very busy machine: record it and go on with the next model
                timed_out = True
            else:
                timed_out = False
            errors = page.locator(EXCEPTION).count() + page.locator("[data-testid='stAlertContentError']").count()
            occlusion = page.get_by_text("incremental inference").count() + page.get_by_text("batched engine").count()
            note = ("errors shown" if errors else "occlusion map" if occlusion else
                    f"still running after {TIMEOUT // 1000} s" if timed_out else "no occlusion map")
            mb = status_mb(pid)
            rows.append((name, mb["VmRSS"], mb["VmHWM"], time.perf_counter() - t0, note))
            print(f"{name}: RSS {mb['VmRSS']:.0f} MB, peak {mb['VmHWM']:.0f} MB, {rows[-1][3]:.0f} s, {note}",
                  file=sys.stderr, flush=True)
        end = status_mb(pid)
        stop.set()
        sampler.join()
        browser.close()

    limit_mb = args.limit_gb * 1024
    peak = max(end["VmHWM"], peak_sampled)
    print("| after | RSS (MB) | peak so far (MB) | seconds | saliency |")
    print("|---|---|---|---|---|")
    print(f"| server start | {start['VmRSS']:.0f} | {start['VmHWM']:.0f} | | |")
    print(f"| Home, small CNN | {after_home:.0f} | | | |")
    for name, rss, hwm, seconds, note in rows:
        print(f"| {name} | {rss:.0f} | {hwm:.0f} | {seconds:.0f} | {note} |")
    verdict = "PASS" if peak < limit_mb else "FAIL"
    print(f"\nstart {start['VmRSS']:.0f} MB, end {end['VmRSS']:.0f} MB, peak (VmHWM) {peak:.0f} MB "
          f"= {peak / 1024:.2f} GB: {verdict} against {args.limit_gb} GB")
    sys.exit(0 if verdict == "PASS" else 1)


if __name__ == "__main__":
    main()
