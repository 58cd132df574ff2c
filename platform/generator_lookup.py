"""Finding a trained generator by its pool entry or by the MLflow run of a trial that used it.

A generator is what one trial's pool stage used: MaskVAE3D + wavelet diffusion + UCMT teacher,
found in the stage cache. The pool entry (``OUTPUT_DIR/stage_cache/pool/<key>``) records it as a
:class:`~salient.platform.stages.generator.GeneratorRecord` in its ``meta.json``. That file is
read like any other user input: bounded in size, parsed as JSON, and every field checked before
a path built from it is touched, so a stray or hostile folder given as ``--generator`` is a
clear exit-2 error, never a traceback or a read outside the stage cache.

Generators in the MLflow Model Registry (``models:/NAME/VERSION``) are found by
:mod:`salient.platform.generator_registry`, which checks their record with
:func:`generator_record` too.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from salient.dashboards import names
from salient.platform.errors import PlatformError, clip, input_limits
from salient.platform.stages import DIFFUSION, MASK_VAE, POOL, UCMT
from salient.platform.stages.generator import GeneratorRecord, GeneratorSource
from salient.platform.study.schema import CohortSpec, StagesSpec

__all__ = [
    "MAX_META_BYTES",
    "RUN_ID",
    "generator_from_entry",
    "generator_from_run",
    "generator_record",
    "parse_json_object",
]

#: An MLflow run id: 32 lowercase hex digits.
RUN_ID = re.compile(r"^[0-9a-f]{32}$")
#: Largest generator ``meta.json`` read (it lists the host subjects: kB to a few MB).
MAX_META_BYTES = 64 << 20
_KEY_PART = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")


def parse_json_object(data: bytes, where: str, what: str) -> dict[str, Any]:
    """``data`` as a JSON object; anything else is the user's bad input (exit 2).

    Args:
        data: the file's bytes (the caller bounds their size).
        where: the file, as the message names it.
        what: the argument that named it, e.g. ``--generator``.
    """
    try:
        with input_limits(f"{what}: {where}"):
            value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PlatformError(f"{what}: {where} is not valid JSON: {clip(str(exc))}") from None
    if not isinstance(value, dict):
        raise PlatformError(f"{what}: {where} must hold a JSON object, got {clip(repr(value))}")
    return value


def _read_meta(meta_file: Path, what: str) -> dict[str, Any]:
    try:
        with meta_file.open("rb") as fh:
            data = fh.read(MAX_META_BYTES + 1)
    except OSError as exc:
        raise PlatformError(f"{what}: {meta_file} cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_META_BYTES:
        raise PlatformError(f"{what}: {meta_file} is larger than {MAX_META_BYTES} bytes; not a generator record")
    return parse_json_object(data, str(meta_file), what)


def _meta_error(exc: Any, where: str, meta_file: str, what: str) -> PlatformError:
    first = exc.errors()[0]
    loc = ".".join([where, *(str(x) for x in first["loc"])])
    msg = first["msg"].removeprefix("Value error, ")
    return PlatformError(
        f"{what}: {meta_file}: {loc}: {msg} (got {clip(repr(first.get('input')))}); "
        f"{exc.error_count()} problem(s) - not a generator record this platform wrote"
    )


def generator_record(raw: Any, meta_file: str, what: str) -> GeneratorRecord:
    """A recorded generator checked field by field (types, configs, model keys) before use.

    Args:
        raw: the ``generator`` object of a pool entry's meta.json (or of a registered model).
        meta_file: the file it came from, as error messages name it.
        what: the argument that named the generator, e.g. ``--generator``.
    """
    from pydantic import TypeAdapter, ValidationError

    try:
        record = TypeAdapter(GeneratorRecord).validate_python(raw)
    except ValidationError as exc:
        raise _meta_error(exc, "generator", meta_file, what) from None
    for field, model in (("stages", StagesSpec), ("cohort", CohortSpec)):
        try:
            model.model_validate(getattr(record, field))
        except ValidationError as exc:
            raise _meta_error(exc, f"generator.{field}", meta_file, what) from None
    hu = record.placement_hu
    for field, value, ok, rule in (
        ("min_pair_dice", record.min_pair_dice, 0.0 <= record.min_pair_dice <= 1.0, "in [0, 1]"),
        ("placement_share", record.placement_share, 0.0 < record.placement_share <= 1.0, "in (0, 1]"),
        ("placement_hu", hu, hu is None or (len(hu) == 2 and hu[0] < hu[1]), "[low, high] with low < high, or null"),
    ):
        if not ok:  # NaN fails every comparison, so it is refused too
            raise PlatformError(f"{what}: {meta_file}: generator.{field} must be {rule}, got {clip(repr(value))}")
    for model in (MASK_VAE, DIFFUSION, UCMT):
        key = getattr(record, model)
        parts = key.split("/")
        if len(parts) != 2 or not all(_KEY_PART.match(p) for p in parts) or ".." in parts:
            raise PlatformError(f"{what}: {meta_file}: generator.{model} must be STAGE/KEY, got {clip(repr(key))}")
    return record


def generator_from_entry(entry: Path, what: str) -> GeneratorSource:
    """The generator a finished pool entry (``OUTPUT_DIR/stage_cache/pool/<key>``) recorded."""
    meta_file = entry / "meta.json"
    if not meta_file.is_file():
        raise PlatformError(f"{what}: {entry} is not a finished stage-cache entry (no meta.json)")
    meta = _read_meta(meta_file, what)
    if meta.get("stage") != POOL:
        raise PlatformError(
            f"{what}: {entry} is a {meta.get('stage')!r} entry; a generator is named by its pool entry "
            "(OUTPUT_DIR/stage_cache/pool/<key>)"
        )
    if "generator" not in meta:
        raise PlatformError(f"{what}: {entry} was written before generators were recorded; rerun its study")
    return GeneratorSource(entry, generator_record(meta["generator"], str(meta_file), what))


def generator_from_run(run_id: str, tracking_uri: str | None, what: str = "--generator") -> GeneratorSource:
    """The generator of a trial with dose > 0, found through its MLflow run and its study run's
    ``stage_cache`` param (so the stage cache must still be where the study wrote it)."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise PlatformError(
            f"{what} {run_id} looks like an MLflow run id: give --tracking-uri (or set MLFLOW_TRACKING_URI), "
            "e.g. sqlite:///salient_runs/mlflow.db"
        )
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    try:
        run = client.get_run(run_id)
        parent_id = run.data.tags.get(names.TAG_PARENT)
        parent = client.get_run(parent_id) if parent_id else None
    except MlflowException as exc:
        raise PlatformError(f"{what} {run_id}: no such run at {uri} ({exc.message})") from None
    pool = run.data.params.get(names.PARAM_STAGE_KEY_PREFIX + POOL)
    if pool is None:
        raise PlatformError(
            f"{what} {run_id}: run {run.info.run_name!r} trained no generator (dose 0?); pick a trial with dose > 0"
        )
    root = parent.data.params.get(names.PARAM_STAGE_CACHE) if parent is not None else None
    if root is None:
        raise PlatformError(f"{what} {run_id}: its study run does not record where its stage cache is")
    return generator_from_entry(Path(root) / pool, f"{what} {run_id}")
