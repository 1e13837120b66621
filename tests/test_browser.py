"""The pages people look at, rendered in a real browser: the service's /docs and the nightly report.html.

Headless Debian chromium (``/usr/bin/chromium``; .ci/run installs it), driven by playwright over the
DevTools protocol (playwright never downloads a browser here: it is handed the executable). Every assertion
is on what rendered: Swagger's operation list, every request the pages made, the direction each headline
cell computed to, the charts' drawn bars. ``HEADLINE_CLUSTER_SCREENSHOTS=DIR`` also keeps the two screenshots
(docs/report.png and docs/docs-page.png come from it).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_report import write_sample_report
from test_store import FakeEmbedder

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STARTUP_S = 60  # a bound on the server's start on a busy machine, not a measurement
RENDER_MS = 60_000

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)", allow_module_level=True)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[sync_api.BrowserContext]:
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh --user-data-dir for every test
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1200, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


def keep(page: sync_api.Page, name: str, tmp_path: Path) -> Path:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    wanted = os.environ.get("HEADLINE_CLUSTER_SCREENSHOTS")
    if wanted:
        Path(wanted).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(wanted) / name)
    return shot


@pytest.fixture
def service(tmp_path: Path) -> Iterator[str]:
    """The app on 127.0.0.1 (a free port) in a thread of this process, with the fake embedder."""
    import uvicorn

    from cluster.service import create_app

    app = create_app(tmp_path / "idx", create=True, embedder=FakeEmbedder(), readers=1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    ready = threading.Event()
    for _ in range(STARTUP_S * 10):
        if server.started:
            ready.set()
            break
        ready.wait(0.1)
    assert server.started, "the service did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=STARTUP_S)
        sock.close()


def test_docs_page_renders_the_operations_from_this_server_alone(
    browser: sync_api.BrowserContext, service: str, tmp_path: Path
) -> None:
    requests: list[str] = []
    browser.on("request", lambda request: requests.append(request.url))
    page = browser.new_page()
    page.goto(f"{service}/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=RENDER_MS)
    paths = page.eval_on_selector_all(".opblock-summary-path", "nodes => nodes.map(n => n.textContent.trim())")
    assert {"/v1/collapse", "/v1/headlines", "/v1/similar", "/healthz"} <= {p.replace("\u200b", "") for p in paths}
    page.wait_for_load_state("networkidle")
    network = [url for url in requests if not url.startswith(("data:", "blob:"))]
    assert network and all(url.startswith(f"{service}/") for url in network), network
    assert any(url.endswith("/openapi.json") for url in network)
    keep(page, "docs-page.png", tmp_path)


RENDERED = """() => {
  const cells = [...document.querySelectorAll('td.headline')];
  const arabic = cells.filter(c => /[\\u0600-\\u06FF]/.test(c.textContent.trim().charAt(0)));
  const latin = cells.filter(c => /[A-Za-z]/.test(c.textContent.trim().charAt(0)));
  const textRight = cell => {
    const range = document.createRange();
    range.selectNodeContents(cell);
    return range.getBoundingClientRect().right;
  };
  const lines = node => {
    const range = document.createRange();
    range.selectNodeContents(node);
    return new Set([...range.getClientRects()].map(r => Math.round(r.top))).size;
  };
  const charts = [...document.querySelectorAll('svg[data-chart]')].map(svg => ({
    name: svg.dataset.chart,
    width: svg.getBoundingClientRect().width,
    drawn: [...svg.querySelectorAll('rect')].filter(r => r.getBoundingClientRect().height > 0).length,
  }));
  return {
    arabic: arabic.length,
    directions: [...new Set(arabic.map(c => getComputedStyle(c).direction))],
    latinDirections: [...new Set(latin.map(c => getComputedStyle(c).direction))],
    // Right-aligned: the text ends at the cell's right edge (less its padding), not at its left.
    gaps: arabic.map(c => c.getBoundingClientRect().right - textRight(c)),
    timeLines: [...document.querySelectorAll('.time')].map(lines),
    times: document.querySelectorAll('.time').length,
    charts,
  };
}"""


def test_report_renders_arabic_right_to_left_and_draws_its_charts(
    browser: sync_api.BrowserContext, tmp_path: Path
) -> None:
    report = write_sample_report(tmp_path)
    requests: list[str] = []
    browser.on("request", lambda request: requests.append(request.url))
    page = browser.new_page()
    page.set_viewport_size({"width": 900, "height": 900})  # narrow enough that a long time would wrap
    page.goto(report.as_uri())
    got = page.evaluate(RENDERED)
    assert got["arabic"] >= 5
    assert got["directions"] == ["rtl"]
    assert got["latinDirections"] == ["ltr"]  # dir=auto, not a page forced right-to-left
    assert max(got["gaps"]) < 12, got["gaps"]  # cell padding is 6px
    assert got["times"] > 5 and set(got["timeLines"]) == {1}, got["timeLines"]
    charts = {chart["name"]: chart for chart in got["charts"]}
    assert set(charts) == {"sizes", "similarity"}
    assert all(chart["width"] > 300 and chart["drawn"] >= 2 for chart in charts.values()), charts
    assert all(url.startswith("file://") for url in requests), requests
    keep(page, "report.png", tmp_path)
