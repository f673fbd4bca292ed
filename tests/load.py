"""The lecture-hall load test, shared by tests/test_browser_load.py (3 sessions) and bench/bench_load.py
(8 or more): many browser sessions open heavy pages of one real server at once.

Each session runs one ``Scenario`` (a heavy page, opened on its own sample image or seed, so that the
sessions compute different results and no one is served another's cache) in its own Chromium context,
driven by Playwright's async API from one event loop. Meanwhile a process of its own
(``load_probe.py``) asks the health endpoint every half second and keeps reopening Home (its model
already loaded) in its own Chromium. The report
holds each session's time to its result and the result's *fingerprint*: the content-addressed URLs of
its images (Streamlit names media files by a hash of their bytes) and its plots' data, rounded. Run
alone first, on a fresh server, every scenario gives the fingerprint it must give under load.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from conftest import CHROMIUM, MORE, NAV, SCREENSHOTS, TRY_MS, serve_app  # noqa: F401  (serve_app: for the bench)

EXCEPTION = "[data-testid='stException']"
PROBE = Path(__file__).with_name("load_probe.py")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
FINGERPRINT_JS = """() => {
  const main = document.querySelector("[data-testid='stMain']");
  const round = v => typeof v === 'number' ? Number(v.toPrecision(4)) : Array.isArray(v) ? v.map(round) : v;
  const plots = [...main.querySelectorAll('.js-plotly-plot')].map(p =>
      JSON.stringify((p.data || []).map(t => [t.type, round(t.x), round(t.y), round(t.z)])));
  const images = [...main.querySelectorAll('img')].map(i => new URL(i.src, location.href).pathname)
      .filter(p => p.includes('/media/'));
  return {plots, images};
}"""


@dataclass(frozen=True)
class Scenario:
    """One session's visit: open ``path`` on ``sample`` (a gallery image) and optionally set a number
    input, click a button, then wait until ``done`` shows and the page is quiet."""

    name: str
    path: str
    done: str  # a regular expression the finished page shows
    sample: str = ""
    number: tuple[str, int] | None = None  # (label of an st.number_input, value)
    select: tuple[str, str] | None = None  # (label of a select box on the page, option)
    tab: str = ""  # a tab to open before setting the number
    click: str = ""  # a button to press once the page is ready (e.g. "Train")
    heavy: bool = True


@dataclass
class Outcome:
    """What one session saw: seconds to its result, the result's fingerprint, and any error shown."""

    scenario: Scenario
    seconds: float = 0.0
    fingerprint: dict = field(default_factory=dict)
    error: str = ""


@dataclass
class Report:
    """The load test's figures."""

    sessions: int
    outcomes: list[Outcome]
    health_max_s: float
    health_checks: int
    home_s: list[float]
    health_s: list[float] = field(default_factory=list)
    log_problems: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        return [f"{o.scenario.name}: {o.error}" for o in self.outcomes if o.error] + self.log_problems

    @property
    def slowest_heavy_s(self) -> float:
        return max((o.seconds for o in self.outcomes if o.scenario.heavy), default=0.0)

    def distribution(self) -> str:
        """Home's visits and the health checks, sorted: how the light requests fared."""
        health = sorted(self.health_s)
        pick = [health[int(q * (len(health) - 1))] for q in (0.5, 0.9, 0.99)] if health else []
        return (f"Home visits (s): {', '.join(f'{s:.1f}' for s in sorted(self.home_s))}; health checks: median, "
                f"90th and 99th percentile {', '.join(f'{s:.2f}' for s in pick)} s")

    def summary(self) -> str:
        home = max(self.home_s, default=float("nan"))
        return (f"{self.sessions} heavy sessions held at once; slowest heavy job {self.slowest_heavy_s:.1f} s; "
                f"slowest Home (model loaded) {home:.2f} s over {len(self.home_s)} visits; health endpoint at most "
                f"{self.health_max_s:.2f} s over {self.health_checks} checks; errors: {len(self.errors)}")


def small_cnn_scenarios(n: int) -> list[Scenario]:
    """``n`` sessions on the small CNN: occlusion, DeepDream and t-SNE in turn, each on its own digit or seed."""
    kinds = [
        lambda i: Scenario(f"saliency-{i}", "saliency", r"incremental inference|batched engine", sample=f"digit {i % 10}"),
        lambda i: Scenario(f"deepdream-{i}", "deepdream", r"A first view", sample=f"digit {i % 10}"),
        lambda i: Scenario(f"embeddings-{i}", "embeddings", r"Pixel space, L2", number=("Seed", i)),
    ]
    return [kinds[i % len(kinds)](i) for i in range(n)]


def lecture_scenarios(n: int) -> list[Scenario]:
    """``n`` sessions on the app's default model (SqueezeNet with the cat when fetched): saliency with
    occlusion, DeepDream, t-SNE, Gatys' style transfer and training, each on its own photo or seed."""
    photos = ["cat (scikit-image)", "astronaut (scikit-image)", "coffee (scikit-image)", "rocket (scikit-image)",
              "china (scikit-learn)", "flower (scikit-learn)", "cameraman (scikit-image)", "Hubble deep field (scikit-image)"]
    kinds = [
        lambda i: Scenario(f"saliency-{i}", "saliency", r"incremental inference|batched engine", sample=photos[i % 8]),
        lambda i: Scenario(f"deepdream-{i}", "deepdream", r"A first view", sample=photos[i % 8]),
        lambda i: Scenario(f"embeddings-{i}", "embeddings", r"Pixel space, L2", number=("Seed", i)),
        lambda i: Scenario(f"gatys-{i}", "style_gatys", r"A quick first view", sample=photos[i % 8]),
        lambda i: Scenario(f"training-{i}", "train", r"best validation accuracy", number=("Seed", i),
                           select=("Data", "digits (scikit-learn, 1,797)"), tab="Optimisation", click="Train"),
    ]
    return [kinds[i % len(kinds)](i) for i in range(n)]


async def wait_quiet(page, timeout_s: float, quiet_s: float = 1.5) -> None:
    """Wait until no script run is in progress for ``quiet_s`` seconds (the async ``wait_for_app``)."""
    await page.wait_for_selector("[data-testid='stSidebarUserContent'] h2", timeout=timeout_s * 1000)
    deadline, since = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        if await page.query_selector("[data-testid='stStatusWidget'] button") is not None:
            since = None
        elif since is None:
            since = time.monotonic()
        elif time.monotonic() - since > quiet_s:
            return
        await asyncio.sleep(0.25)
    raise TimeoutError("the page kept running")


async def _choose(page, scope: str, label: str, option: str, timeout_s: float) -> None:
    """Pick ``option`` in the select box ``label``; a rerun that closes the list makes it try again."""
    box = page.locator(f"{scope} [data-testid='stSelectbox']").filter(has_text=label)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await box.locator("input").click(timeout=TRY_MS)
            await page.keyboard.type(option)
            await page.get_by_role("option", name=option, exact=True).click(timeout=TRY_MS)
            return
        except Exception:  # noqa: BLE001 - Playwright's timeout: close the list and try again, until the deadline
            if time.monotonic() > deadline:
                raise
            await page.keyboard.press("Escape")


class StartLine:
    """Where the sessions wait for one another, so that their heavy parts start together."""

    def __init__(self, sessions: int):
        self.left, self.go = sessions, asyncio.Event()

    def arrive(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.go.set()


async def _open_by_link(page, path: str, timeout_s: float) -> None:
    """Open ``path`` by the sidebar's link, within the session (a new URL would start a new session)."""
    # a link carries the view's query string (ui.links) after the path
    link = page.locator(f"{NAV} a[href$='/{path}'], {NAV} a[href*='/{path}?']").first
    more = page.locator(NAV).get_by_text(MORE).first
    deadline = time.monotonic() + timeout_s
    while True:  # the link may be behind "View N more", and a rerun may fold the list again at any moment
        try:
            if not await link.is_visible() and await more.is_visible():
                await more.click(timeout=TRY_MS)
            await link.click(timeout=TRY_MS)
            break
        except Exception:  # noqa: BLE001 - Playwright's timeout: unfold the list again, until the deadline
            if time.monotonic() > deadline:
                raise
    await page.get_by_text("What am I looking at?").first.wait_for(timeout=timeout_s * 1000)
    await wait_quiet(page, timeout_s)


async def run_scenario(browser, url: str, scenario: Scenario, line: StartLine, timeout_s: float) -> Outcome:
    """One session: get ready (Home, then the page with its image and settings), wait at the start
    line, then do what starts the heavy work (open the page, set a seed, press a button), and time it
    to its result."""
    outcome, arrived = Outcome(scenario), False
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(timeout_s * 1000)  # every click and wait: a loaded server is slow, not broken
    page = await context.new_page()
    try:
        await page.goto(url)
        await wait_quiet(page, timeout_s)
        if scenario.sample:
            await _choose(page, "[data-testid='stSidebar']", "Sample image", scenario.sample, timeout_s)
            await wait_quiet(page, timeout_s)
        if scenario.number or scenario.select:  # the page itself is light until its setting changes
            await _open_by_link(page, scenario.path, timeout_s)
        line.arrive()
        arrived = True
        await line.go.wait()  # every session starts its heavy part together
        began = time.monotonic()
        if not (scenario.number or scenario.select):
            await _open_by_link(page, scenario.path, timeout_s)
        if scenario.select:
            await _choose(page, "[data-testid='stMain']", *scenario.select, timeout_s)
            await wait_quiet(page, timeout_s)
        if scenario.tab:
            await page.get_by_role("tab", name=scenario.tab).click()
        if scenario.number:
            box = page.get_by_label(scenario.number[0], exact=True).first
            await box.fill(str(scenario.number[1]))
            await box.press("Enter")
            await wait_quiet(page, timeout_s)
        if scenario.click:
            await page.get_by_role("button", name=scenario.click, exact=True).first.click()
        done = page.locator(EXCEPTION).or_(page.get_by_text(re.compile(scenario.done)))
        await done.first.wait_for(timeout=timeout_s * 1000)
        await wait_quiet(page, timeout_s)
        outcome.seconds = time.monotonic() - began
        if await page.locator(EXCEPTION).count():
            outcome.error = (await page.locator(EXCEPTION).first.inner_text())[:500]
        outcome.fingerprint = await page.evaluate(FINGERPRINT_JS)
        if scenario.heavy and not (outcome.fingerprint["plots"] or outcome.fingerprint["images"]):
            outcome.error = outcome.error or "no result on the page"
    except Exception as error:  # noqa: BLE001  (a timeout is a failed session, reported with the others)
        outcome.error = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / f"load_failed_{scenario.name}.png"), full_page=True)
        if not arrived:
            line.arrive()
    finally:
        await context.close()
    return outcome


def _niced(folder: str, niceness: int) -> str:
    """A Chromium launcher at ``niceness``: a script that runs Chromium under ``nice``."""
    path = f"{folder}/chromium-nice-{niceness}"
    with open(path, "w") as script:
        # Playwright starts the browser in a session of its own (setsid), so Linux schedules it as an
        # autogroup of its own, beside the server's: a thread's niceness counts only inside its group. The
        # group's niceness is set too, or the "laptops" would still take an equal share of the cores.
        script.write(f'#!/bin/sh\necho {int(niceness)} > /proc/self/autogroup 2>/dev/null\n'
                     f'exec nice -n {int(niceness)} {CHROMIUM} "$@"\n')
    os.chmod(path, 0o755)
    return path


async def _run(url: str, scenarios: list[Scenario], timeout_s: float, probe: bool, sessions_nice: int = 0) -> Report:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        with tempfile.TemporaryDirectory() as folder:
            chromium = _niced(folder, sessions_nice) if sessions_nice else CHROMIUM
            browser = await p.chromium.launch(executable_path=chromium, args=ARGS)
            apart = None
            try:
                warm = await browser.new_context()  # load the model once: Home is timed with it loaded
                page = await warm.new_page()
                await page.goto(url)
                await page.get_by_text("Top prediction").first.wait_for(timeout=timeout_s * 1000)
                await warm.close()
                records = Path(folder) / "probe.jsonl"
                with open(records, "w") as sink:  # the light requests, from a process of their own
                    apart = subprocess.Popen([sys.executable, str(PROBE), url, "home" if probe else "health",
                                              str(timeout_s)], stdin=subprocess.PIPE, stdout=sink, text=True)
                line = StartLine(len(scenarios))
                sessions = [asyncio.create_task(run_scenario(browser, url, s, line, timeout_s)) for s in scenarios]
                await line.go.wait()
                apart.stdin.write("go\n")
                apart.stdin.flush()
                outcomes = list(await asyncio.gather(*sessions))
                await asyncio.to_thread(apart.communicate, None, timeout_s)  # closing its input stops it
                health, home, problems = [], [], []
                for line_text in records.read_text().splitlines():
                    ((kind, value),) = json.loads(line_text).items()
                    {"health": health, "home": home, "error": problems}[kind].append(value)
                outcomes += [Outcome(Scenario("probe", "", ""), error=problem) for problem in problems]
            finally:
                if apart is not None and apart.poll() is None:
                    apart.kill()
                await browser.close()
    return Report(len(scenarios), outcomes, max(health, default=0.0), len(health), home, health)


def run_load(url: str, scenarios: list[Scenario], timeout_s: float = 600.0, probe: bool = True,
             sessions_nice: int = 0) -> Report:
    """Run ``scenarios`` at once against the server at ``url``; with ``probe``, time Home meanwhile.

    The light requests (health checks, and Home in a Chromium of its own) come from a process of
    their own at normal priority (``load_probe.py``), so their timings hold no waiting for this one.

    Args:
        sessions_nice: run the sessions' Chromium at this niceness (0: as the server). On one machine
            the simulated students' browsers share the server's cores; in a lecture hall each runs on
            its own laptop.
    """
    with ThreadPoolExecutor(1) as worker:  # a loop of its own: the suite's sync Playwright runs one in this thread
        return worker.submit(asyncio.run, _run(url, scenarios, timeout_s, probe, sessions_nice)).result()


def run_alone(url: str, scenarios: list[Scenario], timeout_s: float = 600.0) -> list[Outcome]:
    """Run each scenario by itself, one after another (the fingerprints a loaded server must match)."""
    return [run_load(url, [scenario], timeout_s, probe=False).outcomes[0] for scenario in scenarios]
