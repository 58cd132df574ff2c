"""The Dash app and the HTML report opened in real headless Chromium (Debian's chromium and
chromedriver, driven by Selenium). The test starts the dashboard server itself on 127.0.0.1.

Chromium runs with every host name unresolvable (``--host-resolver-rules``), so a page that
needed the network (a CDN script) would fail here: the report is proven to work offline.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from salient.dashboards.report import render_report
from salient.dashboards.views import build_view
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from study_data import log_study, make_results

pytestmark = pytest.mark.slow
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail(
            "browser tests need Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver"
        )
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-extensions",
        "--no-first-run",
        "--window-size=1400,1000",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def _open(driver: webdriver.Chrome, url: str) -> None:
    """Leave the previous page (whose server may be gone), drop its log, then open ``url``."""
    driver.get("about:blank")
    driver.get_log("browser")
    driver.get(url)


def _console_errors(driver: webdriver.Chrome) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _rendered_graphs(driver: webdriver.Chrome) -> int:
    """Plotly graphs that finished drawing: their traces are in the SVG (heatmaps draw an image)."""
    script = (
        "return Array.from(document.querySelectorAll('.js-plotly-plot'))"
        ".filter(e => e._fullData && e._fullData.length && e.querySelector('.main-svg .trace, .main-svg image'))"
        ".length"
    )
    return int(driver.execute_script(script))


def test_report_renders_offline_without_console_errors(browser: webdriver.Chrome, tmp_path: Path) -> None:
    view = build_view(make_results())
    path = tmp_path / "report.html"
    path.write_text(render_report(view, "report under test"), encoding="utf-8")
    _open(browser, path.as_uri())
    WebDriverWait(browser, 30).until(lambda d: _rendered_graphs(d) >= len(view.figures))
    assert browser.title == "report under test"
    assert browser.execute_script("return typeof window.Plotly") == "object"
    assert _console_errors(browser) == []
    tables = browser.find_elements(By.CSS_SELECTOR, "table.results")
    assert len(tables) == len(view.tables)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _serve_dashboard(uri: str) -> Iterator[str]:
    """``platform dashboard`` for ``uri`` on a free loopback port; yields its URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "salient.platform.cli", "dashboard", "--tracking-uri", uri, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "MLFLOW_TRACKING_URI": ""},
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert proc.poll() is None, (proc.stdout.read() if proc.stdout else b"").decode()
                assert time.time() < deadline, "dashboard did not start within 60 s"
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture()
def dashboard(two_studies: tuple[str, str, str]) -> Iterator[str]:
    with _serve_dashboard(two_studies[0]) as url:
        yield url


def _status(driver: webdriver.Chrome) -> str:
    return str(driver.find_element(By.ID, "status").text)


def test_dashboard_loads_renders_and_switches_study(
    browser: webdriver.Chrome, dashboard: str, two_studies: tuple[str, str, str]
) -> None:
    _, one_seed, two_seeds = two_studies
    _open(browser, dashboard)
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: _status(d).startswith("study ") and _rendered_graphs(d) > 0)
    first = _status(browser)
    assert two_seeds in first and "8 finished trial(s)" in first  # newest study first
    titles = browser.find_elements(By.CSS_SELECTOR, "#content .gtitle")
    assert any("dose response" in t.text for t in titles)
    assert browser.find_elements(By.XPATH, "//h3[text()='dose shift between seed sizes']")

    # Pick the other study in the dropdown: the page redraws for it.
    browser.find_element(By.ID, "study").click()
    option = wait.until(ec.element_to_be_clickable((By.XPATH, "//*[contains(text(), 'one_seed')]")))
    option.click()
    wait.until(lambda d: one_seed in _status(d) and "4 finished trial(s)" in _status(d))
    wait.until(
        lambda d: (
            _rendered_graphs(d) > 0 and not d.find_elements(By.XPATH, "//h3[text()='dose shift between seed sizes']")
        )
    )
    assert _console_errors(browser) == []


def test_dashboard_updates_while_a_study_runs(browser: webdriver.Chrome, tmp_path: Path) -> None:
    """A trial finishing while the page is open appears without a reload (the app polls)."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'live.db'}"
    client = MlflowClient(tracking_uri=uri)
    results = make_results(seed_sizes=(6,))
    parent = log_study(client, "live", "running_study", results.iloc[:2])
    client.update_run(parent, status="RUNNING")
    with _serve_dashboard(uri) as url:
        _open(browser, url)
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: "2 finished trial(s)" in _status(d) and _rendered_graphs(d) > 0)
        row = results.iloc[2]
        exp = client.get_experiment_by_name("live")
        assert exp is not None
        child = client.create_run(exp.experiment_id, run_name=row["trial"], tags={"mlflow.parentRunId": parent})
        cols = [c for c in results.columns if c not in ("trial", "seed_size", "dose", "repeat")]
        client.log_batch(
            child.info.run_id,
            metrics=[Metric(c, float(row[c]), 0, 0) for c in cols if row[c] == row[c]],
            params=[Param(k, str(row[k])) for k in ("seed_size", "dose", "repeat")],
        )
        client.set_terminated(child.info.run_id)
        wait.until(lambda d: "3 finished trial(s)" in _status(d))  # within a few 5 s polls
        wait.until(lambda d: _rendered_graphs(d) > 0)
        assert _console_errors(browser) == []
