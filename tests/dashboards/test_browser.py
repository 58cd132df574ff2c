"""The Dash app and the HTML report opened in real headless Chromium (Debian's chromium and
chromedriver, driven by Selenium). The tests start the dashboard server themselves on 127.0.0.1,
and a stand-in for the MLflow UI (a static page) to follow run links to.

Chromium runs with every host name unresolvable (``--host-resolver-rules``), so a page that
needed the network (a CDN script) would fail here: the report is proven to work offline.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Store
from salient.dashboards import names
from salient.dashboards.report import render_report
from salient.dashboards.views import build_view
from salient.platform.results import MlflowResults
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from study_data import STUDY_PARAMS, log_study, make_results, make_study

pytestmark = pytest.mark.slow
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory, downloads: Path) -> Iterator[webdriver.Chrome]:
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
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
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


def _click_point(driver: webdriver.Chrome, graph: str, trace: str, point: int) -> None:
    """A real mouse click on one drawn point (``graph``: a CSS selector of the plotly div)."""
    rect = driver.execute_script(
        """
        const gd = document.querySelector(arguments[0]);
        gd.scrollIntoView({block: "center"});
        const t = gd._fullData.find(t => t.name === arguments[1]);
        const axis = (letter, id) => gd._fullLayout[letter + "axis" + id.slice(1)];
        const xa = axis("x", t.xaxis), ya = axis("y", t.yaxis), box = gd.getBoundingClientRect();
        const i = arguments[2];
        return [box.left + xa._offset + xa.l2p(xa.d2l(t.x[i])), box.top + ya._offset + ya.l2p(ya.d2l(t.y[i]))];
        """,
        graph,
        trace,
        point,
    )
    actions = ActionChains(driver)
    actions.w3c_actions.pointer_action.move_to_location(int(rect[0]), int(rect[1]))
    actions.w3c_actions.pointer_action.click()
    actions.perform()


def test_report_renders_offline_findings_first_with_run_ids(browser: webdriver.Chrome, tmp_path: Path) -> None:
    results, scores = make_study()
    results = results.assign(run_id="run-" + results["trial"])
    view = build_view(results, STUDY_PARAMS, scores=scores)
    path = tmp_path / "report.html"
    path.write_text(render_report(view, "report under test"), encoding="utf-8")
    _open(browser, path.as_uri())
    WebDriverWait(browser, 30).until(lambda d: _rendered_graphs(d) >= len(view.figures))
    assert browser.title == "report under test"
    assert browser.execute_script("return typeof window.Plotly") == "object"
    lead = browser.find_element(By.CSS_SELECTOR, "#findings .lead").text
    assert lead.startswith("Synthetic pairs help significantly at seed 6 (2x) and seed 10 (1x)")
    tables = browser.find_elements(By.CSS_SELECTOR, "details.table")
    assert len(tables) == len(view.tables) and not any(t.get_attribute("open") for t in tables)  # collapsed
    links = [str(a.get_attribute("href")) for a in browser.find_elements(By.CSS_SELECTOR, "a.csv")]
    assert len(links) == len(tables) and all(link.startswith("data:text/csv") for link in links)
    # no MLflow UI address: a click shows the point's run id to copy, and no link
    _click_point(browser, "#figure-dose-response", "synthetic pairs", 2)  # seed 6, prevalence 0.05, dose 2x
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "run-id").get_attribute("value"))
    assert browser.find_element(By.ID, "run-id").get_attribute("value") == "run-s6_d2"
    assert not browser.find_element(By.ID, "run-link").is_displayed() and len(browser.window_handles) == 1
    assert _console_errors(browser) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _serve_dashboard(uri: str, *extra: str) -> Iterator[str]:
    """``platform dashboard`` for ``uri`` on a free loopback port; yields its URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "salient.platform.cli", "dashboard", "--tracking-uri", uri, "--port", str(port), *extra],
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


@pytest.fixture(scope="module")
def mlflow_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A stand-in for the MLflow UI: a static page on loopback (the run route is after '#')."""
    folder = tmp_path_factory.mktemp("mlflow-ui")
    (folder / "index.html").write_text(
        '<!DOCTYPE html><link rel="icon" href="data:,"><title>MLflow UI stand-in</title>', encoding="utf-8"
    )

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()


@pytest.fixture(scope="module")
def cockpit(store: Store, mlflow_ui: str) -> Iterator[str]:
    with _serve_dashboard(store.uri, "--mlflow-ui", mlflow_ui) as url:
        yield url


def _status(driver: webdriver.Chrome) -> str:
    return str(driver.find_element(By.ID, "status").text)


def _pick(driver: webdriver.Chrome, dropdown: str, text: str) -> None:
    """Choose the option containing ``text`` in a Dash dropdown (``dropdown``: its id)."""
    driver.find_element(By.ID, dropdown).click()
    option = WebDriverWait(driver, 20).until(
        ec.element_to_be_clickable((By.XPATH, f"//*[@role='option'][contains(., '{text}')]"))
    )
    option.click()
    ActionChains(driver).send_keys(Keys.ESCAPE).perform()  # a multi-select stays open: close it
    WebDriverWait(driver, 10).until(lambda d: not d.find_elements(By.XPATH, "//*[@role='option']"))


def test_cockpit_answer_first_run_links_csv_and_study_switch(
    browser: webdriver.Chrome, cockpit: str, store: Store, mlflow_ui: str, downloads: Path
) -> None:
    _open(browser, cockpit)
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: _status(d).startswith("study ") and _rendered_graphs(d) > 3)
    assert store.two_seeds in _status(browser) and "8 finished trial(s)" in _status(browser)  # newest first
    # the answer first: the findings header (known answer of the hand-made study), then figures, then tables
    assert browser.find_element(By.CSS_SELECTOR, "#findings .lead").text == (
        "Synthetic pairs help significantly at seed 6 (2x) and seed 10 (1x); "
        "harm significantly at seed 6 (from 4x) and seed 10 (from 4x) (on the whole held-out set)."
    )
    cards = browser.find_elements(By.CSS_SELECTOR, "#findings .card")
    assert [c.find_element(By.TAG_NAME, "h3").text for c in cards] == ["Seed size 6", "Seed size 10"]
    assert [c.find_element(By.CSS_SELECTOR, "p.verdict").text for c in cards] == [
        "Therapeutic dose 2x; toxic from 4x",
        "Therapeutic dose 1x; toxic from 4x",
    ]
    order = browser.execute_script(
        "return ['#findings', '.figure', 'details.table'].map(s => "
        "Array.from(document.querySelectorAll('#content *')).indexOf(document.querySelector(s)))"
    )
    assert 0 <= order[0] < order[1] < order[2]
    assert browser.execute_script("return getComputedStyle(document.querySelector('.card')).borderLeftStyle") == "solid"

    # a point opens its MLflow run: hover names it, a click opens the UI page in a new tab
    runs = MlflowResults(store.uri).results(store.two_seeds).set_index("trial")
    run, experiment = runs.loc["s6_d2", "run_id"], runs.loc["s6_d2", "experiment_id"]
    graph = "#content .js-plotly-plot"  # the first figure: dose response
    assert "run %{customdata[0]}" in browser.execute_script(
        f"return document.querySelector('{graph}')._fullData.find(t => t.name === 'synthetic pairs').hovertemplate"
    )
    _click_point(browser, graph, "synthetic pairs", 2)
    wait.until(lambda d: d.find_element(By.ID, "run-id").get_attribute("value") == run)
    page = f"{mlflow_ui}/#/experiments/{experiment}/runs/{run}"
    assert browser.find_element(By.ID, "run-link").get_attribute("href") == page
    wait.until(lambda d: len(d.window_handles) == 2)
    main = browser.current_window_handle
    browser.switch_to.window(next(h for h in browser.window_handles if h != main))
    wait.until(lambda d: d.title == "MLflow UI stand-in")
    assert browser.current_url == page
    browser.close()
    browser.switch_to.window(main)

    # a table's CSV downloads (dcc.Download): Table 1 has one row per arm, seed size and dose
    table = browser.find_element(By.XPATH, "//details[summary[contains(., 'Table 1')]]")
    table.find_element(By.TAG_NAME, "summary").click()
    table.find_element(By.CSS_SELECTOR, "button.csv").click()
    csv = downloads / "table_1_test_auprc_interval_delta_vs_0x_auroc.csv"
    wait.until(lambda _: csv.is_file() and csv.stat().st_size > 0)
    lines = csv.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("arm,seed_size,dose,AUPRC@0.05,dAUPRC@0.05") and len(lines) == 1 + 8

    # another study: a study with no effect says so
    _pick(browser, "study", "null_study")
    wait.until(lambda d: store.null in _status(d))
    wait.until(
        lambda d: (
            d.find_element(By.CSS_SELECTOR, "#findings .lead").text
            == "Synthetic pairs have no significant effect at seed 6 (on the whole held-out set)."
        )
    )
    assert browser.find_element(By.CSS_SELECTOR, "#findings .card p.verdict").text == "No significant effect"
    assert _console_errors(browser) == []


def test_cockpit_compares_studies_on_the_same_axes(browser: webdriver.Chrome, cockpit: str, store: Store) -> None:
    _open(browser, cockpit)
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: store.two_seeds in _status(d) and _rendered_graphs(d) > 3)
    _pick(browser, "compare", "one_seed")
    _pick(browser, "compare", "null_study")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#comparison .js-plotly-plot"))
    assert browser.find_element(By.CSS_SELECTOR, "#comparison h2").text == "Comparison of 3 studies"
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#comparison .js-plotly-plot .main-svg .trace")) > 0)
    legend = browser.execute_script(
        "return Array.from(document.querySelectorAll('#comparison .js-plotly-plot'))"
        ".map(g => g._fullData.filter(t => t.showlegend).map(t => t.name))"
    )
    short = {f"{name} ({run[:8]})" for name, run in (("two_seeds", store.two_seeds), ("one_seed", store.one_seed))}
    short.add(f"null_study ({store.null[:8]})")
    assert set(legend[0]) == short and set(legend[1]) == short  # dose curves and gains, one colour per study
    assert _console_errors(browser) == []


def test_dashboard_shows_progress_and_updates_while_a_study_runs(browser: webdriver.Chrome, tmp_path: Path) -> None:
    """A trial finishing while the page is open appears without a reload (the app polls), and the
    driver's progress report is shown."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient
    from salient.platform.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'live.db'}"
    client = MlflowClient(tracking_uri=uri)
    results = make_results(seed_sizes=(6,))
    parent = log_study(client, "live", "running_study", results.iloc[:2])
    client.update_run(parent, status="RUNNING")
    tracker = Tracker(uri, "live")
    tracker.parent_id = parent
    tracker.set_progress({"done": 2, "running": 1, "failed": 0, "total": 4, "eta_seconds": 600.0})
    with _serve_dashboard(uri) as url:
        _open(browser, url)
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: "2 finished trial(s)" in _status(d) and _rendered_graphs(d) > 0)
        progress = browser.find_element(By.ID, "progress")
        wait.until(lambda _: "2 of 4 trials done, 1 running, 0 failed - about 10 min left" in progress.text)
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
        tracker.set_progress({"done": 3, "running": 1, "failed": 0, "total": 4, "eta_seconds": 300.0})
        wait.until(lambda d: "3 finished trial(s)" in _status(d))  # within a few 5 s polls
        wait.until(lambda d: "3 of 4 trials done" in d.find_element(By.ID, "progress").text)
        wait.until(lambda d: _rendered_graphs(d) > 0)
        assert len(browser.find_elements(By.CSS_SELECTOR, "#progress .bar span")) == 2  # done, running
        assert browser.find_element(By.CSS_SELECTOR, "#progress .bar .done").get_attribute("style") == "width: 75%;"
        assert _console_errors(browser) == []
    assert names.TAG_PROGRESS in client.get_run(parent).data.tags
