"""Guidance auto-tuning for a cohort (`platform tune-guidance`, issue #7).

The structured guidance of a trained generator (``s_mask``, the ``s_nei(t)`` schedule, sampling
steps: paper eq. 16-18) is searched on the cohort's own held-out lesion slices:

1. The cohort's positives are split (seeded) into generator-training subjects and held-out
   subjects. A given generator (``--generator``) is used as is; its own training subjects are
   never held out. Without one, the diffusion model and UCMT teacher are trained on the
   generator-training subjects (through the stage cache, so a rerun trains nothing).
2. Every configuration synthesises the held-out slices from their real masks and neighbouring
   slices with the same noise (common random numbers) and is scored on
   * mask fidelity: Dice of the UCMT teacher's label of the synthetic slice vs the mask (up),
   * realism: Frechet distance to the real slices (down) and wavelet band-energy distance (down),
     MS-SSIM to the real slice (reported),
   * cost: network evaluations per slice, ``3 x sampling steps`` (down; 3-pass guidance).
3. Early stopping: every configuration is scored on ``tuning.first_rung_slices`` first; ASHA
   lets only the better half continue to ``tuning.eval_slices``.
4. The pick maximises the documented scalarisation (:class:`~salient.platform.study.schema.TuningSpec`)
   relative to the default guidance on the same slices; the Pareto front is reported too.

The result is a guidance profile (YAML) that a study references with ``guidance: {profile: PATH}``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from salient.dashboards import names
from salient.models.configs import DiffusionConfig, GuidanceConfig, UCMTConfig
from salient.models.diffusion import ConditionalDiffusion
from salient.models.metrics import band_energy_stats, dice_score, frechet_distance, ms_ssim, random_conv_extractor
from salient.models.ucmt import DeepLabV3Plus, predict_masks
from salient.platform.cohort.manifest import manifest_file
from salient.platform.cohort.prepare import LoadedCohort, load_cohort
from salient.platform.errors import PlatformError
from salient.platform.generator_registry import generator_for_cohort
from salient.platform.hashing import content_hash
from salient.platform.privacy import subject_tokens
from salient.platform.run_lock import hold_output_dir
from salient.platform.splits import make_split, training_side
from salient.platform.stage_cache import StageCache, stage_key
from salient.platform.stages import DIFFUSION, UCMT
from salient.platform.stages.base import Checkpoints, derive_seed
from salient.platform.stages.diffusion import diffusion_training_config, train_diffusion
from salient.platform.stages.generator import GeneratorSource
from salient.platform.stages.slices import SliceSet, slice_set
from salient.platform.stages.ucmt import train_ucmt, ucmt_labeled_slices, ucmt_unlabeled_slices, unlabeled_cap
from salient.platform.study.loader import GUIDANCE_PREFIX, PROFILE_VERSION, load_study, read_yaml
from salient.platform.study.schema import CohortSpec, Study, TuningWeights
from salient.platform.synth import resolve_generator
from salient.platform.tracking import study_tracker
from salient.platform.tune_adapter import ray_session, run_rung_search

__all__ = [
    "OBJECTIVES",
    "PROFILE_VERSION",
    "REPORTED",
    "TuningSetup",
    "evaluate_guidance",
    "guidance_from_values",
    "load_models",
    "pareto_front",
    "prepare_tuning",
    "profile_document",
    "score",
]

log = logging.getLogger(__name__)
#: objective -> direction; the Pareto front is taken over these.
OBJECTIVES = {"mask_dice": "max", "frechet_distance": "min", "band_energy_distance": "min", "nfe": "min"}
#: What :func:`evaluate_guidance` returns and a tuning trial keeps: the objectives and the rest.
REPORTED = (*OBJECTIVES, "ms_ssim", "sampling_seconds_per_slice", "n_slices")


@dataclass(frozen=True)
class TuningSetup:
    """Everything a tuning trial needs (sent to Ray workers by value)."""

    diffusion_cfg: DiffusionConfig
    diffusion_state: dict[str, torch.Tensor]
    ucmt_cfg: UCMTConfig
    ucmt_state: dict[str, torch.Tensor]
    held_out: SliceSet  # real lesion slices of held-out subjects, in evaluation order
    rungs: tuple[int, ...]  # slices scored at each early-stopping rung, ascending
    weights: TuningWeights
    sampling_seed: int
    baseline: dict[str, float] | None = None  # the default guidance's objectives (normalisers)


def guidance_from_values(base: GuidanceConfig, values: Mapping[str, Any]) -> GuidanceConfig:
    """``base`` with ``diffusion.guidance.X`` values applied (the one spelling of a setting)."""
    fields = {f.name for f in dataclasses.fields(GuidanceConfig)}
    wrong = sorted(
        k for k in values if not k.startswith(GUIDANCE_PREFIX) or k.removeprefix(GUIDANCE_PREFIX) not in fields
    )
    if wrong:
        raise ValueError(f"unknown guidance setting(s) {wrong}; known: {[GUIDANCE_PREFIX + f for f in sorted(fields)]}")
    return dataclasses.replace(base, **{k.removeprefix(GUIDANCE_PREFIX): v for k, v in values.items()})


def guidance_settings(guidance: GuidanceConfig) -> dict[str, Any]:
    """A guidance config as settings by path (``diffusion.guidance.s_mask: 2.0``, ...)."""
    return {GUIDANCE_PREFIX + k: v for k, v in dataclasses.asdict(guidance).items()}


def load_models(setup: TuningSetup) -> tuple[ConditionalDiffusion, DeepLabV3Plus]:
    diffusion = ConditionalDiffusion(setup.diffusion_cfg)
    diffusion.load_state_dict(setup.diffusion_state)
    teacher = DeepLabV3Plus(setup.ucmt_cfg)
    teacher.load_state_dict(setup.ucmt_state)
    return diffusion.eval(), teacher.eval()


def _band_distance(synthetic: torch.Tensor, real: torch.Tensor) -> float:
    """Mean relative difference of the four Haar band statistics (LL std, LH/HL/HH variance)."""
    syn, ref = band_energy_stats(synthetic), band_energy_stats(real)
    return float(np.mean([abs(syn[k].mean() - ref[k].mean()) / (abs(ref[k].mean()) + 1e-8) for k in ref]))


def evaluate_guidance(
    setup: TuningSetup,
    guidance: GuidanceConfig,
    n_slices: int,
    models: tuple[ConditionalDiffusion, DeepLabV3Plus] | None = None,
) -> dict[str, float]:
    """Objectives of ``guidance`` on the first ``n_slices`` held-out slices (same noise every call)."""
    diffusion, teacher = models or load_models(setup)
    held = setup.held_out
    n = min(n_slices, len(held))
    real, mask, neigh = held.image[:n], held.mask[:n], held.neighbours[:n]
    g = torch.Generator().manual_seed(setup.sampling_seed)  # common random numbers across configurations
    start = time.perf_counter()
    with torch.no_grad():
        synthetic = diffusion.sample(mask, neigh, guidance, generator=g)
    seconds = time.perf_counter() - start
    labels = predict_masks(teacher, synthetic, setup.ucmt_cfg.threshold)
    extractor = random_conv_extractor()
    out = {
        "mask_dice": float(np.mean([dice_score(p, m) for p, m in zip(labels, mask, strict=True)])),
        "frechet_distance": frechet_distance(extractor(real), extractor(synthetic)),
        "band_energy_distance": _band_distance(synthetic, real),
        "nfe": float(3 * (guidance.sampling_steps if guidance.sampler == "ddim" else setup.diffusion_cfg.timesteps)),
        "sampling_seconds_per_slice": seconds / max(n, 1),
        "n_slices": float(n),
    }
    if min(real.shape[-2:]) >= 16:
        out["ms_ssim"] = ms_ssim(synthetic, real).value
    return out


def score_rungs(setup: TuningSetup, values: dict[str, Any]) -> Iterator[dict[str, float]]:
    """One configuration's objectives and score on each early-stopping rung (the models are
    loaded once per configuration, not per rung)."""
    guidance = guidance_from_values(setup.diffusion_cfg.guidance, values)
    models = load_models(setup)
    for n in setup.rungs:
        objectives = evaluate_guidance(setup, guidance, n, models)
        assert setup.baseline is not None, "the default guidance is scored first"
        yield {**objectives, "score": score(objectives, setup.baseline, setup.weights)}


def score(objectives: Mapping[str, float], baseline: Mapping[str, float], weights: TuningWeights) -> float:
    """The documented scalarisation (see TuningSpec): higher is better; the default scores
    ``w_dice * Dice0 - w_frechet - w_band - w_cost`` by construction."""

    def rel(name: str) -> float:
        return float(objectives[name]) / max(float(baseline[name]), 1e-9)

    return (
        weights.mask_dice * float(objectives["mask_dice"])
        - weights.frechet * rel("frechet_distance")
        - weights.band_energy * rel("band_energy_distance")
        - weights.cost * rel("nfe")
    )


def pareto_front(rows: Sequence[Mapping[str, float]]) -> list[int]:
    """Indices of the rows no other row dominates on :data:`OBJECTIVES` (ties do not dominate)."""

    def key(row: Mapping[str, float]) -> list[float]:
        return [float(row[k]) if d == "max" else -float(row[k]) for k, d in OBJECTIVES.items()]

    keys = [key(r) for r in rows]
    front = []
    for i, a in enumerate(keys):
        dominated = any(
            all(x >= y for x, y in zip(b, a, strict=True)) and any(x > y for x, y in zip(b, a, strict=True))
            for j, b in enumerate(keys)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def _lesion_slices(cohort: LoadedCohort, ids: Sequence[str], offsets: Sequence[int], seed: int, n: int) -> SliceSet:
    data = slice_set(cohort.subjects, ids, offsets)
    lesion = torch.nonzero(data.has_lesion).flatten()
    order = torch.randperm(len(lesion), generator=torch.Generator().manual_seed(seed))
    return data.select(lesion[order][:n])


def split_rule(study: Study) -> dict[str, Any]:
    """The seed-independent split a tuning respects: a dose study's test and validation subjects
    in every repeat are what it must never score on (see :func:`salient.platform.splits.training_side`)."""
    ev = study.evaluation
    return {
        "study": study.name,
        "seed": study.seed,
        "repeats": study.repeats,
        "test_fraction": ev.test_fraction,
        "validation_fraction": ev.validation_fraction,
    }


def _training_side(cohort: LoadedCohort, rule: Mapping[str, Any]) -> set[str]:
    return training_side(
        cohort.records, rule["repeats"], rule["seed"], rule["test_fraction"], rule["validation_fraction"]
    )


def check_profile_respects(study: Study, cohort: LoadedCohort) -> None:
    """Refuse a dose study whose guidance profile was tuned on (held out) any of its test or
    validation subjects, in any repeat (it would have been selected on the data that reports it).

    Raises:
        PlatformError: naming the profile, how many subjects overlap, and how to fix it.
    """
    if study.guidance_profile is None:
        return
    profile = read_yaml(study.guidance_profile) or {}
    held = set(profile.get("held_out_subjects") or ())
    ev = study.evaluation
    overlap: set[str] = set()
    for repeat in range(study.repeats):
        split = make_split(cohort.records, 0, repeat, study.seed, ev.test_fraction, ev.validation_fraction)
        ids = split.test + split.validation
        overlap |= held & (set(subject_tokens(ids)) | set(subject_tokens(ids, raw=True)))
    if overlap:
        raise PlatformError(
            f"guidance profile {study.guidance_profile} was tuned on {len(overlap)} subject(s) that are test or "
            f"validation subjects of study {study.name}; tune it for this study "
            f"(platform tune-guidance --for-study {study.source_file or 'STUDY.yaml'}) or pass a generator trained "
            "on its training side"
        )


def prepare_tuning(
    study: Study,
    cohort: LoadedCohort,
    cache: StageCache,
    generator: GeneratorSource | None = None,
    respect: Study | None = None,
) -> tuple[TuningSetup, dict[str, Any]]:
    """Split the cohort, get (or train) the generator and pick the held-out slices.

    Only the training side of ``respect`` (a dose study; default the tuning study's own split
    settings) is used, for the generator and for the held-out subjects alike: a profile tuned
    here never scored on, or trained on, that study's test or validation subjects.

    Returns the setup and provenance (held-out subjects as hashes, generator, cohort fingerprint,
    the split rule respected).
    """
    tuning = study.tuning
    rule = split_rule(respect or study)
    allowed = _training_side(cohort, rule)
    positives = sorted(
        s.subject
        for s in cohort.subjects.values()
        if s.label == 1 and s.subject in allowed and s.mask.reshape(len(s.mask), -1).any()
    )
    if generator is not None:
        stages = generator.stages
        diffusion_cfg, ucmt_cfg = stages.diffusion, stages.ucmt
        diffusion_state, ucmt_state = generator.load(DIFFUSION)["ema"], generator.load(UCMT)["teacher"]
        trained_on = set(generator.record.trained_on)
        held = [s for s in positives if s not in trained_on]
        source = str(generator.entry)
    else:
        diffusion_cfg, ucmt_cfg = study.stages.diffusion, study.stages.ucmt
        rng = np.random.default_rng(derive_seed(study.seed, "tuning-split"))
        order = [positives[i] for i in rng.permutation(len(positives))]
        n_held = max(1, round(tuning.held_out_fraction * len(order)))
        held, train = sorted(order[:n_held]), sorted(order[n_held:])
        if not train:
            raise PlatformError(
                f"the cohort has {len(positives)} positive subject(s) with a lesion: too few to train a generator "
                "and hold some out; lower tuning.held_out_fraction or pass --generator"
            )
        negatives = sorted(s.subject for s in cohort.subjects.values() if s.label == 0 and s.subject in allowed)
        diffusion_state, ucmt_state = _train_generator(study, cohort, cache, train, negatives)
        source = "trained on this cohort"
    if not held:
        raise PlatformError("no held-out positive subject: every positive trained the generator")
    held_out = _lesion_slices(
        cohort, held, diffusion_cfg.neighbour_offsets, derive_seed(study.seed, "tuning-slices"), tuning.eval_slices
    )
    if len(held_out) < 2:
        raise PlatformError(f"held-out subjects have {len(held_out)} lesion slice(s); at least 2 are needed")
    rungs = tuple(sorted({min(tuning.first_rung_slices, len(held_out)), len(held_out)}))
    setup = TuningSetup(
        diffusion_cfg,
        dict(diffusion_state),
        ucmt_cfg,
        dict(ucmt_state),
        held_out,
        rungs,
        tuning.weights,
        tuning.sampling_seed,
    )
    provenance = {
        "cohort_fingerprint": cohort.fingerprint,
        "generator": source,
        "held_out_subjects": subject_tokens(held, study.tracking.log_subject_ids),
        "held_out_slices": len(held_out),
        "respects_split": rule,
    }
    return setup, provenance


def _train_generator(
    study: Study, cohort: LoadedCohort, cache: StageCache, train: list[str], negatives: list[str]
) -> tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]]:
    stages = study.stages
    base = {"cohort": cohort.fingerprint, "seed": study.seed, "purpose": "guidance-tuning"}
    train_set = slice_set(cohort.subjects, train, stages.diffusion.neighbour_offsets)
    diff_key = stage_key("diffusion", diffusion_training_config(stages.diffusion), data=tuple(train), **base)
    log.info(
        "generator for tuning: diffusion, %d steps on %d subjects (cached after the first run)",
        stages.diffusion.train_steps,
        len(train),
    )
    diff, _ = cache.get_or_compute(
        diff_key,
        lambda: train_diffusion(
            stages.diffusion, train_set, derive_seed(study.seed, "tuning-diffusion"), Checkpoints(cache, diff_key)
        ),
    )
    unlabeled = ucmt_unlabeled_slices(
        cohort.subjects, negatives, derive_seed(study.seed, "tuning-ucmt-unlabeled"), unlabeled_cap(len(train_set))
    )
    ucmt_key = stage_key("ucmt", dataclasses.asdict(stages.ucmt), data=(tuple(train), tuple(negatives)), **base)
    log.info("generator for tuning: UCMT teacher, %d steps", stages.ucmt.train_steps)
    ucmt, _ = cache.get_or_compute(
        ucmt_key,
        lambda: train_ucmt(
            stages.ucmt,
            ucmt_labeled_slices(train_set, derive_seed(study.seed, 0, "ucmt-labeled")),
            unlabeled,
            derive_seed(study.seed, "tuning-ucmt"),
            Checkpoints(cache, ucmt_key),
        ),
    )
    return diff["ema"], ucmt["teacher"]


def profile_document(
    chosen: Mapping[str, Any],
    default: Mapping[str, Any],
    front: Sequence[Mapping[str, Any]],
    provenance: Mapping[str, Any],
    weights: TuningWeights,
    counts: Mapping[str, int],
) -> dict[str, Any]:
    """The guidance profile written to YAML (``settings`` is what a study applies)."""

    def clean(values: Mapping[str, Any]) -> dict[str, Any]:
        return {k: (float(v) if isinstance(v, float | np.floating) else v) for k, v in values.items()}

    return {
        "salient_guidance_profile": PROFILE_VERSION,
        "settings": clean(chosen["settings"]),
        "objectives": clean(chosen["objectives"]),
        "default": {"settings": clean(default["settings"]), "objectives": clean(default["objectives"])},
        "scalarisation": {
            "formula": "score = w_dice*Dice - w_frechet*FD/FD0 - w_band*B/B0 - w_cost*NFE/NFE0 (0: default guidance)",
            "weights": weights.model_dump(),
        },
        "pareto_front": [{"settings": clean(r["settings"]), "objectives": clean(r["objectives"])} for r in front],
        "trials": dict(counts),
        **{k: v for k, v in provenance.items()},
    }


def write_profile(document: Mapping[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(dict(document), sort_keys=False))
    tmp.replace(path)
    return path


@dataclass(frozen=True)
class TuningResult:
    profile: Path
    chosen: dict[str, Any]
    default: dict[str, Any]
    rows: list[dict[str, Any]]
    front: list[dict[str, Any]]
    parent_run_id: str
    tracking_uri: str


def run_guidance_tuning(
    study_path: str | Path,
    output: str | Path,
    cohort_path: str | Path | None = None,
    generator: str | None = None,
    n_trials: int | None = None,
    tracking_uri: str | None = None,
    address: str | None = None,
    console: Any | None = None,
    for_study: str | Path | None = None,
) -> TuningResult:
    """`platform tune-guidance`: tune, write the profile, log the search to MLflow.

    ``for_study``: the dose study the profile is for; only its training side is used."""
    from rich.console import Console

    console = console or Console()
    study = load_study(study_path)
    if study.kind != "guidance_tuning":
        raise PlatformError(f"{study_path}: kind must be guidance_tuning for tune-guidance, got {study.kind!r}")
    trials = n_trials if n_trials is not None else study.sampler.n_trials
    if trials < 1:
        raise PlatformError(f"--trials must be at least 1, got {trials}")
    source = resolve_generator(generator, tracking_uri) if generator else None
    # A given generator sees slices preprocessed the way it was trained.
    preprocessing = (
        CohortSpec.model_validate(source.record.cohort).preprocessing if source else study.cohort.preprocessing
    )
    if cohort_path is not None:
        manifest = manifest_file(cohort_path)
        if not manifest.is_file():
            raise PlatformError(f"--cohort {cohort_path}: no labels.csv manifest there")
        cohort_spec = CohortSpec(source="manifest", manifest=manifest.resolve(), preprocessing=preprocessing)
    else:
        cohort_spec = study.cohort.model_copy(update={"preprocessing": preprocessing})
    study = study.model_copy(update={"cohort": cohort_spec})
    # The output folder as `platform run` holds it: the platform's, one command at a time.
    with hold_output_dir(study.output_dir, study.name), ray_session():
        return _tune_held(study, study_path, output, source, trials, tracking_uri, address, console, for_study)


def _tune_held(
    study: Study,
    study_path: str | Path,
    output: str | Path,
    source: GeneratorSource | None,
    trials: int,
    tracking_uri: str | None,
    address: str | None,
    console: Any,
    for_study: str | Path | None,
) -> TuningResult:
    """``run_guidance_tuning`` once the output folder is held."""
    cohort = load_cohort(study.cohort, study.output_dir, progress=True)
    if source is not None:  # a registered generator names its training subjects by hash: find them here
        source = generator_for_cohort(source, cohort.subjects)
    cache = StageCache(study.output_dir / "stage_cache")
    console.print("preparing: held-out slices and generator" + (" (training it)" if source is None else ""))
    respect = load_study(for_study) if for_study is not None else None
    setup, provenance = prepare_tuning(study, cohort, cache, source, respect)
    default_guidance = setup.diffusion_cfg.guidance
    baseline = evaluate_guidance(setup, default_guidance, setup.rungs[-1])
    setup = dataclasses.replace(setup, baseline=baseline)
    default = {
        "settings": guidance_settings(default_guidance),
        "objectives": {**baseline, "score": score(baseline, baseline, setup.weights)},
    }
    console.print(
        f"default guidance on {len(setup.held_out)} held-out slices: score {default['objectives']['score']:.4f} "
        f"(Dice {baseline['mask_dice']:.3f}, FD {baseline['frechet_distance']:.3g}, NFE {baseline['nfe']:.0f})"
    )
    key = content_hash(
        [study.model_dump(mode="json", exclude={"source_file", "output_dir"}), provenance, trials], 16, default=str
    )
    experiment = f"{study.name}-{key[:8]}"
    done = 0

    def on_result(row: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        console.print(
            f"trial {done}/{trials}: score {row['objectives'].get('score', float('nan')):.4f}"
            + (" (stopped early)" if row["stopped_early"] else "")
        )

    rows = run_rung_search(
        study,
        score_rungs,
        setup,
        len(setup.rungs),
        trials,
        experiment,
        address or study.ray.address,
        on_result,
        REPORTED,
    )
    full = [r for r in rows if not r["stopped_early"]]
    if not full:
        raise RuntimeError("every guidance trial failed or was stopped; see the Ray logs under output_dir/ray_results")
    best = max(full, key=lambda r: r["objectives"]["score"])
    chosen = {
        "settings": guidance_settings(guidance_from_values(default_guidance, best["values"])),
        "objectives": best["objectives"],
    }
    if best["objectives"]["score"] <= default["objectives"]["score"]:
        chosen = default  # nothing beat the default on the held-out slices: keep it, say so
        console.print("[yellow]no configuration beat the default guidance; the profile keeps the default[/]")
    candidates = [default] + [
        {
            "settings": guidance_settings(guidance_from_values(default_guidance, r["values"])),
            "objectives": r["objectives"],
        }
        for r in full
    ]
    front = [candidates[i] for i in pareto_front([c["objectives"] for c in candidates])]
    counts = {"total": len(rows), "stopped_early": len(rows) - len(full), "requested": trials}
    document = profile_document(chosen, default, front, provenance, setup.weights, counts)
    profile = write_profile(document, Path(output))

    tracker = study_tracker(study, tracking_uri)
    params = {
        "study_file": str(study_path),
        "kind": study.kind,
        names.PARAM_OBJECTIVE: "score",
        names.PARAM_MODE: "max",
        "n_trials": trials,
    }
    parent, _ = tracker.start_study(key, study.name, params, {names.TAG_KIND: names.KIND_STUDY})
    tracker.log_trial(
        f"{key}-default",
        "default",
        default["settings"],
        default["objectives"],
        {names.TAG_PARETO: str(any(c is default for c in front))},
    )
    for i, row in enumerate(rows):
        values = guidance_settings(guidance_from_values(default_guidance, row["values"]))
        tracker.log_trial(
            f"{key}-{i}",
            f"guidance-{i:03d}",
            values,
            {**row["objectives"], "stopped_early": float(row["stopped_early"])},
            {names.TAG_STOPPED_EARLY: str(row["stopped_early"])},
        )
    tracker.log_parent_artifact(profile)
    tracker.finish_study("FINISHED")
    return TuningResult(profile, chosen, default, rows, front, parent, tracker.uri)
