"""Trained generators in the MLflow Model Registry: register one, find it by ``models:/`` URI, load it safely.

Teams find models through MLflow's registry, not through a folder inside a stage cache. A
trained generator (MaskVAE3D + wavelet diffusion + UCMT teacher, with the configs and the
:class:`~salient.platform.stages.generator.GeneratorRecord` needed to sample from it) is logged as
one MLflow *logged model* linked to the trial run that trained it, and registered as a version of
a registered model the study names. ``platform synth`` and ``platform tune-guidance`` take
``--generator models:/NAME/VERSION``, ``models:/NAME@ALIAS`` or ``models:/NAME/latest``.

What is stored (the logged model's artifacts; the model version points at them)::

    MLmodel          flavor ``salient_generator`` (no python_function flavor: nothing to execute)
                     and the diffusion sampler's tensor signature
    generator.json   format version, the generator record, which weights file holds which model
    mask_vae.pt      state dicts: ``torch.save`` of a flat {name: tensor} dict
    diffusion.pt
    ucmt.pt

Loading never runs code from the store. The weights are read with
``torch.load(weights_only=True)`` (tensors and plain containers only: a pickle that would
import or call anything is refused), configs are JSON checked field by field, and MLflow's
pickle-based flavours are not used. Each file's sha256 is recorded as a tag of the model
*version* (in the registry database, not in the artifact store), so a file changed in the
artifact store after registration is refused before it is parsed.

Privacy: the record names the generator's host and training subjects. By default (the study's
``tracking.log_subject_ids: false``) they are stored as ``sha256(id)[:16]`` and the cohort's
manifest or dataset path as its last name only, like everything else the platform logs; such a
generator finds its subjects again by hashing the ids of the cohort it is used with
(:func:`generator_for_cohort`), and a manifest/dataset cohort has to be given with ``--cohort``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from salient.platform.errors import PlatformError, clip
from salient.platform.generator_lookup import generator_from_entry, generator_record, parse_json_object
from salient.platform.privacy import subject_token
from salient.platform.stage_cache import CODE_VERSION
from salient.platform.stages import DIFFUSION, GENERATOR_STAGES, MASK_VAE, UCMT
from salient.platform.stages.generator import GeneratorRecord, GeneratorSource
from salient.platform.study.schema import GENERATOR_NAME_PATTERN, CohortSpec

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient
    from salient.platform.tracking import Tracker

__all__ = [
    "FLAVOR",
    "FORMAT_VERSION",
    "MODEL_TYPE",
    "ModelRef",
    "RegisteredGenerator",
    "default_work_dir",
    "generator_for_cohort",
    "is_model_uri",
    "load_registered_generator",
    "parse_model_uri",
    "register_generator",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
FLAVOR = "salient_generator"
MODEL_TYPE = "salient-generator"
MODEL_URI_PREFIX = "models:/"
RECORD_FILE = "generator.json"
#: The weights file of each model of a generator, and the key its stage output keeps it under.
WEIGHT_FILES = {MASK_VAE: "mask_vae.pt", DIFFUSION: "diffusion.pt", UCMT: "ucmt.pt"}
STATE_KEYS = {MASK_VAE: "ema", DIFFUSION: "ema", UCMT: "teacher"}
#: Model-version tags: the sha256 of each stored file (``TAG_SHA256 + file name``), the pool key.
TAG_SHA256 = "salient.sha256."
TAG_GENERATOR_KEY = "salient.generator_key"
TAG_FORMAT = "salient.format_version"
TAG_SUBJECT_IDS = "salient.subject_ids"
TAG_LOGGED_MODEL = "salient.logged_model_id"
#: Experiment that holds generators registered from a pool folder (no trial run named).
DEFAULT_EXPERIMENT = "salient-generators"
#: Largest file read from a registered generator (weights are read whole, then parsed).
MAX_WEIGHTS_BYTES = 4 << 30
MAX_RECORD_BYTES = 64 << 20
_NAME = re.compile(GENERATOR_NAME_PATTERN)
_VERSION = re.compile(r"^[1-9][0-9]{0,9}$")


@dataclass(frozen=True)
class ModelRef:
    """A parsed ``models:/`` URI: a registered model name and one of version, alias or latest."""

    name: str
    version: int | None = None
    alias: str | None = None

    @property
    def latest(self) -> bool:
        return self.version is None and self.alias is None

    def __str__(self) -> str:
        tail = f"/{self.version}" if self.version is not None else f"@{self.alias}" if self.alias else "/latest"
        return f"{MODEL_URI_PREFIX}{self.name}{tail}"


def is_model_uri(ref: str) -> bool:
    """True for a model registry URI (``models:/...``)."""
    return ref.startswith(MODEL_URI_PREFIX)


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise PlatformError(
            f"{what} must be 1-128 letters, digits, '_', '-' or '.' starting with a letter or digit, "
            f"got {clip(repr(name))}"
        )
    return name


def parse_model_uri(ref: str, what: str = "--generator") -> ModelRef:
    """``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` or ``models:/NAME/latest`` -> :class:`ModelRef`.

    Stages (``models:/NAME/Production``) are refused: MLflow deprecated them for aliases.
    """
    if not is_model_uri(ref):
        raise PlatformError(f"{what} {clip(repr(ref))} is not a model URI (models:/NAME/VERSION)")
    body = ref[len(MODEL_URI_PREFIX) :]
    usage = "give models:/NAME/VERSION, models:/NAME@ALIAS or models:/NAME/latest"
    if "@" in body:
        name, alias = body.split("@", 1)
        if not _NAME.match(alias):
            raise PlatformError(f"{what} {clip(repr(ref))}: bad alias {clip(repr(alias))}; {usage}")
        return ModelRef(_check_name(name, f"{what} model name"), alias=alias)
    parts = body.split("/")
    if len(parts) != 2:
        raise PlatformError(f"{what} {clip(repr(ref))}: {usage}")
    name, tail = parts
    _check_name(name, f"{what} model name")
    if tail == "latest":
        return ModelRef(name)
    if not _VERSION.match(tail):
        raise PlatformError(
            f"{what} {clip(repr(ref))}: {clip(repr(tail))} is not a version number (stages are not supported; "
            f"use an alias); {usage}"
        )
    return ModelRef(name, version=int(tail))


def default_work_dir() -> Path:
    """Where a registered generator's host cohort is prepared (phantom, slice cache):
    ``$SALIENT_CACHE_DIR/registry-hosts``, else ``$XDG_CACHE_HOME/salient/...``, else ``~/.cache/salient/...``.
    It can hold preprocessed real scans, so it is created readable by the user only."""
    env = os.environ.get("SALIENT_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "salient"
    return base / "registry-hosts"


@dataclass(frozen=True, eq=False)
class RegisteredGenerator(GeneratorSource):
    """A generator loaded from the Model Registry; used wherever a pool-entry generator is.

    ``entry`` holds the model URI with the version an alias or ``latest`` resolved to
    (``models:/NAME/VERSION``): it names the generator in provenance. There is no stage cache
    behind it: :meth:`load` returns the weights read (and checked) at resolution, and
    :attr:`output_dir` is a work folder for preparing its host cohort.

    Args:
        states: each model's stage output (``{"ema": state_dict}`` / ``{"teacher": state_dict}``).
        hashed_ids: the record's ``hosts``/``trained_on`` are ``sha256(id)[:16]`` tokens.
        cohort_path_logged: the record's manifest/dataset path is the real one (else only its name).
        work_dir: where the host cohort is prepared.
    """

    states: Mapping[str, Mapping[str, Mapping[str, torch.Tensor]]]
    hashed_ids: bool
    cohort_path_logged: bool
    work_dir: Path

    @property
    def uri(self) -> str:
        return str(self.entry)

    @property
    def output_dir(self) -> Path:
        return self.work_dir

    @property
    def cache(self) -> Any:
        raise PlatformError(f"{self.uri} is a registered generator; it has no stage cache")

    def load(self, model: str) -> Any:
        if model not in GENERATOR_STAGES:
            raise ValueError(f"model must be one of {GENERATOR_STAGES}, got {model!r}")
        return self.states[model]

    def cohort_spec(self) -> CohortSpec:
        """The generator's own cohort; refused when its path was not stored (give ``--cohort``)."""
        spec = CohortSpec.model_validate(self.record.cohort)
        if spec.source != "phantom" and not self.cohort_path_logged:
            raise PlatformError(
                f"{self.uri} was registered without its cohort's path (the study's tracking.log_subject_ids is "
                f"false; only the name {clip(str(spec.manifest or spec.dataset))!r} is stored): give the cohort with "
                "--cohort"
            )
        return spec


def generator_for_cohort(source: GeneratorSource, subject_ids: Iterable[str]) -> GeneratorSource:
    """``source`` with its host and training subjects named by the ids of this cohort.

    A registered generator stores them as hashes; each hash that matches one of ``subject_ids``
    becomes that id (one that matches none stays a hash, so it is found missing, never
    mistaken for another subject). Any other generator is returned as is.
    """
    if not isinstance(source, RegisteredGenerator) or not source.hashed_ids:
        return source
    by_token = {subject_token(s): s for s in subject_ids}
    rec = source.record
    record = dataclasses.replace(
        rec,
        hosts=[by_token.get(t, t) for t in rec.hosts],
        trained_on=[by_token.get(t, t) for t in rec.trained_on],
    )
    return RegisteredGenerator(
        entry=source.entry,
        record=record,
        states=source.states,
        hashed_ids=False,
        cohort_path_logged=source.cohort_path_logged,
        work_dir=source.work_dir,
    )


def _client(tracker_or_client: Tracker | MlflowClient) -> MlflowClient:
    client = getattr(tracker_or_client, "client", tracker_or_client)
    for method in ("create_logged_model", "create_model_version"):
        if not callable(getattr(client, method, None)):
            raise TypeError(f"tracker_or_client must be a Tracker or an MlflowClient, got {type(tracker_or_client)}")
    return client


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stored_record(rec: GeneratorRecord, raw_subject_ids: bool) -> tuple[dict[str, Any], bool]:
    """The record as stored: subject ids hashed and the cohort path cut to its name unless opted in."""
    data = rec.to_json()
    if raw_subject_ids:
        return data, True
    data["hosts"] = [subject_token(s) for s in rec.hosts]
    data["trained_on"] = [subject_token(s) for s in rec.trained_on]
    cohort = dict(data["cohort"])
    for key in ("manifest", "dataset"):
        if cohort.get(key) is not None:
            cohort[key] = PurePath(str(cohort[key])).name
    data["cohort"] = cohort
    return data, CohortSpec.model_validate(cohort).source == "phantom"


def _write_model_folder(folder: Path, source: GeneratorSource, key: str, raw_subject_ids: bool) -> dict[str, str]:
    """Write the artifacts (see the module docstring); returns the sha256 of each file by name."""
    from mlflow.models import Model, ModelSignature
    from mlflow.types import Schema, TensorSpec

    digests = {}
    weights = {}
    for model in GENERATOR_STAGES:
        state = source.load(model)[STATE_KEYS[model]]
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, buffer)
        data = buffer.getvalue()
        (folder / WEIGHT_FILES[model]).write_bytes(data)
        digests[WEIGHT_FILES[model]] = _sha256(data)
        weights[model] = {"file": WEIGHT_FILES[model], "output_key": STATE_KEYS[model]}
    record, path_logged = _stored_record(source.record, raw_subject_ids)
    manifest = {
        "format_version": FORMAT_VERSION,
        "generator": record,
        "subject_ids": "raw" if raw_subject_ids else "sha256",
        "cohort_path_logged": path_logged,
        "weights": weights,
        "generator_key": key,
        "code_version": CODE_VERSION,
    }
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    (folder / RECORD_FILE).write_bytes(data)
    digests[RECORD_FILE] = _sha256(data)
    stages = source.stages
    roi = CohortSpec.model_validate(source.record.cohort).preprocessing.roi
    h, w = roi[1], roi[0]  # preprocessed slices are (Z, H, W) = (z, y, x)
    f32 = np.dtype("float32")
    signature = ModelSignature(
        inputs=Schema(
            [
                TensorSpec(f32, (-1, 1, h, w), "mask"),
                TensorSpec(f32, (-1, len(stages.diffusion.neighbour_offsets), h, w), "neighbours"),
            ]
        ),
        outputs=Schema([TensorSpec(f32, (-1, 1, h, w), "image")]),
    )
    mlmodel = Model(signature=signature)
    mlmodel.add_flavor(
        FLAVOR,
        format_version=FORMAT_VERSION,
        record=RECORD_FILE,
        weights=dict(WEIGHT_FILES),
        loader="salient.platform.generator_registry.load_registered_generator (weights only)",
    )
    mlmodel.save(str(folder / "MLmodel"))
    return digests


def _versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    out: list[ModelVersion] = []
    token = None
    while True:
        page = client.search_model_versions(f"name='{name}'", page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def _pool_key(source: GeneratorSource) -> str:
    return f"{source.entry.parent.name}/{source.entry.name}"


def register_generator(
    tracker_or_client: Tracker | MlflowClient,
    run_id: str | None,
    pool_entry: Path | GeneratorSource,
    name: str,
    *,
    raw_subject_ids: bool = False,
    experiment_id: str | None = None,
    alias: str | None = None,
) -> int:
    """Log a trained generator as one MLflow model and register it as a version of ``name``.

    Registering the same generator (same pool key, same id policy) under the same name again
    returns the existing version, so a resumed study does not pile up copies.

    Args:
        tracker_or_client: the study's :class:`~salient.platform.tracking.Tracker` or an MlflowClient
            (the registry is the tracking store's).
        run_id: the trial run that trained it (the logged model links to it), or None.
        pool_entry: its pool entry folder (``OUTPUT_DIR/stage_cache/pool/<key>``) or the
            :class:`GeneratorSource` found there.
        name: the registered model name (``tracking.register_generator`` of the study).
        raw_subject_ids: store raw subject ids and the cohort path (the study's
            ``tracking.log_subject_ids``); default hashes and the path's last name.
        experiment_id: where the logged model goes when ``run_id`` is None (default: the
            tracker's experiment, else ``salient-generators``).
        alias: also point this alias (e.g. ``champion``) at the version.

    Returns:
        the model version number.
    """
    from mlflow.exceptions import MlflowException

    _check_name(name, "name")
    if alias is not None:
        _check_name(alias, "alias")
    client = _client(tracker_or_client)
    if isinstance(pool_entry, RegisteredGenerator):
        raise PlatformError(f"{pool_entry.uri} is registered already; register its pool entry instead")
    source = pool_entry if isinstance(pool_entry, GeneratorSource) else generator_from_entry(Path(pool_entry), "pool")
    key = _pool_key(source)
    ids = "raw" if raw_subject_ids else "sha256"
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:
            client.create_registered_model(
                name, description="SALIENT generator: MaskVAE3D + wavelet diffusion + UCMT teacher"
            )
        except MlflowException as again:  # created meanwhile by another process: fine
            if again.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    for mv in _versions(client, name):
        if mv.tags.get(TAG_GENERATOR_KEY) == key and mv.tags.get(TAG_SUBJECT_IDS) == ids:
            log.info("generator %s is already version %s of %s", key, mv.version, name)
            version = int(mv.version)
            if alias is not None:
                client.set_registered_model_alias(name, alias, str(version))
            return version
    if experiment_id is None:
        if run_id is not None:
            experiment_id = client.get_run(run_id).info.experiment_id
        else:
            experiment_id = getattr(tracker_or_client, "experiment_id", None) or _default_experiment(client)
    with tempfile.TemporaryDirectory(prefix="salient-generator-") as tmp:
        digests = _write_model_folder(Path(tmp), source, key, raw_subject_ids)
        logged = client.create_logged_model(
            experiment_id,
            name=name,
            source_run_id=run_id,
            model_type=MODEL_TYPE,
            tags={TAG_GENERATOR_KEY: key},
        )
        client.log_model_artifacts(logged.model_id, tmp)
    client.finalize_logged_model(logged.model_id, "READY")
    tags = {
        **{TAG_SHA256 + file: digest for file, digest in digests.items()},
        TAG_GENERATOR_KEY: key,
        TAG_FORMAT: str(FORMAT_VERSION),
        TAG_SUBJECT_IDS: ids,
        TAG_LOGGED_MODEL: logged.model_id,
    }
    # The logged model's own artifact location as source: a ``models:/<model_id>`` source makes
    # MLflow 3's SQL registry look the model up through the *global* tracking URI (a TODO in
    # mlflow/store/model_registry/sqlalchemy_store.py), which is not this client's store.
    mv = client.create_model_version(
        name,
        source=logged.artifact_location,
        run_id=run_id,
        tags=tags,
        description=f"generator {key}; sample with: platform synth --generator models:/{name}/<version>",
    )
    version = int(mv.version)
    if alias is not None:
        client.set_registered_model_alias(name, alias, str(version))
    log.info("registered generator %s as %s version %d", key, name, version)
    return version


def _default_experiment(client: MlflowClient) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return str(exp.experiment_id)
    try:
        return str(client.create_experiment(DEFAULT_EXPERIMENT))
    except MlflowException:  # created meanwhile
        exp = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
        if exp is None:
            raise
        return str(exp.experiment_id)


def _find_version(client: MlflowClient, ref: ModelRef, uri: str, what: str) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    try:
        if ref.version is not None:
            return client.get_model_version(ref.name, str(ref.version))
        if ref.alias is not None:
            return client.get_model_version_by_alias(ref.name, ref.alias)
        client.get_registered_model(ref.name)
        versions = _versions(client, ref.name)
    except MlflowException as exc:
        raise PlatformError(f"{what} {ref}: not found at {uri} ({clip(exc.message)})") from None
    if not versions:
        raise PlatformError(f"{what} {ref}: registered model {ref.name!r} has no versions at {uri}")
    return max(versions, key=lambda mv: int(mv.version))


def _download(storage: str, file: str, dst: Path, uri: str, limit: int, where: str, what: str) -> bytes:
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    try:
        local = Path(
            download_artifacts(artifact_uri=f"{storage.rstrip('/')}/{file}", dst_path=str(dst), tracking_uri=uri)
        )
    except (MlflowException, OSError) as exc:
        raise PlatformError(f"{what} {where}: {file} cannot be downloaded: {clip(str(exc))}") from None
    if not local.is_file():
        raise PlatformError(f"{what} {where}: {file} is not a file in the model's artifacts")
    size = local.stat().st_size
    if size > limit:
        raise PlatformError(f"{what} {where}: {file} is {size} bytes, more than the {limit} allowed")
    return local.read_bytes()


def _checked_bytes(data: bytes, file: str, tags: Mapping[str, str], where: str, what: str) -> bytes:
    expected = tags.get(TAG_SHA256 + file)
    actual = _sha256(data)
    if expected != actual:
        raise PlatformError(
            f"{what} {where}: refused: {file} has sha256 {actual[:16]}..., the registry recorded "
            f"{clip(str(expected))[:16]}... at registration; the stored model was changed or damaged"
        )
    return data


def _weights(data: bytes, file: str, where: str, what: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # whatever the restricted unpickler or the zip reader raise: not weights
        raise PlatformError(
            f"{what} {where}: refused: {file} is not a weights-only file ({type(exc).__name__}); it may hold "
            "code - do not load it any other way"
        ) from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise PlatformError(f"{what} {where}: refused: {file} is not a flat {{name: tensor}} state dict")
    return state


def _check_fits(record: GeneratorRecord, states: Mapping[str, Mapping[str, Any]], where: str, what: str) -> None:
    """The weights load into this code's models (else: registered by another code version)."""
    from salient.models.ucmt import DeepLabV3Plus
    from salient.platform.stages.generator import load_generators
    from salient.platform.study.schema import StagesSpec

    stages = StagesSpec.model_validate(record.stages)
    try:
        load_generators(stages.diffusion, states[DIFFUSION]["ema"], stages.mask_vae, states[MASK_VAE]["ema"])
        DeepLabV3Plus(stages.ucmt).load_state_dict(states[UCMT]["teacher"])
    except RuntimeError as exc:
        raise PlatformError(
            f"{what} {where}: its weights do not fit this platform's models ({clip(str(exc).splitlines()[0])}); "
            "it was registered by a different code version"
        ) from None


def load_registered_generator(
    ref: str, tracking_uri: str | None = None, work_dir: Path | None = None, what: str = "--generator"
) -> RegisteredGenerator:
    """Resolve ``models:/NAME/VERSION`` (``@ALIAS``, ``/latest``), download and check its files, load its weights.

    Args:
        ref: the model URI.
        tracking_uri: the MLflow store holding the registry (default ``$MLFLOW_TRACKING_URI``).
        work_dir: where its host cohort will be prepared (default :func:`default_work_dir`).
        what: the argument that named it, for messages.

    Raises:
        PlatformError: a bad URI, an unknown model/version/alias, a model that is not a SALIENT
            generator, a file whose sha256 differs from the registry's, a weights file that is
            not weights-only, or weights that do not fit this code's models.
    """
    from mlflow.tracking import MlflowClient

    parsed = parse_model_uri(ref, what)
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise PlatformError(
            f"{what} {ref} is a registered model: give --tracking-uri (or set MLFLOW_TRACKING_URI), "
            "e.g. sqlite:///salient_runs/mlflow.db"
        )
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mv = _find_version(client, parsed, uri, what)
    where = f"{MODEL_URI_PREFIX}{parsed.name}/{mv.version}"
    tags = dict(mv.tags or {})
    if tags.get(TAG_FORMAT) != str(FORMAT_VERSION) or TAG_SHA256 + RECORD_FILE not in tags:
        raise PlatformError(
            f"{what} {where}: not a SALIENT generator of format {FORMAT_VERSION} (no {TAG_FORMAT} tag); "
            "register generators with platform register-generator"
        )
    storage = client.get_model_version_download_uri(parsed.name, str(mv.version))
    with tempfile.TemporaryDirectory(prefix="salient-registry-") as tmp:
        raw = _download(storage, RECORD_FILE, Path(tmp), uri, MAX_RECORD_BYTES, where, what)
        meta = parse_json_object(_checked_bytes(raw, RECORD_FILE, tags, where, what), f"{where}/{RECORD_FILE}", what)
        if meta.get("format_version") != FORMAT_VERSION:
            raise PlatformError(f"{what} {where}: {RECORD_FILE} has format {meta.get('format_version')!r}")
        record = generator_record(meta.get("generator"), f"{where}/{RECORD_FILE}", what)
        states: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
        for model in GENERATOR_STAGES:
            file = WEIGHT_FILES[model]
            data = _download(storage, file, Path(tmp), uri, MAX_WEIGHTS_BYTES, where, what)
            states[model] = {
                STATE_KEYS[model]: _weights(_checked_bytes(data, file, tags, where, what), file, where, what)
            }
    _check_fits(record, states, where, what)
    code = meta.get("code_version")
    if code != CODE_VERSION:
        log.info("%s was registered by code version %s (this is %s); its weights fit", where, code, CODE_VERSION)
    return RegisteredGenerator(
        entry=Path(where),
        record=record,
        states=states,
        hashed_ids=meta.get("subject_ids") != "raw",
        cohort_path_logged=meta.get("cohort_path_logged") is True,
        work_dir=work_dir if work_dir is not None else default_work_dir(),
    )
