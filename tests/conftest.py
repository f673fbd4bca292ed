"""Shared fixtures: models, images, the running app and a real browser."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"

torch.set_num_threads(2)
# The app run in-process (AppTest) sizes its gate with this count too, so it does not change the test process's
# threads (cnnviz.admission.configure_threads); servers started by serve_app get the app's own plan.
_SERVER_THREADS = os.environ.get("CNNVIZ_THREADS")
os.environ["CNNVIZ_THREADS"] = "2"


@pytest.fixture(scope="session")
def small_cnn():
    from cnnviz.models import load_model

    return load_model("small_cnn")


@pytest.fixture(scope="session")
def digit_batch(small_cnn):
    """Eight held-out MNIST digits, a seeded sample (N=8, 1, 32, 32), and their labels (8,)."""
    import numpy as np

    from cnnviz.data import mnist_dataset

    held_out = mnist_dataset("test", limit=8, seed=0)
    x = torch.cat([small_cnn.preprocessing(image) for image in held_out.images])
    return x, torch.from_numpy(np.asarray(held_out.labels))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Server-log lines that are not a defect of the app, each with why.
LOG_ALLOWED = (
    # streamlit-webrtc says when one frame took longer than the frame budget: timing on a busy CPU.
    re.compile(r"frame callback is too slow"),
)
# With this format every log line names its level, so a warning can be told from an info line.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LOG_PROBLEM = re.compile(r"Traceback|\b(WARNING|ERROR|CRITICAL)\b|\w+Warning: ")


# Whole log records (a line and the traceback printed under it) that are not a defect of the app, each with why.
RECORDS_ALLOWED = (
    # Streamlit's server (starlette) logs a traceback when a browser tab closes its websocket before the
    # server accepted it: a client going away, raised and logged inside Streamlit, before any app code runs.
    re.compile(r'WebSocketDisconnected: WebSocket is not connected\. Need to call "accept" first\.'),
)
_RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def log_problems(text: str) -> list[str]:
    """The lines of a server log that show a traceback, a logged warning or error, or a Python
    warning, less those in ``LOG_ALLOWED`` and the records matching ``RECORDS_ALLOWED``."""
    records: list[list[str]] = [[]]
    for line in text.splitlines():
        if _RECORD_START.match(line):
            records.append([])
        records[-1].append(line)
    kept = [line for record in records
            if not any(allowed.search("\n".join(record)) for allowed in RECORDS_ALLOWED) for line in record]
    return [line for line in kept
            if _LOG_PROBLEM.search(line) and not any(allowed.search(line) for allowed in LOG_ALLOWED)]


@contextmanager
def serve_app(log_name: str = "streamlit", default_model: str | None = "small_cnn"):
    """Run `streamlit run app.py` headless on a free localhost port; yields its URL.

    The server's log goes to ``artifacts/<log_name>.log``; when the ``with`` block ends without an
    error, a traceback or a warning in it (see ``log_problems``) fails the test or fixture.

    Args:
        default_model: the model new sessions open on (``$CNNVIZ_DEFAULT_MODEL``); the browser
            tests default to the small CNN, whose pages are quick. None: the app's own choice
            (SqueezeNet with the cat when its weights are fetched).
    """
    port = _free_port()
    env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    env.pop("CNNVIZ_DEFAULT_MODEL", None)
    env.pop("CNNVIZ_THREADS", None)
    if _SERVER_THREADS is not None:  # what the person running the tests asked for
        env["CNNVIZ_THREADS"] = _SERVER_THREADS
    if default_model:
        env["CNNVIZ_DEFAULT_MODEL"] = default_model
    (ROOT / "artifacts").mkdir(exist_ok=True)
    log_path = ROOT / "artifacts" / f"{log_name}.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--logger.messageFormat", LOG_FORMAT],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"streamlit did not start; see artifacts/{log_name}.log")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
    problems = log_problems(log_path.read_text(errors="replace"))  # only reached when the tests passed
    assert not problems, f"the server log artifacts/{log_name}.log holds warnings or tracebacks:\n" + "\n".join(problems[:20])


@pytest.fixture(scope="session")
def app_url():
    """One app server shared by the real-browser tests."""
    with serve_app() as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright (Playwright never downloads a browser here)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package.")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        yield browser
        browser.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    yield page
    context.close()


def wait_for_app(page, text: str | None = None, timeout: float = 90_000, quiet: float = 1.5, sidebar: bool = True) -> None:
    """Wait until the script run is over: ``text`` (if given) is shown and no run is in progress
    for ``quiet`` seconds. ``sidebar=False``: the sidebar is collapsed (presenter mode), so its
    header is not waited for."""
    if sidebar:
        page.wait_for_selector("[data-testid='stSidebarUserContent'] h2", timeout=timeout)
    if text:
        page.get_by_text(text).first.wait_for(timeout=timeout)
    quiet_since = None
    deadline = time.time() + timeout / 1000
    while time.time() < deadline:
        running = page.query_selector("[data-testid='stStatusWidget'] button") is not None
        if running:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif time.time() - quiet_since > quiet:
            return
        time.sleep(0.25)
    raise TimeoutError("the app kept running")


NAV = "[data-testid='stSidebarNav']"
MORE = re.compile(r"^View \d+ more$")  # the folded navigation's button
TRY_MS = 5_000  # one try of a click; a rerun can fold the navigation's list or close a select box under it


def open_by_link(page, title: str, timeout: float = 120_000) -> None:
    """Click the sidebar's link to the page ``title`` (within the session: a new URL would start a new
    one). The link may be behind "View N more", and a rerun may fold that list again at any moment, so
    each try unfolds it and clicks within ``TRY_MS``, until ``timeout`` (ms)."""
    from playwright.sync_api import Error as PlaywrightError  # its TimeoutError is one

    link = page.locator(f"{NAV} a").filter(has_text=title).first  # the text also holds the icon's name
    more = page.locator(NAV).get_by_text(MORE).first
    deadline = time.time() + timeout / 1000
    while True:
        try:
            if not link.is_visible() and more.is_visible():
                more.click(timeout=TRY_MS)
            link.click(timeout=TRY_MS)
            return
        except PlaywrightError:
            if time.time() > deadline:
                raise


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
