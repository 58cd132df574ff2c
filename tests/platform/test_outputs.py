"""Output folders (issue #15 items 4 and 8): only the platform's own, never a system folder, and one
study run at a time, held by a lock that says who holds it.

The unit tests are milliseconds; the two-process test runs two real ``platform run`` started at
the same instant on a fresh folder (slow: one tiny study, tens of seconds).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from salient.platform.cli import main
from salient.platform.outputs import MARKER, output_dir_owner_problem, output_dir_problem
from salient.platform.run_lock import (
    HOLDER_FILE,
    LOCK_FILE,
    Holder,
    OutputDirError,
    OutputDirInUseError,
    hold_output_dir,
    read_holder,
)

from tests.platform.tiny_run import RUN_TIMEOUT_S, runs, start_run, write_tiny_study

HOST = socket.gethostname()


def _listing(root: Path) -> list[tuple[str, int, int]]:
    """Every entry under ``root`` with its size and modification time (a write changes one)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = (Path(dirpath) / name).lstat()
            out.append((str((Path(dirpath) / name).relative_to(root)), st.st_size, st.st_mtime_ns))
    return sorted(out)


# -- which folders are the platform's ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", "output_dir / is a system folder"),
        ("/etc", "output_dir /etc is a system folder"),
        ("/etc/salient_runs", "output_dir /etc/salient_runs is inside /etc, a system folder"),
        ("/usr/local/share/runs", "output_dir /usr/local/share/runs is inside /usr, a system folder"),
        ("/proc/salient", "output_dir /proc/salient is inside /proc, a system folder"),
        ("/sys/runs", "output_dir /sys/runs is inside /sys, a system folder"),
        ("/dev/shm/runs", "output_dir /dev/shm/runs is inside /dev, a system folder"),
        ("/boot", "output_dir /boot is a system folder"),
        ("/tmp", "output_dir /tmp is a system folder"),
        ("/home", "output_dir /home is a system folder"),
        ("/var", "output_dir /var is a system folder"),
    ],
)
def test_system_folders_are_refused(path: str, expected: str) -> None:
    problem = output_dir_owner_problem(Path(path))
    assert problem is not None and problem.startswith(expected), problem


def test_the_home_folder_itself_is_refused_but_a_folder_in_it_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "alice"
    (home / "notes.txt").parent.mkdir()
    monkeypatch.setenv("HOME", str(home))
    assert output_dir_owner_problem(home) == (
        f"output_dir {home} is a system folder; choose a folder of your own (e.g. ./salient_runs)"
    )
    assert output_dir_owner_problem(home / "salient_runs") is None


def test_symlinks_are_resolved_before_the_check(tmp_path: Path) -> None:
    (tmp_path / "to_etc").symlink_to("/etc")
    assert output_dir_owner_problem(tmp_path / "to_etc") == (
        f"output_dir {tmp_path / 'to_etc'} (resolves to /etc) is a system folder; choose a folder of your own "
        "(e.g. ./salient_runs)"
    )
    assert output_dir_owner_problem(tmp_path / "to_etc" / "runs") == (
        f"output_dir {tmp_path / 'to_etc' / 'runs'} (resolves to /etc/runs) is inside /etc, a system folder; "
        "choose a folder of your own (e.g. ./salient_runs)"
    )
    # a link to a folder of the user's own is judged by what it points at
    (tmp_path / "mine").mkdir()
    (tmp_path / "to_mine").symlink_to(tmp_path / "mine")
    assert output_dir_owner_problem(tmp_path / "to_mine") is None
    (tmp_path / "mine" / "thesis.tex").write_text("mine")
    problem = output_dir_owner_problem(tmp_path / "to_mine")
    assert problem is not None and "already holds files the platform did not write (thesis.tex, ...)" in problem


def test_new_empty_and_marked_folders_are_accepted(tmp_path: Path) -> None:
    assert output_dir_owner_problem(tmp_path / "new" / "deeper") is None
    (tmp_path / "empty").mkdir()
    assert output_dir_owner_problem(tmp_path / "empty") is None
    marked = tmp_path / "marked"
    marked.mkdir()
    (marked / "results.csv").write_text("trial\n")
    (marked / MARKER).write_text("{}")
    assert output_dir_owner_problem(marked) is None
    # only the platform's bookkeeping (a lock and its record of a run just starting): still empty
    racing = tmp_path / "racing"
    racing.mkdir()
    for name in (LOCK_FILE, HOLDER_FILE, ".write-test-abc123"):
        (racing / name).write_text("")
    assert output_dir_owner_problem(racing) is None


def test_unrelated_files_a_file_and_a_fake_marker_are_refused(tmp_path: Path) -> None:
    user = tmp_path / "user"
    user.mkdir()
    for name in ("results.csv", "a.txt", "b.txt", "c.txt", "d.txt"):
        (user / name).write_text("mine")
    assert output_dir_owner_problem(user) == (
        f"output_dir {user} already holds files the platform did not write (a.txt, b.txt, c.txt, d.txt, ...) and has "
        f"no {MARKER}; use a new or empty folder, or one an earlier `platform run` created"
    )
    (tmp_path / "a_file").write_text("x")
    assert (
        output_dir_owner_problem(tmp_path / "a_file") == f"output_dir {tmp_path / 'a_file'} exists and is not a folder"
    )
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / MARKER).mkdir()
    assert output_dir_owner_problem(fake) == (
        f"output_dir {fake}: {MARKER} is not a regular file; the folder is not the platform's"
    )


def test_output_dir_problem_marks_the_folder_with_the_study(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    assert output_dir_problem(out, "dose_demo") is None
    record = json.loads((out / MARKER).read_text())
    assert record["salient_output_dir"] == 1 and record["created_by_study"] == "dose_demo"
    assert record["host"] == HOST
    before = (out / MARKER).read_text()
    assert output_dir_problem(out, "another_study") is None  # a marked folder keeps its first marker
    assert (out / MARKER).read_text() == before
    assert sorted(p.name for p in out.iterdir()) == [MARKER]  # the write probe is gone


def test_run_into_an_unrelated_folder_touches_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    user = tmp_path / "my_analysis"
    user.mkdir()
    (user / "results.csv").write_text("subject,score\nA,1\n")
    before = _listing(user)
    study = write_tiny_study(tmp_path / "studies", user)
    assert main(["run", str(study)]) == 2
    err = capsys.readouterr().err
    assert f"output_dir {user} already holds files the platform did not write (results.csv, ...)" in err
    assert _listing(user) == before
    assert (user / "results.csv").read_text() == "subject,score\nA,1\n"


def test_validate_reports_what_run_would_refuse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "link").symlink_to("/etc")
    study = write_tiny_study(tmp_path / "studies", tmp_path / "link")
    before = _listing(Path("/etc"))
    assert main(["validate", str(study)]) == 2
    assert f"{study}: output_dir {tmp_path / 'link'} (resolves to /etc) is a system folder" in capsys.readouterr().err
    assert _listing(Path("/etc")) == before
    # `run` refuses the same way (shown with /proc: a regression there cannot write anything)
    (tmp_path / "link_proc").symlink_to("/proc")
    study = write_tiny_study(tmp_path / "studies", tmp_path / "link_proc" / "runs")
    assert main(["run", str(study)]) == 2
    assert (
        f"output_dir {tmp_path / 'link_proc' / 'runs'} (resolves to /proc/runs) is inside /proc, a system folder"
        in (capsys.readouterr().err)
    )


# -- the lock ---------------------------------------------------------------------------------------


def test_a_second_holder_is_told_who_holds_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with hold_output_dir(out, "s1", command="platform run s1.yaml") as me:
        assert me.pid == os.getpid() and me.host == HOST and me.command == "platform run s1.yaml"
        assert read_holder(out) == me
        with pytest.raises(OutputDirInUseError) as info, hold_output_dir(out, "s1", command="platform run s1.yaml"):
            pass
        assert str(info.value) == (
            f"output folder {out} is in use by pid {os.getpid()} on host {HOST} (user {me.user}) since {me.started}: "
            "platform run s1.yaml; wait for it or use another output_dir"
        )
        assert read_holder(out) == me  # the refused attempt left the holder's record alone
    assert not (out / HOLDER_FILE).exists()
    with hold_output_dir(out, "s1"):  # released: the next run takes it
        pass


def test_the_lock_is_released_on_ctrl_c_and_errors(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for exc in (KeyboardInterrupt(), RuntimeError("boom")):
        with pytest.raises(type(exc)), hold_output_dir(out, "s"):
            raise exc
        assert not (out / HOLDER_FILE).exists()
    with hold_output_dir(out, "s"):
        pass


def test_the_lock_is_held_across_processes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = (
        "import sys\nfrom pathlib import Path\n"
        "from salient.platform.run_lock import OutputDirInUseError, hold_output_dir\n"
        "try:\n    with hold_output_dir(Path(sys.argv[1]), 's'):\n        print('acquired')\n"
        "except OutputDirInUseError as e:\n    print(e)\n"
    )
    with hold_output_dir(out, "s", command="holder-cmd") as me:
        other = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=60)
    assert other.stdout.strip() == (
        f"output folder {out} is in use by pid {me.pid} on host {HOST} (user {me.user}) since {me.started}: "
        "holder-cmd; wait for it or use another output_dir"
    ), other.stderr
    other = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=60)
    assert other.stdout.strip() == "acquired"


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_stale_record_on_this_host_is_taken_over_with_a_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER).write_text("{}")
    dead = Holder(HOST, _dead_pid(), "bob", "2026-01-01 10:00:00 UTC", "platform run old.yaml")
    (out / HOLDER_FILE).write_text(json.dumps(dead.__dict__))
    with caplog.at_level(logging.WARNING, logger="salient.platform.run_lock"), hold_output_dir(out, "s") as me:
        assert read_holder(out) == me
    assert (
        f"output folder {out}: taking over the lock of pid {dead.pid} on host {HOST} (user bob) since "
        "2026-01-01 10:00:00 UTC: platform run old.yaml; that process is no longer running" in caplog.text
    )
    assert not (out / HOLDER_FILE).exists()


def test_a_record_from_another_host_is_not_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER).write_text("{}")
    remote = Holder("node-17.cluster", 4242, "carol", "2026-01-01 10:00:00 UTC", "platform run big.yaml")
    (out / HOLDER_FILE).write_text(json.dumps(remote.__dict__))
    with pytest.raises(OutputDirInUseError) as info, hold_output_dir(out, "s"):
        pass
    assert str(info.value) == (
        f"output folder {out} was taken by pid 4242 on host node-17.cluster (user carol) since 2026-01-01 10:00:00 "
        f"UTC: platform run big.yaml; this host cannot tell whether that run is still going. If it is over, delete "
        f"{out / HOLDER_FILE} and rerun; otherwise wait for it or use another output_dir"
    )
    assert read_holder(out) == remote  # untouched: its owner may still be running


def test_hold_refuses_a_folder_that_is_not_the_platforms_before_writing(tmp_path: Path) -> None:
    user = tmp_path / "user"
    user.mkdir()
    (user / "data.csv").write_text("x")
    with (
        pytest.raises(OutputDirError, match="already holds files the platform did not write"),
        hold_output_dir(user, "s"),
    ):
        pass
    assert sorted(p.name for p in user.iterdir()) == ["data.csv"]


# -- two real runs started at the same instant ------------------------------------------------------


@pytest.mark.slow
def test_two_runs_of_one_study_started_together(tmp_path: Path) -> None:
    """One runs the study; the other exits 2 at once, naming the holder's pid and host. The study
    run is logged once, with one trial run (before the lock: exit 1 from MLflow's schema race on a
    fresh folder, or a trial logged twice)."""
    out = tmp_path / "out"
    study = write_tiny_study(tmp_path, out)
    procs = dict(zip("ab", [start_run(study, tmp_path / "logs", name) for name in "ab"], strict=True))
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while all(p.poll() is None for p in procs.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        first = [n for n, p in procs.items() if p.poll() is not None]
        # the refused run ends while the other is still running (it does not wait for the lock)
        assert len(first) == 1, f"both or neither ended first: {first}"
        loser, winner = first[0], "b" if first[0] == "a" else "a"
        codes = {winner: procs[winner].wait(timeout=max(1.0, deadline - time.monotonic())), loser: procs[loser].poll()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, 9)
    logs = {
        n: (tmp_path / "logs" / f"{n}.err").read_text() + (tmp_path / "logs" / f"{n}.out").read_text() for n in "ab"
    }
    assert codes == {winner: 0, loser: 2}, (codes, logs)
    holder_pid = procs[winner].pid
    assert f"output folder {out} is in use by pid {holder_pid} on host {HOST}" in logs[loser], logs[loser]
    assert "wait for it or use another output_dir" in logs[loser]
    assert "Traceback" not in logs[loser] and "duplicate column" not in logs[winner]
    parents, children = runs(f"sqlite:///{out / 'mlflow.db'}")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    assert not (out / HOLDER_FILE).exists()  # released at the end
