"""The stage cache (`salient.platform.stage_cache`): keys, atomic writes, reuse, locking, checkpoints.

A wrong key silently shares one trained model between two configurations; a non-atomic write
leaves a half-written entry that a later run reads as finished. Both change scientific answers
without an error, so each rule is pinned here: every input of a key changes it, a crash between
the two files of an entry leaves no entry, two processes asking for the same stage train it once.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from salient.platform import stage_cache
from salient.platform.stage_cache import StageCache, StageKey, stage_key

BASE_CONFIG: dict[str, Any] = {"epochs": 3, "optim": {"lr": 1e-3, "betas": [0.9, 0.999]}, "widths": [4, 8]}
BASE_DATA: dict[str, Any] = {"split": "a1b2c3", "cohort": "cafe01", "seed": 0}
UPSTREAM = (StageKey("mask_vae", "k1"), StageKey("diffusion", "k2"))


def _key(**changes: Any) -> StageKey:
    args: dict[str, Any] = {"stage": "detector", "config": BASE_CONFIG, "upstream": UPSTREAM, **BASE_DATA}
    args.update(changes)
    stage, config, upstream = args.pop("stage"), args.pop("config"), args.pop("upstream")
    return stage_key(stage, config, upstream, **args)


def test_a_key_is_stable_and_names_its_stage() -> None:
    a, b = _key(), _key()
    assert a == b and a.stage == "detector"
    assert str(a) == f"detector/{a.key}"
    assert a.key.isalnum() and len(a.key) >= 12  # a hash, usable as a folder name


@pytest.mark.parametrize(
    "change",
    [
        {"stage": "detector_v2"},
        {"config": {**BASE_CONFIG, "epochs": 4}},
        {"config": {**BASE_CONFIG, "optim": {"lr": 1e-2, "betas": [0.9, 0.999]}}},  # nested: lr 1e-3 vs 1e-2
        {"config": {**BASE_CONFIG, "optim": {"lr": 1e-3, "betas": [0.9, 0.99]}}},  # inside a nested list
        {"config": {**BASE_CONFIG, "widths": [8, 4]}},  # list order matters
        {"config": {**BASE_CONFIG, "extra": None}},  # a new key, even with a null value
        {"split": "a1b2c4"},
        {"cohort": "cafe02"},
        {"seed": 1},
        {"dose": 2.0},  # a data input that was not there
        {"upstream": (StageKey("mask_vae", "k1"), StageKey("diffusion", "k3"))},
        {"upstream": (StageKey("mask_vae", "k1"),)},
        {"upstream": (StageKey("mask_vae", "k1"), StageKey("ucmt", "k2"))},  # same hash, other stage
    ],
    ids=lambda c: "-".join(f"{k}" for k in c) + ":" + repr(next(iter(c.values())))[:40],
)
def test_every_input_changes_the_key(change: dict[str, Any]) -> None:
    assert _key(**change) != _key()


def test_key_order_in_dicts_does_not_change_the_key() -> None:
    shuffled = {"widths": [4, 8], "optim": {"betas": [0.9, 0.999], "lr": 1e-3}, "epochs": 3}
    assert list(shuffled) != list(BASE_CONFIG)
    assert _key(config=shuffled) == _key()
    # data keyword arguments in another order
    assert stage_key("detector", BASE_CONFIG, UPSTREAM, seed=0, cohort="cafe01", split="a1b2c3") == _key()


def test_the_code_version_is_part_of_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    before = _key()
    monkeypatch.setattr(stage_cache, "CODE_VERSION", "0123456789ab")
    assert _key() != before


def test_values_json_cannot_hold_are_keyed_by_their_repr() -> None:
    # paths, mixed key types: accepted, and still told apart
    a = stage_key("detector", {"weights": Path("a.pt"), 1: "one", "2": "two"})
    assert a == stage_key("detector", {"2": "two", 1: "one", "weights": Path("a.pt")})
    assert a != stage_key("detector", {"weights": Path("b.pt"), 1: "one", "2": "two"})
    assert stage_key("s", {}, cohort=Path("/data/x")) != stage_key("s", {}, cohort=Path("/data/y"))


def test_code_version_changes_with_any_source_file_of_the_versioned_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert stage_cache.code_version() == stage_cache.CODE_VERSION  # the real packages, recomputed
    pkg = tmp_path / "fake_versioned_pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("A = 1\n")
    (pkg / "sub" / "b.py").write_text("B = 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(stage_cache, "VERSIONED_PACKAGES", ("fake_versioned_pkg",))
    base = stage_cache.code_version()
    assert base != stage_cache.CODE_VERSION and base == stage_cache.code_version()
    (pkg / "sub" / "b.py").write_text("B = 3\n")  # an edit in a subpackage
    edited = stage_cache.code_version()
    (pkg / "sub" / "b.py").write_text("B = 2\n")
    assert edited != base and stage_cache.code_version() == base
    (pkg / "notes.txt").write_text("not code")
    assert stage_cache.code_version() == base  # only Python sources count
    (pkg / "a.py").rename(pkg / "c.py")  # the same code under another module name
    renamed = stage_cache.code_version()
    (pkg / "c.py").rename(pkg / "a.py")
    (pkg / "new.py").write_text("")  # a new module, even an empty one
    added = stage_cache.code_version()
    assert len({base, edited, renamed, added}) == 4


def _output() -> dict[str, Any]:
    return {"weights": torch.arange(6.0).reshape(2, 3), "n": 3, "names": ["a", "b"], "loss": 0.25}


def _assert_is_output(value: Any) -> None:
    want = _output()
    assert torch.equal(value["weights"], want["weights"])
    assert {k: v for k, v in value.items() if k != "weights"} == {k: v for k, v in want.items() if k != "weights"}


class _Counter:
    """A compute function that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> tuple[dict[str, Any], dict[str, Any]]:
        self.calls += 1
        return _output(), {"seconds": 1.5}


def test_get_or_compute_computes_once_then_reuses(tmp_path: Path) -> None:
    key = _key()
    compute = _Counter()
    cache = StageCache(tmp_path)
    assert not cache.has(key)
    out, reused = cache.get_or_compute(key, compute)
    assert not reused and compute.calls == 1
    _assert_is_output(out)
    assert cache.has(key)
    out, reused = cache.get_or_compute(key, compute)
    assert reused and compute.calls == 1
    _assert_is_output(out)
    # a new process (a fresh cache object on the same folder) reuses it too
    out, reused = StageCache(tmp_path).get_or_compute(key, compute)
    assert reused and compute.calls == 1
    _assert_is_output(out)
    meta = cache.meta(key)
    assert meta["seconds"] == 1.5 and meta["stage"] == "detector" and meta["key"] == key.key
    # another key is another entry
    other = _key(config={**BASE_CONFIG, "optim": {"lr": 1e-2, "betas": [0.9, 0.999]}})
    _, reused = cache.get_or_compute(other, compute)
    assert not reused and compute.calls == 2


def test_compute_seconds_are_recorded_unless_the_stage_measured_them(tmp_path: Path) -> None:
    cache = StageCache(tmp_path)
    assert cache.lock_wait_s == 0.0
    before = time.perf_counter()
    cache.get_or_compute(_key(), _Counter())
    elapsed = time.perf_counter() - before
    assert 0.0 <= cache.meta(_key())["compute_seconds"] <= elapsed
    assert 0.0 <= cache.lock_wait_s <= elapsed  # nobody else held the lock
    cache.get_or_compute(_key(seed=9), lambda: (_output(), {"compute_seconds": 7.5}))
    assert cache.meta(_key(seed=9))["compute_seconds"] == 7.5


class _CrashError(RuntimeError):
    """Stands for the process dying at this point."""


def _crash_in_torch_save(monkeypatch: pytest.MonkeyPatch) -> None:
    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        Path(f).write_bytes(b"half an output")  # killed while writing output.pt
        raise _CrashError("killed while writing output.pt")

    monkeypatch.setattr(torch, "save", save)


def _crash_in_meta_json(monkeypatch: pytest.MonkeyPatch) -> None:
    real = Path.write_text

    def write_text(self: Path, data: str, *args: Any, **kwargs: Any) -> int:
        if self.name == "meta.json":
            real(self, data[: len(data) // 2], *args, **kwargs)  # killed while writing meta.json
            raise _CrashError("killed while writing meta.json")
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)


def _crash_in_rename(monkeypatch: pytest.MonkeyPatch) -> None:
    def replace(src: Any, dst: Any) -> None:
        raise _CrashError("killed before the rename")

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("crash", [_crash_in_torch_save, _crash_in_meta_json, _crash_in_rename])
def test_a_crash_while_storing_leaves_no_entry_and_the_next_run_recomputes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash: Callable[[pytest.MonkeyPatch], None]
) -> None:
    key = _key()
    compute = _Counter()
    # Whatever a crash leaves stays inside the cache folder: nothing in the system temp folder
    # (an entry staged there could not be renamed atomically into a cache on another disk) and
    # nothing in the working folder.
    outside = {"tmp": tmp_path / "system_tmp", "cwd": tmp_path / "cwd"}
    for folder in outside.values():
        folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(outside["tmp"]))
    monkeypatch.chdir(outside["cwd"])
    root = tmp_path / "cache"
    with monkeypatch.context() as patch:
        crash(patch)
        with pytest.raises(_CrashError):
            StageCache(root).get_or_compute(key, compute)
    assert compute.calls == 1
    cache = StageCache(root)
    assert not cache.has(key), "a half-written entry is visible as finished"
    assert not cache.entry(key).exists(), "a half-written entry sits under the final name"
    out, reused = cache.get_or_compute(key, compute)
    assert not reused and compute.calls == 2
    _assert_is_output(out)
    _assert_is_output(StageCache(root).load(key))
    cache.save_checkpoint(_key(seed=5), {"step": 1})
    assert {name: sorted(p.name for p in folder.iterdir()) for name, folder in outside.items()} == {
        "tmp": [],
        "cwd": [],
    }


def test_a_leftover_unfinished_entry_is_replaced(tmp_path: Path) -> None:
    key = _key()
    cache = StageCache(tmp_path)
    leftover = cache.entry(key)
    leftover.mkdir(parents=True)
    (leftover / "output.pt").write_bytes(b"garbage from an old crash")
    (leftover / "stray.txt").write_text("x")
    assert not cache.has(key)
    compute = _Counter()
    _, reused = cache.get_or_compute(key, compute)
    assert not reused and compute.calls == 1
    _assert_is_output(cache.load(key))
    assert not (leftover / "stray.txt").exists()  # replaced, not merged


def _contend(root: str, name: str, events: dict[str, Any], calls: Any, results: Any) -> None:
    """One process asking for the shared stage (module level: spawned processes import it)."""

    class SpyCache(StageCache):
        def has(self, key: StageKey) -> bool:
            found = super().has(key)
            if not found:
                events[name].set()  # this process found no entry and goes on to the lock
            return found

    def compute() -> tuple[dict[str, Any], dict[str, Any]]:
        with calls.get_lock():
            calls.value += 1
        # Hold the stage until the other process has also found no entry: it must now wait on
        # the lock and then reuse this output instead of computing its own.
        for event in events.values():
            if not event.wait(timeout=60):
                raise TimeoutError("the other process never asked for the stage")
        return _output(), {"by": name}

    out, reused = SpyCache(root).get_or_compute(_key(), compute)
    results.put((name, reused, out["weights"].tolist(), out["n"]))


def test_two_processes_asking_for_one_stage_compute_it_once(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")  # separate interpreters, like two Ray workers
    events = {name: ctx.Event() for name in ("first", "second")}
    calls = ctx.Value("i", 0)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_contend, args=(str(tmp_path), name, events, calls, results)) for name in ("first", "second")
    ]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert calls.value == 1
    assert sorted(reused for _, reused, _, _ in got) == [False, True]
    assert all(w == _output()["weights"].tolist() and n == 3 for _, _, w, n in got)
    assert StageCache(tmp_path).meta(_key())["by"] in ("first", "second")
    never = _Counter()
    _, reused = StageCache(tmp_path).get_or_compute(_key(), never)  # a third asker reuses it too
    assert reused and never.calls == 0


def test_checkpoints_round_trip_and_are_removed_by_the_final_store(tmp_path: Path) -> None:
    key = _key()
    cache = StageCache(tmp_path)
    assert cache.load_checkpoint(key) is None
    state: dict[str, Any] = {
        "step": 40,
        "model": {"w": torch.ones(3)},
        "losses": [0.5, 0.25],
        "rng": torch.get_rng_state(),
    }
    cache.save_checkpoint(key, state)
    assert not cache.has(key)  # a checkpoint is not a finished entry
    back = StageCache(tmp_path).load_checkpoint(key)
    assert back is not None
    assert back["step"] == 40 and back["losses"] == [0.5, 0.25]
    assert torch.equal(back["model"]["w"], torch.ones(3)) and torch.equal(back["rng"], state["rng"])
    cache.save_checkpoint(key, {**state, "step": 80})  # a later checkpoint replaces it
    fresh = StageCache(tmp_path / "not" / "made" / "yet")
    fresh.save_checkpoint(key, {"step": 1})  # a cache folder that does not exist yet is made
    assert fresh.load_checkpoint(key) == {"step": 1}
    assert cache.load_checkpoint(key)["step"] == 80

    def compute() -> tuple[dict[str, Any], dict[str, Any]]:
        resumed = cache.load_checkpoint(key)  # a retried stage continues from here
        assert resumed is not None and resumed["step"] == 80
        return _output(), {}

    cache.get_or_compute(key, compute)
    assert cache.load_checkpoint(key) is None
    assert not cache.checkpoint_path(key).exists()


def test_a_crash_while_checkpointing_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system_tmp = tmp_path / "system_tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    key = _key()
    cache = StageCache(tmp_path / "cache")
    cache.save_checkpoint(key, {"step": 40})
    with monkeypatch.context() as patch:
        _crash_in_torch_save(patch)
        with pytest.raises(_CrashError):
            cache.save_checkpoint(key, {"step": 80})
    assert cache.load_checkpoint(key) == {"step": 40}  # the retry resumes from the last whole one
    assert not list(system_tmp.iterdir())  # the half-written file stayed next to the cache


def _pwn(path: str) -> str:
    Path(path).write_text("code ran while loading")
    return "pwned"


class _Malicious:
    """Unpickling this runs ``_pwn``: what a tampered cache file could do to a plain ``pickle.load``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _pwn, (self.path,)


def test_loads_refuse_pickled_objects_that_are_not_plain_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # torch >= 2.6 loads weights-only by default, but this variable (set by tools that load old
    # checkpoints) turns that default off: only an explicit weights_only=True keeps the cache safe.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    key = _key()
    marker = tmp_path / "pwned"
    cache = StageCache(tmp_path / "cache")
    cache.get_or_compute(key, lambda: ({"payload": _Malicious(str(marker))}, {}))
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):
        StageCache(tmp_path / "cache").load(key)
    assert not marker.exists(), "loading a cache entry ran pickled code"
    cache.save_checkpoint(key, {"payload": _Malicious(str(marker))})
    with pytest.raises(pickle.UnpicklingError):
        cache.load_checkpoint(key)
    assert not marker.exists(), "loading a checkpoint ran pickled code"
    # the same file is dangerous to an unsafe loader: the refusal above is what protects us
    with pytest.warns(UserWarning, match="TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"):
        torch.load(cache.checkpoint_path(key))
    assert marker.exists()
