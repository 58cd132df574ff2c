"""A quiet, informative console (issue #17 item 5) and a clean Ctrl-C (issue #15).

* Known-harmless third-party lines are filtered by the CLI, narrowly: the real sources (MONAI's
  Orientationd, numexpr's import, MLflow creating a store, matplotlib building its font cache,
  Ray's token-auth notice) run in a child process twice - with the filters and, as the control
  that proves each source really prints, without - and unrelated messages of the same kind still
  show.
* Where stdout is not a terminal, progress is one plain line per event (pinned by hand with an
  injected clock), and a real run's log shows them while the run is going.
* Ctrl-C (SIGINT to the run's process group, as a terminal sends it) once a trial runs: exit 130,
  "interrupted; rerun the same command to resume", the MLflow study run KILLED, and the same
  command completes it.

The two real runs are marked slow (tens of seconds each).
"""

from __future__ import annotations

import io
import logging
import os
import re
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from salient.platform.console import HARMLESS_LOG_LINES, REPLACEMENT_LOGGER, quiet_known_noise
from salient.platform.progress import PlainProgress, progress_view
from salient.platform.study import Plan, build_plan, load_study

from tests.platform.tiny_run import RUN_TIMEOUT_S, clean_env, runs, start_run, wait_for, write_tiny_study

# -- third-party noise ------------------------------------------------------------------------------

NOISE_SCRIPT = r"""
import logging, sys, warnings
from salient.platform import cli


def noisy(args, console):
    from monai.transforms import Orientationd

    Orientationd(keys=["image"], axcodes="RAS")  # MONAI's FutureWarning about `labels`
    warnings.warn("an unrelated change is coming", FutureWarning)
    import numexpr  # "NumExpr defaulting to N threads."

    logging.getLogger("numexpr.utils").info("NumExpr unrelated line")
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{sys.argv[1]}/mlflow.db").search_experiments()  # creates the store
    logging.getLogger("mlflow.store.db.utils").info("Creating a different table")
    import matplotlib.font_manager  # a fresh MPLCONFIGDIR: builds the font cache ("generated new fontManager")

    # the 5-second notice of a slow build, as matplotlib's timer logs it
    font_log = logging.getLogger("matplotlib.font_manager")
    font_log.warning("Matplotlib is building the font cache; this may take a moment.")
    logging.getLogger("matplotlib.font_manager").warning("Matplotlib could not do something else")
    from ray._private.authentication import authentication_token_setup

    authentication_token_setup._warn_token_auth_enabled()  # what ray.init logs when it turns token auth on
    return 0


cli._cmd_validate = noisy
if sys.argv[2] == "unfiltered":
    cli.quiet_known_noise = lambda: None
sys.exit(cli.main(["validate", "unused.yaml"]))
"""

#: Printed by the real sources; gone with the filters.
KNOWN_NOISE = (
    "Orientationd.__init__:labels: Current default value of argument",
    "NumExpr defaulting to",
    "Creating initial MLflow database tables...",
    "Updating database tables",
    "generated new fontManager",
    "Matplotlib is building the font cache; this may take a moment.",
    "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out.",
)
#: Unrelated messages from the same libraries and of the same kinds: never filtered.
UNRELATED = (
    "FutureWarning: an unrelated change is coming",
    "NumExpr unrelated line",
    "Creating a different table",
    "Matplotlib could not do something else",
)
OUR_RAY_LINE = (
    "INFO salient.platform.console: Ray: token authentication is on for this cluster (token in {home}/.ray/auth_token; "
    "RAY_AUTH_MODE=disabled turns it off)"
)


def _noise(tmp_path: Path, mode: str) -> str:
    work = tmp_path / mode
    (work / "mpl").mkdir(parents=True)
    env = clean_env(MPLCONFIGDIR=str(work / "mpl"))
    for name in ("NUMEXPR_MAX_THREADS", "NUMEXPR_NUM_THREADS", "OMP_NUM_THREADS", "PYTHONWARNINGS"):
        env.pop(name, None)
    out = subprocess.run(
        [sys.executable, "-c", NOISE_SCRIPT, str(work), mode], capture_output=True, text=True, timeout=240, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert list((work / "mpl").glob("fontlist-*.json")), "matplotlib did not build its font cache"
    return out.stdout + out.stderr


@pytest.mark.slow  # imports MONAI, MLflow, matplotlib and Ray twice: tens of seconds on a busy machine
def test_known_noise_is_filtered_and_unrelated_messages_still_show(tmp_path: Path) -> None:
    control = _noise(tmp_path, "unfiltered")
    for line in (*KNOWN_NOISE, *UNRELATED):
        assert line in control, f"the real source no longer prints {line!r}; update HARMLESS_* and this test"
    quiet = _noise(tmp_path, "filtered")
    for line in KNOWN_NOISE:
        assert line not in quiet, line
    for line in UNRELATED:
        assert line in quiet, line
    assert OUR_RAY_LINE.format(home=Path.home()) in quiet
    assert OUR_RAY_LINE.format(home=Path.home()) not in control


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(f"{record.name} {record.levelname} {record.getMessage()}")


@pytest.fixture
def quiet() -> Iterator[list[warnings.WarningMessage]]:
    """The CLI's filters, installed in this process and removed afterwards (logger filters would
    otherwise outlive the test); yields the warnings that got through."""
    names = {line.logger for line in HARMLESS_LOG_LINES}
    saved = {n: (list(logging.getLogger(n).filters), logging.getLogger(n).level) for n in names}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_known_noise()
        quiet_known_noise()  # twice: still one filter per logger
        yield seen
    for n, (filters, level) in saved.items():
        logging.getLogger(n).filters[:] = filters
        logging.getLogger(n).setLevel(level)


def test_filters_drop_exactly_the_known_lines(quiet: list[warnings.WarningMessage]) -> None:
    emitted = [
        ("mlflow.store.db.utils", logging.INFO, "Creating initial MLflow database tables..."),
        ("mlflow.store.db.utils", logging.INFO, "Updating database tables"),
        ("mlflow.store.db.utils", logging.WARNING, "Updating database tables"),  # another level: kept
        ("mlflow.store.db.utils", logging.INFO, "Creating initial MLflow database tables... failed"),  # kept
        ("numexpr.utils", logging.INFO, "NumExpr defaulting to 16 threads."),
        ("numexpr.utils", logging.INFO, "Note: NumExpr detected 64 cores but NUMEXPR_MAX_THREADS not set"),  # kept
        ("matplotlib.font_manager", logging.WARNING, "Matplotlib is building the font cache; this may take a moment."),
        ("matplotlib.font_manager", logging.INFO, "generated new fontManager"),
        ("matplotlib.font_manager", logging.WARNING, "findfont: Font family 'x' not found."),  # kept
        ("mlflow.tracking", logging.INFO, "Creating initial MLflow database tables..."),  # another logger: kept
    ]
    collect = _Collect()
    loggers = {name for name, _, _ in emitted}
    for name in loggers:
        logging.getLogger(name).addHandler(collect)
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        for name, level, text in emitted:
            logging.getLogger(name).log(level, text)
    finally:
        for name in loggers:
            logging.getLogger(name).removeHandler(collect)
    assert collect.seen == [
        "mlflow.store.db.utils WARNING Updating database tables",
        "mlflow.store.db.utils INFO Creating initial MLflow database tables... failed",
        "numexpr.utils INFO Note: NumExpr detected 64 cores but NUMEXPR_MAX_THREADS not set",
        "matplotlib.font_manager WARNING findfont: Font family 'x' not found.",
        "mlflow.tracking INFO Creating initial MLflow database tables...",
    ]
    orientation = (
        "monai.transforms.spatial.dictionary Orientationd.__init__:labels: Current default value of argument "
        "`labels=(('L', 'R'), ('P', 'A'), ('I', 'S'))` was changed in version None"
    )
    warnings.warn(orientation, FutureWarning, stacklevel=1)
    warnings.warn(orientation, DeprecationWarning, stacklevel=1)  # another category: kept
    warnings.warn("monai.transforms.spatial.dictionary Spacingd.__init__: changed", FutureWarning, stacklevel=1)
    assert [(w.category, str(w.message)[:40]) for w in quiet] == [
        (DeprecationWarning, orientation[:40]),
        (FutureWarning, "monai.transforms.spatial.dictionary Spac"),
    ]


def test_rays_notice_is_replaced_by_our_line(
    quiet: list[warnings.WarningMessage], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", "/srv/ray/token")
    ours, theirs = _Collect(), _Collect()
    monkeypatch.setattr(logging.getLogger(REPLACEMENT_LOGGER), "level", logging.INFO)  # the CLI logs at INFO
    logging.getLogger(REPLACEMENT_LOGGER).addHandler(ours)
    ray_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    ray_log.addHandler(theirs)
    try:
        ray_log.warning(
            "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out. For more "
            "information, see https://docs.ray.io/en/latest/ray-security/token-auth.html"
        )
        ray_log.warning("Token authentication is disabled for this Ray cluster. Anyone with network access ...")
        ray_log.warning("Token file unreadable")  # anything else Ray says there: kept
    finally:
        logging.getLogger(REPLACEMENT_LOGGER).removeHandler(ours)
        ray_log.removeHandler(theirs)
    assert theirs.seen == [f"{ray_log.name} WARNING Token file unreadable"]
    assert ours.seen == [
        "salient.platform.console INFO Ray: token authentication is on for this cluster (token in /srv/ray/token; "
        "RAY_AUTH_MODE=disabled turns it off)",
        "salient.platform.console INFO Ray: token authentication is off for this cluster: anyone who can reach its "
        "ports can run code on it (RAY_AUTH_MODE=token turns it on)",
    ]


# -- plain progress lines ---------------------------------------------------------------------------


@pytest.fixture
def two_trial_plan(tmp_path: Path) -> Plan:
    space = {"dose": {"grid": [0.0, 1.0]}, "seed_size": {"grid": [2]}}
    return build_plan(load_study(write_tiny_study(tmp_path, tmp_path / "out", search_space=space)))


def test_plain_progress_prints_one_line_per_event(two_trial_plan: Plan) -> None:
    now = [100.0]
    lines: list[str] = []
    plain = PlainProgress(two_trial_plan, lines.append, clock=lambda: now[0])
    a, b = {"cell": "trial_0000"}, {"cell": "trial_0001"}
    now[0] = 103.0
    plain.event("t1", "running", a)
    plain.event("t1", "running", a)  # a repeated status with nothing new: no line
    now[0] = 110.4
    plain.event("t1", "running", {**a, "stage": "detector", "reused": False, "seconds": 6.54})
    plain.event("t1", "running", {**a, "stage": "aggregator", "phase": "start"})
    plain.event("t1", "running", {**a, "stage": "aggregator", "reused": True})
    now[0] = 120.0
    plain.event("t1", "done", a)
    plain.event("t1", "done", a)
    now[0] = 125.0
    # its first news is a stage another trial trained (it waited on the lock): still "started" first
    plain.event("t2", "running", {**b, "stage": "mask_vae", "reused": False})
    plain.event("t2", "retrying", b)
    now[0] = 160.0
    plain.event("t2", "failed", b)
    assert lines == [
        "[     3s] trial_0000 (dose=0.0, seed_size=2) started",
        "[    10s] trial_0000: detector done (trained in 6.5s)",
        "[    10s] trial_0000: aggregator started",
        "[    10s] trial_0000: aggregator done (reused from the stage cache)",
        "[    20s] trial_0000 done; 1/2 done, 0 failed; elapsed 20s, ETA 20s",
        "[    25s] trial_0001 (dose=1.0, seed_size=2) started",
        "[    25s] trial_0001: mask_vae done (trained)",
        "[    25s] trial_0001: failed, retrying from its last finished stage",
        "[    60s] trial_0001: failed; 1/2 done, 1 failed; elapsed 60s, ETA 0s",
    ]


def test_progress_view_prints_lines_when_not_a_terminal(two_trial_plan: Plan) -> None:
    log = io.StringIO()
    with progress_view(Console(file=log, force_terminal=False, width=40), two_trial_plan) as on_event:
        on_event("t1", "running", {"cell": "trial_0000"})
    text = log.getvalue().splitlines()
    assert text[0] == "2 trial(s) to run; progress is printed as lines (stdout is not a terminal)"
    # one line, not wrapped at the console's 40 columns, and values printed as text, not markup
    assert text[1].endswith("] trial_0000 (dose=0.0, seed_size=2) started") and len(text) == 2


def test_progress_view_is_a_live_table_on_a_terminal(two_trial_plan: Plan) -> None:
    screen = io.StringIO()
    with progress_view(Console(file=screen, force_terminal=True, width=120), two_trial_plan) as on_event:
        on_event("t1", "running", {"cell": "trial_0000"})
        on_event("t1", "done", {"cell": "trial_0000"})
    out = screen.getvalue()
    assert "trials: 1/2 done, 0 running, 0 failed" in out and "trial(s) to run" not in out


# -- real runs --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_logged_to_a_file_shows_progress_while_it_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = start_run(write_tiny_study(tmp_path, out), tmp_path / "logs")
    log, err = tmp_path / "logs" / "run.out", tmp_path / "logs" / "run.err"
    try:
        wait_for(log, r"^\[ *\d+s\] trial_0000 \(dose=0\.0, seed_size=2\) started$", proc)
        assert proc.poll() is None  # the line is in the file while the run is still going
        wait_for(log, r"^\[ *\d+s\] trial_0000: detector done \(trained", proc)
        assert proc.wait(timeout=RUN_TIMEOUT_S) == 0, err.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert "1 trial(s) to run; progress is printed as lines (stdout is not a terminal)" in text
    assert re.search(r"^\[ *\d+s\] trial_0000 done; 1/1 done, 0 failed; elapsed \d+s, ETA 0s$", text, re.MULTILINE)
    errors = err.read_text()
    for line in KNOWN_NOISE:
        assert line not in errors + text, line
    assert OUR_RAY_LINE.format(home=Path.home()) in errors


@pytest.mark.slow
def test_ctrl_c_marks_the_study_killed_and_the_same_command_resumes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # a detector of more epochs: the trial is still running when Ctrl-C arrives
    study = write_tiny_study(tmp_path, out, stages={"preset": "tiny", "detector": {"epochs": 8}})
    proc = start_run(study, tmp_path / "logs")
    log, err = tmp_path / "logs" / "run.out", tmp_path / "logs" / "run.err"
    try:
        wait_for(log, r"trial_0000 \(dose=0\.0, seed_size=2\) started$", proc)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C: the whole foreground group
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    errors = err.read_text()
    assert code == 130, errors[-3000:]
    assert "interrupted; rerun the same command to resume" in errors
    assert "failed after their retries" not in errors and "Traceback" not in errors
    uri = f"sqlite:///{out / 'mlflow.db'}"
    parents, children = runs(uri)
    assert len(parents) == 1 and parents[0].info.status == "KILLED" and children == []
    again = subprocess.run(
        [sys.executable, "-m", "salient.platform.cli", "run", str(study)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=clean_env(),
    )
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    parents2, children2 = runs(uri)
    assert [p.info.run_id for p in parents2] == [parents[0].info.run_id]
    assert parents2[0].info.status == "FINISHED" and len(children2) == 1
