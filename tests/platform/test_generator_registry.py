"""Generators in the MLflow Model Registry (#17 item 3), against a real embedded store (SQLite) in tmp_path.

Registered once per module (the tiny generator of tests/platform/tiny_generator.py), then found
by version, alias and ``latest``; ``synth`` from the registry must give the same voxels as
``synth`` from the pool folder with the same seed; files changed in the artifact store after
registration are refused, and a planted pickle is never executed.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse
from urllib.request import url2pathname

import mlflow
import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from salient.platform.cli import main
from salient.platform.cohort.prepare import load_cohort
from salient.platform.errors import PlatformError
from salient.platform.generator_registry import (
    RegisteredGenerator,
    generator_for_cohort,
    load_registered_generator,
    parse_model_uri,
    register_generator,
)
from salient.platform.stage_cache import StageCache, StageKey
from salient.platform.study.schema import TrackingSpec
from salient.platform.tracking import Tracker

from tests.platform.tiny_generator import tiny_generator

pytestmark = pytest.mark.slow

NAME = "tiny-gen"
STATE_KEYS = {"mask_vae": "ema", "diffusion": "ema", "ucmt": "teacher"}


def _token(subject: str) -> str:
    return hashlib.sha256(subject.encode()).hexdigest()[:16]


def _record(pool: Path) -> dict[str, Any]:
    return cast(dict, json.loads((pool / "meta.json").read_text())["generator"])


def _cached_state(pool: Path, model: str) -> dict[str, torch.Tensor]:
    """The model's weights straight from the stage cache (what the pool stage used)."""
    stage, key = _record(pool)[model].split("/")
    return cast(dict, StageCache(pool.parent.parent).load(StageKey(stage, key))[STATE_KEYS[model]])


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_generator(tmp_path_factory)


@pytest.fixture(scope="module")
def store(pool: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """An embedded store with a trial run and the generator registered from it as NAME version 1
    (alias ``champion``) through the study's Tracker, as the pipeline does."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    tracker = Tracker(uri, "tiny", artifact_location=(root / "mlartifacts").as_uri())
    assert tracker.experiment_id is not None
    run_id = tracker.client.create_run(tracker.experiment_id, run_name="trial-dose-1").info.run_id
    assert register_generator(tracker, run_id, pool, NAME, alias="champion") == 1
    return uri, run_id


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SALIENT_CACHE_DIR", str(tmp_path / "cache"))  # never the user's ~/.cache


def test_registration_is_one_logged_model_linked_to_its_run(store: tuple[str, str], pool: Path) -> None:
    uri, run_id = store
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mv = client.get_model_version(NAME, "1")
    assert mv.run_id == run_id and client.get_model_version_by_alias(NAME, "champion").version == mv.version
    logged = client.get_logged_model(mv.tags["salient.logged_model_id"])
    assert logged.source_run_id == run_id and logged.model_type == "salient-generator"
    # Registering the same generator again (a resumed study) returns the same version.
    assert register_generator(client, run_id, pool, NAME) == 1
    assert [v.version for v in client.search_model_versions(f"name='{NAME}'")] == [mv.version]
    # The stored files: digests in the registry match the artifact bytes (checked independently here).
    folder = Path(url2pathname(urlparse(client.get_model_version_download_uri(NAME, "1")).path))
    assert sorted(p.name for p in folder.iterdir()) == [
        "MLmodel",
        "diffusion.pt",
        "generator.json",
        "mask_vae.pt",
        "ucmt.pt",
    ]
    for file in ("generator.json", "mask_vae.pt", "diffusion.pt", "ucmt.pt"):
        assert mv.tags[f"salient.sha256.{file}"] == hashlib.sha256((folder / file).read_bytes()).hexdigest()
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    assert list(mlmodel["flavors"]) == ["salient_generator"]  # no python_function: nothing to execute
    assert "mask" in mlmodel["signature"]["inputs"] and "image" in mlmodel["signature"]["outputs"]
    with pytest.raises(MlflowException):  # MLflow itself has no way to run it
        mlflow.pyfunc.load_model(str(folder))
    # Subject ids hashed, cohort spec kept (a phantom: no path).
    stored = json.loads((folder / "generator.json").read_text())
    rec = _record(pool)
    assert stored["subject_ids"] == "sha256"
    assert stored["generator"]["hosts"] == [_token(s) for s in rec["hosts"]]
    assert stored["generator"]["trained_on"] == [_token(s) for s in rec["trained_on"]]
    assert "phantom_" not in (folder / "generator.json").read_text()


@pytest.mark.parametrize("ref", [f"models:/{NAME}/1", f"models:/{NAME}@champion", f"models:/{NAME}/latest"])
def test_resolved_by_version_alias_and_latest_with_the_trained_weights(
    ref: str, store: tuple[str, str], pool: Path
) -> None:
    uri, _ = store
    source = load_registered_generator(ref, uri)
    assert isinstance(source, RegisteredGenerator) and source.uri == f"models:/{NAME}/1"
    for model, key in STATE_KEYS.items():
        loaded, cached = source.load(model)[key], _cached_state(pool, model)
        assert loaded.keys() == cached.keys()
        assert all(torch.equal(loaded[k], cached[k]) for k in cached), model
    rec = _record(pool)
    assert source.record.extents == rec["extents"] and source.record.stages == rec["stages"]


def test_synth_from_the_registry_gives_the_pool_folders_voxels(
    store: tuple[str, str], pool: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri, _ = store
    from_pool, from_registry = tmp_path / "pool", tmp_path / "registry"
    assert main(["synth", "--generator", str(pool), "--masks", "2", "--seed", "3", str(from_pool)]) == 0
    argv = ["synth", "--generator", f"models:/{NAME}@champion", "--masks", "2", "--seed", "3"]
    assert main([*argv, "--tracking-uri", uri, str(from_registry)]) == 0, capsys.readouterr().err
    for name in ("images/synth_0000.nii.gz", "images/synth_0001.nii.gz", "masks/synth_0001.nii.gz"):
        a = np.asarray(cast(nib.Nifti1Image, nib.load(str(from_pool / name))).dataobj)
        b = np.asarray(cast(nib.Nifti1Image, nib.load(str(from_registry / name))).dataobj)
        assert np.array_equal(a, b), name
    assert (from_pool / "labels.csv").read_text() == (from_registry / "labels.csv").read_text()
    provenance = json.loads((from_registry / "synth.json").read_text())
    assert provenance["generator"] == f"models:/{NAME}/1"
    # The host cohort was prepared in the registry work folder, readable by the user only.
    work = tmp_path / "cache" / "registry-hosts"
    assert (work / "cohorts").is_dir() and (work.stat().st_mode & 0o077) == 0


def test_training_subjects_are_found_by_hash_in_the_cohort(store: tuple[str, str], pool: Path) -> None:
    """tune-guidance holds out positives the generator did not train on: with hashed ids that
    only works once the hashes are matched to this cohort's subjects."""
    uri, _ = store
    source = load_registered_generator(f"models:/{NAME}/1", uri)
    rec = _record(pool)
    assert source.record.trained_on == [_token(s) for s in rec["trained_on"]]
    cohort = load_cohort(source.cohort_spec(), pool.parent.parent.parent)
    mapped = generator_for_cohort(source, cohort.subjects)
    assert mapped.record.trained_on == rec["trained_on"] and mapped.record.hosts == rec["hosts"]
    # A cohort without those subjects leaves the hashes (found missing, never another subject).
    assert generator_for_cohort(source, ["someone_else"]).record.trained_on == source.record.trained_on


class _Payload:
    """What a hostile weights file would run on load: it creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (str(self.marker), "w")


def test_tampered_weights_are_refused_and_never_run(
    store: tuple[str, str], pool: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri, run_id = store
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = register_generator(client, run_id, pool, "tamper-gen")
    folder = Path(url2pathname(urlparse(client.get_model_version_download_uri("tamper-gen", str(version))).path))
    marker = tmp_path / "payload-ran"
    torch.save({"weight": _Payload(marker)}, folder / "mask_vae.pt")  # pickles a call to open()
    planted = (folder / "mask_vae.pt").read_bytes()
    assert b"open" in planted  # the call really is in the file
    # 1. Changed in the artifact store only: its sha256 no longer matches the registry's record.
    with pytest.raises(PlatformError, match=r"refused: mask_vae\.pt has sha256"):
        load_registered_generator(f"models:/tamper-gen/{version}", uri)
    # 2. The registry's digest changed too: the weights-only loader still refuses the pickle.
    client.set_model_version_tag("tamper-gen", str(version), "salient.sha256.mask_vae.pt", _sha(planted))
    with pytest.raises(PlatformError, match=r"refused: mask_vae\.pt is not a weights-only file"):
        load_registered_generator(f"models:/tamper-gen/{version}", uri)
    (folder / "mask_vae.pt").write_bytes(pickle.dumps({"weight": _Payload(marker)}))  # a bare pickle, too
    client.set_model_version_tag(
        "tamper-gen", str(version), "salient.sha256.mask_vae.pt", _sha((folder / "mask_vae.pt").read_bytes())
    )
    out = tmp_path / "out"
    argv = ["synth", "--generator", f"models:/tamper-gen/{version}", "--masks", "1", "--tracking-uri", uri, str(out)]
    assert main(argv) == 2
    assert "not a weights-only file" in capsys.readouterr().err
    assert not marker.exists() and not out.exists()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_bad_references_are_named(store: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri, run_id = store
    assert parse_model_uri(f"models:/{NAME}/12").version == 12
    assert parse_model_uri(f"models:/{NAME}@prod").alias == "prod"
    assert parse_model_uri(f"models:/{NAME}/latest").latest
    for ref, message in (
        (f"models:/{NAME}/Production", "not a version number (stages are not supported"),
        ("models:/bad name/1", "model name must be"),
        (f"models:/{NAME}", "give models:/NAME/VERSION"),
        (f"models:/{NAME}/0", "not a version number"),
    ):
        with pytest.raises(PlatformError, match=message.replace("(", r"\(")):
            parse_model_uri(ref)
    with pytest.raises(PlatformError, match=r"models:/tiny-gen/9: not found at"):
        load_registered_generator(f"models:/{NAME}/9", uri)
    with pytest.raises(PlatformError, match=r"models:/nope@champion: not found at"):
        load_registered_generator("models:/nope@champion", uri)
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        with pytest.raises(PlatformError, match="give --tracking-uri"):
            load_registered_generator(f"models:/{NAME}/1", None)
    # A registered model this platform did not write.
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("foreign")
    client.create_model_version("foreign", source=(tmp_path).as_uri(), run_id=run_id)
    with pytest.raises(PlatformError, match="not a SALIENT generator"):
        load_registered_generator("models:/foreign/1", uri)
    # Through the CLI: exit 2, the message names the reference, nothing written.
    out = tmp_path / "out"
    assert main(["synth", "--generator", "models:/nope/1", "--masks", "1", "--tracking-uri", uri, str(out)]) == 2
    assert "models:/nope/1: not found" in capsys.readouterr().err and not out.exists()
    assert main(["synth", "--generator", "nope", "--masks", "1", str(out)]) == 2
    assert "nor a registered model (models:/NAME/VERSION" in capsys.readouterr().err


def test_register_generator_command(
    pool: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = ["register-generator", "--generator", str(pool), "--name", "cli-gen", "--tracking-uri", uri]
    assert main([*argv, "--alias", "prod", "--log-subject-ids"]) == 0, capsys.readouterr().err
    assert "models:/cli-gen/1" in capsys.readouterr().out
    source = load_registered_generator("models:/cli-gen@prod", uri)
    assert source.record.hosts == _record(pool)["hosts"] and not source.hashed_ids  # raw ids, as asked
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    logged = client.get_logged_model(client.get_model_version("cli-gen", "1").tags["salient.logged_model_id"])
    assert client.get_experiment(logged.experiment_id).name == "salient-generators"  # no trial run named
    assert main(["register-generator", "--generator", str(pool), "--name", "bad name", "--tracking-uri", uri]) == 2
    assert "name must be" in capsys.readouterr().err
    assert main(["register-generator", "--generator", str(pool), "--name", "x"]) == 2  # no store named
    assert "--tracking-uri" in capsys.readouterr().err


def test_study_names_the_registered_model() -> None:
    assert TrackingSpec(register_generator="lung-gen.v2").register_generator == "lung-gen.v2"
    assert "register_generator" not in TrackingSpec().model_dump()  # unset: studies hash as before
    with pytest.raises(ValueError, match="register_generator"):
        TrackingSpec(register_generator="no spaces")
