"""Parse and validate a study file once, into a frozen :class:`~salient.platform.study.schema.Study`.

Every problem found is reported (file, key path, value, rule), not just the first. YAML is read
with the safe loader only, within a budget (:mod:`~salient.platform.study.yaml_budget`).
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError
from salient.dashboards.names import PREVALENCE_METRICS, VALIDATION_PREFIX, metric_name
from salient.models.configs import STAGE_CONFIGS, stage_config
from salient.platform.errors import Issue, StudyError
from salient.platform.study.params import AXES, ParamPath
from salient.platform.study.plan_size import control_arms, plan_size_issues
from salient.platform.study.schema import LimitsSpec, ParamSpec, StagesSpec, Study
from salient.platform.study.yaml_budget import load_yaml_file

__all__ = ["GUIDANCE_PREFIX", "PROFILE_VERSION", "load_search_space", "load_study", "read_yaml"]

#: A guidance profile (``platform tune-guidance``) sets these paths only.
GUIDANCE_PREFIX = "diffusion.guidance."
#: Version of the guidance-profile format this loader reads (``salient_guidance_profile``).
PROFILE_VERSION = 2


def read_yaml(path: Path) -> Any:
    """Read a YAML file with the safe loader within a size, depth and alias budget
    (:mod:`~salient.platform.study.yaml_budget`); every problem becomes a :class:`StudyError`."""
    return load_yaml_file(path)


def _loc_to_path(prefix: str, loc: tuple[Any, ...]) -> str:
    parts = [prefix] if prefix else []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
        else:
            parts.append(str(item))
    return ".".join(parts)


def _pydantic_issues(err: ValidationError, file: str, prefix: str, raw: Any) -> list[Issue]:
    issues = []
    for e in err.errors():
        loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        msg = e["msg"].removeprefix("Value error, ")
        value = e.get("input")
        # __post_init__ errors are reported on the whole object; the message names the field.
        field = re.match(r"^([a-z_]+(?:\[\d+\])?) must ", msg)
        if field and isinstance(value, dict) and field.group(1).split("[")[0] in value:
            loc = (*loc, field.group(1))
            value = value.get(field.group(1).split("[")[0])
        if e["type"] == "unexpected_keyword_argument" or e["type"] == "extra_forbidden":
            msg = "unknown key"
        issues.append(Issue(file, _loc_to_path(prefix, loc), value, msg))
    return issues


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _stage_dicts(
    raw: Any, file: str, issues: list[Issue], profile: Mapping[ParamPath, Any] | None = None
) -> tuple[str, dict[str, dict[str, Any]]]:
    """Merge the preset, a guidance profile's settings and the study's per-stage overrides
    (plain dicts; the study's own keys win over the profile)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        issues.append(Issue(file, "stages", raw, "must be a mapping"))
        raw = {}
    preset = raw.get("preset", "tiny")
    if preset not in ("tiny", "full"):
        issues.append(Issue(file, "stages.preset", preset, "must be one of ['full', 'tiny']"))
        preset = "tiny"
    merged: dict[str, dict[str, Any]] = {}
    for key in raw:
        if key != "preset" and key not in STAGE_CONFIGS:
            issues.append(Issue(file, f"stages.{key}", raw[key], f"unknown stage; stages: {sorted(STAGE_CONFIGS)}"))
    for stage in STAGE_CONFIGS:
        override = raw.get(stage) or {}
        if not isinstance(override, dict):
            issues.append(Issue(file, f"stages.{stage}", override, "must be a mapping of settings"))
            override = {}
        base = dataclasses.asdict(stage_config(stage, preset))
        for path, value in (profile or {}).items():
            if path.stage == stage:
                base = path.set(base, value)
        merged[stage] = _deep_merge(base, override)
    return preset, merged


def read_guidance_profile(raw: Any, study_file: Path, issues: list[Issue]) -> tuple[Path | None, dict[ParamPath, Any]]:
    """``guidance: {profile: PATH}`` -> (profile path, its validated settings by path).

    A profile is what ``platform tune-guidance`` writes: ``salient_guidance_profile: 2`` and a
    ``settings`` mapping of ``diffusion.guidance.*`` paths to values (plus objectives and
    provenance).
    """
    if raw is None:
        return None, {}
    if not isinstance(raw, dict) or set(raw) != {"profile"} or not isinstance(raw["profile"], str):
        issues.append(Issue(str(study_file), "guidance", raw, "must be {profile: PATH} (a guidance profile YAML)"))
        return None, {}
    path = _resolve_file(raw["profile"], study_file)
    if path is None:
        issues.append(Issue(str(study_file), "guidance.profile", raw["profile"], "profile file not found"))
        return None, {}
    try:
        data = read_yaml(path)
    except StudyError as exc:
        issues.extend(exc.issues)
        return None, {}
    version = data.get("salient_guidance_profile") if isinstance(data, dict) else None
    if version != PROFILE_VERSION:
        issues.append(
            Issue(
                str(path),
                "salient_guidance_profile",
                version,
                f"not a version-{PROFILE_VERSION} guidance profile; write a new one with `platform tune-guidance`",
            )
        )
        return None, {}
    settings = data.get("settings")
    if not isinstance(settings, dict) or not settings:
        issues.append(Issue(str(path), "settings", settings, f"a guidance profile needs {GUIDANCE_PREFIX}* settings"))
        return None, {}
    guidance = dataclasses.asdict(stage_config("diffusion"))
    out: dict[ParamPath, Any] = {}
    for name, value in settings.items():
        where = f"settings.{name}"
        if not str(name).startswith(GUIDANCE_PREFIX):
            issues.append(Issue(str(path), where, name, f"a guidance profile sets {GUIDANCE_PREFIX}* only"))
            continue
        try:
            param = ParamPath.parse(str(name))
            param.validate(guidance, value)
        except ValueError as exc:
            issues.append(Issue(str(path), where, value, str(exc)))
            continue
        out[param] = value
    return (path.resolve(), out) if len(out) == len(settings) else (None, {})


def _resolve_file(name: str, study_file: Path) -> Path | None:
    candidates = [study_file.parent / name, study_file.parent.parent / name, Path.cwd() / name]
    return next((c for c in candidates if c.is_file()), None)


def load_search_space(raw: Any, study_file: Path, issues: list[Issue]) -> dict[str, tuple[ParamSpec, str, str]]:
    """Resolve ``search_space`` (a file name, a mapping, or a list of both) into entries.

    Returns ``{name: (spec, file it came from, key path in that file)}``; problems are appended
    to ``issues``.
    """
    parts = raw if isinstance(raw, list) else [raw]
    entries: dict[str, tuple[ParamSpec, str, str]] = {}
    for i, part in enumerate(parts):
        where = f"search_space[{i}]" if isinstance(raw, list) else "search_space"
        file, prefix, mapping = str(study_file), where, part
        if isinstance(part, str):
            path = _resolve_file(part, study_file)
            if path is None:
                issues.append(
                    Issue(
                        str(study_file),
                        where,
                        part,
                        "search-space file not found (looked next to the study and one folder up)",
                    )
                )
                continue
            try:
                mapping = read_yaml(path)
            except StudyError as exc:
                issues.extend(exc.issues)
                continue
            file, prefix = str(path), ""
        if mapping is None:
            continue
        if not isinstance(mapping, dict):
            issues.append(Issue(file, prefix, mapping, "a search space must be a mapping of parameter name -> entry"))
            continue
        for name, entry in mapping.items():
            path_str = f"{prefix}.{name}" if prefix else str(name)
            if name in entries:
                issues.append(Issue(file, path_str, name, f"parameter defined twice (also in {entries[name][1]})"))
                continue
            try:
                entries[name] = (ParamSpec.model_validate(entry), file, path_str)
            except ValidationError as exc:
                issues.extend(_pydantic_issues(exc, file, path_str, entry))
    return entries


def _check_tuning_space(entries: dict[str, tuple[ParamSpec, str, str]], file: str, issues: list[Issue]) -> None:
    """A guidance-tuning study searches sampling guidance only."""
    for name, (_spec, where_file, base) in entries.items():
        if name in AXES:
            axes = ", ".join(list(AXES)[:-1]) + f" or {list(AXES)[-1]}"
            issues.append(Issue(where_file, base, name, f"a guidance_tuning study has no {axes} axis"))
        elif not name.startswith(GUIDANCE_PREFIX):
            issues.append(
                Issue(
                    where_file,
                    base,
                    name,
                    "a guidance_tuning study searches diffusion.guidance.* only (loss weights need a retrained "
                    "generator per value: search them in a dose study, see search_spaces/wavelet_bands.yaml)",
                )
            )
    for name, (spec, where_file, base) in entries.items():
        if spec.is_grid and len(spec.grid or ()) > 1:
            issues.append(
                Issue(
                    where_file,
                    f"{base}.grid",
                    list(spec.grid or ()),
                    f"a guidance_tuning study samples; fix {name} to one value or make it a choice entry",
                )
            )
    if not any(not spec.is_grid for spec, _, _ in entries.values()):
        issues.append(Issue(file, "search_space", sorted(entries), "a guidance_tuning study needs sampled entries"))


def _count_positives(manifest: Path) -> int | None:
    try:
        with manifest.open(newline="") as fh:
            return sum(1 for row in csv.DictReader(fh) if str(row.get("label", "")).strip() == "1")
    except OSError:
        return None


def _check_space(
    entries: dict[str, tuple[ParamSpec, str, str]],
    stage_dicts: dict[str, dict[str, Any]],
    n_positive: int | None,
    issues: list[Issue],
) -> None:
    for name, (spec, file, base) in entries.items():
        axis = AXES.get(name)
        if axis is not None and not axis.trains and spec.kind != "grid":
            issues.append(Issue(file, base, spec.kind, f"{name} is an evaluation axis: use grid"))
            continue
        path: ParamPath | None = None
        if axis is None:
            try:
                path = ParamPath.parse(name)
            except ValueError as exc:
                issues.append(Issue(file, base, name, str(exc)))
                continue
        for i, value in enumerate(spec.candidate_values()):
            where = f"{base}.{spec.kind}[{i}]" if spec.kind in ("grid", "choice") else f"{base}.{spec.kind}"
            if axis is not None:
                if (why := axis.check(value)) is not None:
                    issues.append(Issue(file, where, value, why))
                elif name == "seed_size" and n_positive is not None and value >= n_positive:
                    issues.append(
                        Issue(
                            file,
                            where,
                            value,
                            f"seed_size must be smaller than the cohort's {n_positive} positive subjects "
                            "(the held-out test set needs positives)",
                        )
                    )
                continue
            assert path is not None
            try:
                path.validate(stage_dicts[path.stage], value)
            except ValueError as exc:
                if " has no setting " in str(exc):  # the path itself is wrong: say it once
                    issues.append(Issue(file, base, name, str(exc)))
                    break
                issues.append(Issue(file, where, value, str(exc)))
        for cond, allowed in (spec.when or {}).items():
            if cond not in entries:
                issues.append(
                    Issue(
                        file, f"{base}.when.{cond}", cond, "condition names a parameter that is not in the search space"
                    )
                )
                continue
            other = entries[cond][0]
            if other.kind not in ("grid", "choice"):
                issues.append(
                    Issue(file, f"{base}.when.{cond}", cond, "conditions can only test grid or choice parameters")
                )
            elif unknown := [v for v in allowed if v not in other.candidate_values()]:
                issues.append(
                    Issue(
                        file,
                        f"{base}.when.{cond}",
                        unknown,
                        f"values never taken by {cond} ({list(other.candidate_values())})",
                    )
                )


def _check_objective(study: Study, file: str, issues: list[Issue]) -> None:
    """Selection happens on validation data: the sampler's objective must be a validation metric
    the trials report."""
    prevalences = study.evaluation.prevalences
    if "prevalence" in study.search_space:
        prevalences = tuple(study.search_space["prevalence"].grid or ())
    known = [metric_name(m, p, role="validation") for m in PREVALENCE_METRICS for p in (None, *prevalences)]
    metric = study.sampler.metric
    if metric not in known:
        why = (
            "the test set only reports; selection uses validation metrics"
            if metric.removeprefix(VALIDATION_PREFIX) == metric
            else "not a metric the trials report"
        )
        issues.append(Issue(file, "sampler.metric", metric, f"{why}; use one of {known}"))


def load_study(path: str | Path, check_data: bool = True) -> Study:
    """Read, validate and resolve a study file. Raises :class:`StudyError` listing every problem.

    ``check_data=False`` skips reading the cohort's manifest or dataset.json (``platform plan``
    estimates a study whose data is on another machine)."""
    path = Path(path)
    raw = read_yaml(path)
    file = str(path)
    if not isinstance(raw, dict):
        raise StudyError.single(file, "", raw, "a study file must be a mapping of settings")
    issues: list[Issue] = []
    profile_path, profile = read_guidance_profile(raw.get("guidance"), path, issues)
    preset, stage_dicts = _stage_dicts(raw.get("stages"), file, issues, profile)

    stages: StagesSpec | None = None
    resolved: dict[str, Any] = {"preset": preset}
    for stage, settings in stage_dicts.items():
        try:
            resolved[stage] = TypeAdapter(STAGE_CONFIGS[stage]).validate_python(settings)
        except ValidationError as exc:
            issues.extend(_pydantic_issues(exc, file, f"stages.{stage}", settings))
    if len(resolved) == len(STAGE_CONFIGS) + 1:
        stages = StagesSpec(**resolved)

    rest = {k: v for k, v in raw.items() if k not in ("stages", "search_space", "guidance")}
    study: Study | None = None
    try:
        study = Study.model_validate({**rest, "source_file": path, "guidance_profile": profile_path})
    except ValidationError as exc:
        issues.extend(_pydantic_issues(exc, file, "", rest))

    entries = load_search_space(raw.get("search_space") or {}, path, issues)
    n_positive: int | None = None
    if study is not None:
        cohort = study.cohort
        if cohort.source == "phantom":
            n_positive = cohort.phantom.n_positive
        elif not check_data:
            pass
        elif cohort.manifest is not None:
            manifest = cohort.manifest if cohort.manifest.is_absolute() else path.parent / cohort.manifest
            n_positive = _count_positives(manifest)
            if n_positive is None:
                issues.append(
                    Issue(file, "cohort.manifest", str(cohort.manifest), f"manifest not readable at {manifest}")
                )
        elif cohort.dataset is not None:  # nnunet / msd: positives are counted when the dataset is read
            folder = cohort.dataset if cohort.dataset.is_absolute() else path.parent / cohort.dataset
            if not (folder / "dataset.json").is_file():
                issues.append(Issue(file, "cohort.dataset", str(cohort.dataset), f"no dataset.json in {folder}"))
    # Counted before any per-value check or expansion: an oversized list or plan is named, not walked.
    limits = study.limits if study is not None else LimitsSpec()
    issues += plan_size_issues(
        entries,
        study.repeats if study is not None else 1,
        study.sampler.n_trials if study is not None else 1,
        limits,
        file,
        len(study.evaluation.prevalences) if study is not None and "prevalence" not in entries else 0,
        control_arms(study) if study is not None else 0,
        study.protocol.control_doses if study is not None else (),
    )
    short = {
        n: e
        for n, e in entries.items()
        if e[0].kind not in ("grid", "choice") or len(e[0].candidate_values()) <= limits.max_values
    }
    _check_space(short, stage_dicts, n_positive, issues)
    if raw.get("kind") == "guidance_tuning":
        _check_tuning_space(entries, file, issues)
    elif "seed_size" not in entries:
        issues.append(
            Issue(
                file,
                "search_space",
                sorted(entries),
                "the search space must define seed_size (labeled positive subjects)",
            )
        )
    if "prevalence" in entries and isinstance(raw.get("evaluation"), dict) and "prevalences" in raw["evaluation"]:
        issues.append(
            Issue(
                file,
                "evaluation.prevalences",
                raw["evaluation"]["prevalences"],
                "prevalence is set both here and in the search space; keep one",
            )
        )
    if study is not None:
        sampled = sorted(n for n, (s, _, _) in entries.items() if not s.is_grid)
        if sampled and study.sampler.name == "grid":
            issues.append(
                Issue(
                    file,
                    "sampler.name",
                    "grid",
                    f"the search space samples {sampled}; "
                    "choose random, tpe, gp, cmaes or nsga2, or make them grid entries",
                )
            )
        if study.kind == "dose_response":
            _check_objective(study, file, issues)
            dose = entries.get("dose")
            if study.protocol.controls and dose is not None and not dose[0].is_grid:
                issues.append(
                    Issue(
                        file,
                        "protocol.controls",
                        list(study.protocol.controls),
                        "controls run at the doses of a dose grid; make dose a grid entry",
                    )
                )
            elif study.protocol.controls and sampled:
                # a control trial is planned per grid cell before anything runs (its real slices are
                # counted then); a sampled draw is planned only when it is drawn
                issues.append(
                    Issue(
                        file,
                        "protocol.controls",
                        list(study.protocol.controls),
                        f"controls run in grid studies; the search space samples {sampled}: make them grid "
                        "entries or drop the controls",
                    )
                )
            if study.protocol.control_doses and not study.protocol.controls:
                issues.append(
                    Issue(
                        file,
                        "protocol.control_doses",
                        list(study.protocol.control_doses),
                        "control doses without controls run nothing; add protocol.controls or drop them",
                    )
                )
            # numbers only: a grid value that is not one was reported by the entry's own check
            grid = (dose[0].grid or ()) if dose is not None else (0.0,)
            grid_doses = {float(d) for d in grid if isinstance(d, int | float) and not isinstance(d, bool)}
            if stray := [d for d in study.protocol.control_doses if d not in grid_doses]:
                issues.append(
                    Issue(
                        file,
                        "protocol.control_doses",
                        stray,
                        f"control doses must be doses of the grid > 0: {sorted(d for d in grid_doses if d > 0)}",
                    )
                )
    if issues:
        raise StudyError(issues)
    assert study is not None and stages is not None
    space = {name: spec for name, (spec, _, _) in entries.items()}
    update: dict[str, Any] = {"stages": stages, "search_space": space}
    if "prevalence" in space:
        update["evaluation"] = study.evaluation.model_copy(
            update={"prevalences": tuple(space["prevalence"].grid or ())}
        )
    if study.cohort.manifest is not None and not study.cohort.manifest.is_absolute():
        update["cohort"] = study.cohort.model_copy(update={"manifest": (path.parent / study.cohort.manifest).resolve()})
    if study.cohort.dataset is not None and not study.cohort.dataset.is_absolute():
        update["cohort"] = study.cohort.model_copy(update={"dataset": (path.parent / study.cohort.dataset).resolve()})
    return study.model_copy(update=update)
