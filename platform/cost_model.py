"""What each task of a study costs, for ``platform plan``: measured when the stage cache has it,
from a file when the user gives one, otherwise estimated.

Sources, in order:

1. **measured**: the stage cache records each output's compute seconds (``compute_seconds`` in its
   ``meta.json``); a node whose output exists costs what it took. (Only a graph built from resolved
   trial plans has stage keys, so only then can costs be measured.)
2. **file** (``--gpu-hours-per-stage FILE``): YAML ``{stage: hours}`` on one worker, e.g.
   ``{diffusion: 9.0, ucmt: 1.5, pool: 0.5, mask_vae: 0.01, detector: 0.12, aggregator: 0.02}``;
   stages it does not name fall back to the model.
3. **model**: floating-point operations / a nominal throughput. The forward FLOPs of one sample are
   counted by ``torch.utils.flop_counter`` on the real modules built on the ``meta`` device (no
   memory, no compute), at the study's configs and slice size; training costs 3 forward passes
   (forward + backward) per sample. Per stage, samples processed:

   * mask_vae: ``epochs x seed subjects`` volumes;
   * diffusion: ``train_steps x batch_size`` slices;
   * ucmt: ``train_steps x batch_size`` x (2 students x (labeled + unlabeled) x 3 + 1 teacher);
   * pool: ``pool slices x sampling_steps x 3`` guided branches, + one UCMT pass per slice;
   * detector: ``steps x batch_size`` (matched schedule) or ``epochs x slices`` (epochs schedule);
   * aggregator: one detector forward per slice of every non-seed-training subject it embeds
     + ``epochs x subjects`` transformer passes (analytic: ``layers x L x (24 d^2 + 4 L d)``).

   Throughput: :data:`GPU_FLOPS` for a stage that asks for GPUs (a nominal 100 TFLOP/s sustained,
   about 10-20% of an H100's dense bf16 peak - small convolutions rarely reach more), else
   :data:`CPU_FLOPS` (2e10 FLOP/s: what the tiny demo stages reached on this project's 2-core CPU,
   e.g. diffusion 3.7e11 FLOPs in 19 s). Pool slices, subjects and slices per subject come from the
   resolved plan; without a cohort (``platform plan`` of a study whose data is elsewhere) from the
   phantom spec, the manifest's row count, or :data:`DEFAULT_SUBJECTS`, with
   :data:`LESION_SLICES_PER_SUBJECT` lesion slices per positive subject.

A data-parallel stage (``workers: W``) takes ``cost / W`` on W workers (ideal scaling; an upper
bound on the speed-up). Costs are seconds on one worker; only their ratios matter for utilisation.
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from salient.platform.errors import PlatformError, StudyError
from salient.platform.graph import TRIAL, UPSTREAM_STAGES, Node, ParamNodeInfo, StudyGraph
from salient.platform.stages import AGGREGATOR, DETECTOR, DIFFUSION, MASK_VAE, POOL, STAGE_NAMES, UCMT
from salient.platform.study.params import apply_params
from salient.platform.study.schema import StagesSpec, Study
from salient.platform.study.yaml_budget import load_yaml_file

if TYPE_CHECKING:
    from salient.platform.stage_cache import StageCache
    from salient.platform.stages.trial import TrialPlan

__all__ = [
    "CPU_FLOPS",
    "DEFAULT_SUBJECTS",
    "GPU_FLOPS",
    "LESION_SLICES_PER_SUBJECT",
    "NodeCost",
    "node_costs",
    "read_stage_hours",
]

GPU_FLOPS = 1e14
CPU_FLOPS = 2e10
DEFAULT_SUBJECTS = 500
LESION_SLICES_PER_SUBJECT = 8
#: the stages a trial node runs itself (everything downstream of the pool)
TRIAL_STAGES = tuple(s for s in STAGE_NAMES if s not in UPSTREAM_STAGES)


@dataclass(frozen=True)
class NodeCost:
    """Seconds of one node on one worker, and where the number came from (``measured``,
    ``file``, ``model``; a trial node's sources are its stages', joined with ``+``)."""

    seconds: float
    source: str


def read_stage_hours(path: str | Path) -> dict[str, float]:
    """``--gpu-hours-per-stage FILE``: a YAML mapping of stage name to hours (finite, >= 0)."""
    file = Path(path)
    try:  # the study files' YAML budget: a small mapping needs little, a hostile file gets no more
        data = load_yaml_file(file, max_bytes=100_000, max_depth=8, max_nodes=1_000)
    except StudyError as exc:
        raise PlatformError(f"--gpu-hours-per-stage {exc}") from None
    if not isinstance(data, dict) or not data:
        raise PlatformError(
            f"--gpu-hours-per-stage {file}: expected a mapping like {{diffusion: 9.0}}, got {data!r:.80}"
        )
    hours: dict[str, float] = {}
    for stage, value in data.items():
        if stage not in STAGE_NAMES:
            raise PlatformError(f"--gpu-hours-per-stage {file}: unknown stage {stage!r}; stages: {list(STAGE_NAMES)}")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise PlatformError(
                f"--gpu-hours-per-stage {file}: {stage}: hours must be a finite number >= 0, got {value!r}"
            )
        hours[stage] = float(value)
    return hours


@dataclass(frozen=True)
class _Sizes:
    """The data sizes a stage's cost depends on."""

    seed_subjects: int
    lesion_slices: int  # of the labeled seed
    pool_slices: int
    slice_hw: tuple[int, int]
    slices_per_subject: int
    embedded_subjects: int  # subjects the aggregator embeds (all but the seed's training subjects)
    aggregator_subjects: int  # subjects it trains on


def _sizes_from_plan(plan: TrialPlan) -> _Sizes:
    roi = plan.study.cohort.preprocessing.roi
    split = plan.split
    embedded = sum(len(getattr(split, role)) for role in split.ROLES)
    return _Sizes(
        seed_subjects=len(split.seed_positive),
        lesion_slices=plan.n_real_positive,
        pool_slices=plan.n_pool,
        slice_hw=(roi[0], roi[1]),
        slices_per_subject=roi[2],
        embedded_subjects=embedded,
        aggregator_subjects=max(1, len(split.labeled)),
    )


def _cohort_subjects(study: Study) -> int:
    spec = study.cohort
    if spec.source == "phantom":
        return spec.phantom.n_subjects
    if spec.source == "manifest" and spec.manifest is not None:
        try:
            with Path(spec.manifest).open(newline="", encoding="utf-8-sig") as fh:
                return max(1, sum(1 for _ in csv.DictReader(fh)))
        except (OSError, UnicodeDecodeError, csv.Error):
            pass
    return DEFAULT_SUBJECTS


def _sizes_from_values(study: Study, values: Mapping[str, Any], pool_dose: float) -> _Sizes:
    roi = study.cohort.preprocessing.roi
    n = _cohort_subjects(study)
    seed = int(values.get("seed_size", max(1, n // 10)))
    lesion = seed * LESION_SLICES_PER_SUBJECT
    unit = getattr(getattr(study, "protocol", None), "dose_unit", "ratio")
    pool = round(pool_dose) if unit == "slices" else round(pool_dose * lesion)
    return _Sizes(seed, lesion, pool, (roi[0], roi[1]), roi[2], n, max(1, n // 2))


@functools.lru_cache(maxsize=64)
def _forward_flops(stage: str, config_json: str, hw: tuple[int, int]) -> float:
    """FLOPs of one sample's forward pass through ``stage``'s network (counted on the meta device)."""
    import json

    import torch
    from salient.models.configs import DetectorConfig, DiffusionConfig, MaskVAEConfig, UCMTConfig
    from torch.utils.flop_counter import FlopCounterMode

    cfg = json.loads(config_json)
    h, w = hw
    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        if stage == DIFFUSION:
            from salient.models.diffusion import ConditionalDiffusion

            dc = StagesSpec.model_validate({"diffusion": cfg}).diffusion
            assert isinstance(dc, DiffusionConfig)
            model = ConditionalDiffusion(dc)
            scale = 2 if dc.domain == "wavelet" else 1
            x = torch.zeros(1, model.data_channels, h // scale, w // scale)
            one = torch.ones(1)
            model(
                x,
                torch.zeros(1, dtype=torch.long),
                torch.zeros(1, 1, h, w),
                torch.zeros(1, len(dc.neighbour_offsets), h, w),
                one,
                one,
            )
        elif stage == MASK_VAE:
            from salient.models.mask_vae import MaskVAE3D

            vc = StagesSpec.model_validate({"mask_vae": cfg}).mask_vae
            assert isinstance(vc, MaskVAEConfig)
            MaskVAE3D(vc)(torch.zeros(1, 1, *vc.volume_size))
        elif stage == UCMT:
            from salient.models.ucmt import DeepLabV3Plus

            uc = StagesSpec.model_validate({"ucmt": cfg}).ucmt
            assert isinstance(uc, UCMTConfig)
            DeepLabV3Plus(uc)(torch.zeros(1, 1, h, w))
        elif stage == DETECTOR:
            from salient.models.detector import MaskGuidedResNet

            det = StagesSpec.model_validate({"detector": cfg}).detector
            assert isinstance(det, DetectorConfig)
            model = MaskGuidedResNet(det)
            model(torch.zeros(1, model.in_channels, h, w))
        else:
            raise ValueError(f"no network to count for stage {stage!r}")
    return float(counter.get_total_flops())


def _flops(stage: str, stages: StagesSpec, hw: tuple[int, int]) -> float:
    import dataclasses
    import json

    config = getattr(stages, stage)
    return _forward_flops(stage, json.dumps(dataclasses.asdict(config), sort_keys=True, default=list), hw)


def stage_flops(stage: str, stages: StagesSpec, sizes: _Sizes) -> float:
    """Modelled FLOPs of computing one output of ``stage`` (see the module docstring)."""
    hw = sizes.slice_hw
    if stage == MASK_VAE:
        return stages.mask_vae.epochs * max(1, sizes.seed_subjects) * 3 * _flops(MASK_VAE, stages, hw)
    if stage == DIFFUSION:
        d = stages.diffusion
        return d.train_steps * d.batch_size * 3 * _flops(DIFFUSION, stages, hw)
    if stage == UCMT:
        u = stages.ucmt
        return u.train_steps * u.batch_size * (2 * 2 * 3 + 1) * _flops(UCMT, stages, hw)
    if stage == POOL:
        g = stages.diffusion.guidance
        steps = g.sampling_steps if g.sampler == "ddim" else stages.diffusion.timesteps
        return sizes.pool_slices * (steps * 3 * _flops(DIFFUSION, stages, hw) + _flops(UCMT, stages, hw))
    if stage == DETECTOR:
        det = stages.detector
        if getattr(det, "schedule", "epochs") == "matched":
            samples = det.steps * det.batch_size
        else:
            samples = det.epochs * (sizes.lesion_slices + sizes.pool_slices) * (1 + det.neg_per_pos)
        return samples * 3 * _flops(DETECTOR, stages, hw)
    if stage == AGGREGATOR:
        a = stages.aggregator
        embed = sizes.embedded_subjects * sizes.slices_per_subject * _flops(DETECTOR, stages, hw)
        length, d = a.max_len, a.d_model
        transformer = a.layers * length * (24 * d * d + 4 * length * d)
        return embed + a.epochs * sizes.aggregator_subjects * 3 * transformer
    raise ValueError(f"unknown stage {stage!r}")


def _stage_seconds(
    stage: str, stages: StagesSpec, sizes: _Sizes, study: Study, hours: Mapping[str, float]
) -> tuple[float, str]:
    if stage in hours:
        return hours[stage] * 3600.0, "file"
    throughput = GPU_FLOPS if study.resources.for_stage(stage).gpus > 0 else CPU_FLOPS
    return stage_flops(stage, stages, sizes) / throughput, "model"


def node_costs(
    graph: StudyGraph,
    study: Study,
    pool_dose: float,
    cache: StageCache | None = None,
    hours: Mapping[str, float] | None = None,
) -> dict[str, NodeCost]:
    """Seconds of every node on one worker (a trial node: its own stages summed)."""
    hours = dict(hours or {})
    out: dict[str, NodeCost] = {}
    for node in graph.nodes.values():
        out[node.id] = _node_cost(node, study, pool_dose, cache, hours)
    return out


def _node_cost(
    node: Node, study: Study, pool_dose: float, cache: StageCache | None, hours: Mapping[str, float]
) -> NodeCost:
    stages_of_node = TRIAL_STAGES if node.stage == TRIAL else (node.stage,)
    if isinstance(node.info, ParamNodeInfo):
        stages = apply_params(study.stages, node.info.values)
        sizes = _sizes_from_values(study, node.info.values, pool_dose)
        keys: dict[str, Any] = {}
    else:
        plan: TrialPlan = node.info
        stages, sizes, keys = plan.stages, _sizes_from_plan(plan), plan.keys
    total, sources = 0.0, list[str]()
    for stage in stages_of_node:
        if node.stage == TRIAL and stage not in keys and keys:
            continue  # a stage this trial does not have
        measured = _measured(cache, keys.get(stage))
        if measured is not None:
            total, sources = total + measured, [*sources, "measured"]
            continue
        seconds, source = _stage_seconds(stage, stages, sizes, study, hours)
        total, sources = total + seconds, [*sources, source]
    return NodeCost(total, "+".join(sorted(set(sources))) or "model")


def _measured(cache: StageCache | None, key: Any) -> float | None:
    if cache is None or key is None or not cache.has(key):
        return None
    value = cache.meta(key).get("compute_seconds")
    return float(value) if isinstance(value, int | float) and math.isfinite(value) and value >= 0 else None
