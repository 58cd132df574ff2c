"""Typed, frozen objects a study file is parsed into (nnU-Net style: plan once, then execute).

Nothing downstream reads YAML: the loader (:mod:`salient.platform.study.loader`) turns a file into
a :class:`Study`, and every stage receives the already validated pieces.
"""

from __future__ import annotations

import builtins
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from salient.models.configs import (
    AggregatorConfig,
    DetectorConfig,
    DiffusionConfig,
    MaskVAEConfig,
    UCMTConfig,
)
from salient.platform.stages import STAGE_NAMES

__all__ = [
    "GENERATOR_NAME_PATTERN",
    "CohortSpec",
    "EvaluationSpec",
    "LimitsSpec",
    "ParamSpec",
    "PhantomSpec",
    "PreprocessSpec",
    "ProtocolSpec",
    "RayClusterSpec",
    "ResourceSpec",
    "SamplerSpec",
    "StageResources",
    "StagesSpec",
    "Study",
    "TrackingSpec",
    "TuningSpec",
    "TuningWeights",
]

SAMPLERS = ("grid", "random", "tpe", "gp", "cmaes", "nsga2")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

#: A random seed: what numpy's ``RandomState`` and Optuna's samplers accept.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1, description="random seed, 0 to 2**32 - 1")]


class Frozen(BaseModel):
    # allow_inf_nan=False: every number in a study is finite (YAML's .nan and .inf are refused
    # with their key path); values typed Any are checked by the model that holds them.
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True, allow_inf_nan=False)


def first_non_finite(value: Any, where: str = "") -> str | None:
    """Where in ``value`` (a scalar or nested lists/tuples/dicts) the first NaN or infinity is,
    as a suffix such as ``"[2]"`` (``""`` for ``value`` itself); None when every number is finite."""
    if isinstance(value, float) and not math.isfinite(value):
        return where
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if (found := first_non_finite(item, f"{where}[{i}]")) is not None:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            if (found := first_non_finite(item, f"{where}.{key}")) is not None:
                return found
    return None


class PhantomSpec(Frozen):
    """The built-in synthetic cohort (see :mod:`salient.platform.cohort.phantom`)."""

    n_subjects: int = Field(96, ge=4, description="subjects in the cohort")
    n_positive: int = Field(24, ge=2, description="subjects with a mediastinal hematoma")
    shape: tuple[int, int, int] = Field((64, 64, 24), description="voxels (x, y, z)")
    spacing: tuple[float, float, float] = Field((6.0, 6.0, 8.0), description="mm (x, y, z)")
    seed: Seed = 0

    @model_validator(mode="after")
    def _check(self) -> PhantomSpec:
        if self.n_positive >= self.n_subjects:
            raise ValueError(f"n_positive ({self.n_positive}) must be smaller than n_subjects ({self.n_subjects})")
        if min(self.shape[:2]) < 32 or self.shape[2] < 8:
            raise ValueError(f"shape must be at least (32, 32, 8) voxels, got {self.shape}")
        if min(self.spacing) <= 0:
            raise ValueError(f"spacing must be positive, got {self.spacing}")
        return self


class PreprocessSpec(Frozen):
    """MONAI preprocessing applied to every volume (paper 3.1).

    Volumes are reoriented to RAS, resampled to ``spacing`` mm, windowed to ``hu_window`` and
    scaled to [-1, 1], then centre-cropped/padded to ``roi`` voxels (x, y, z) around the
    mediastinum. ``roi`` x and y must be even: the Haar DWT halves them.
    """

    spacing: tuple[float, float, float] = (6.0, 6.0, 8.0)
    hu_window: tuple[float, float] = (-160.0, 240.0)
    roi: tuple[int, int, int] = (48, 48, 24)

    @model_validator(mode="after")
    def _check(self) -> PreprocessSpec:
        if min(self.spacing) <= 0:
            raise ValueError(f"spacing must be positive, got {self.spacing}")
        if self.hu_window[0] >= self.hu_window[1]:
            raise ValueError(f"hu_window must be (low, high) with low < high, got {self.hu_window}")
        if self.roi[0] % 2 or self.roi[1] % 2 or min(self.roi) < 4:
            raise ValueError(f"roi x and y must be even and every size >= 4, got {self.roi}")
        return self


class CohortSpec(Frozen):
    """Which cohort a study runs on: the built-in phantom, a manifest of NIfTI files, an nnU-Net v2
    raw dataset or a Medical Segmentation Decathlon task (see :mod:`salient.platform.cohort.dataset`).

    For ``nnunet``/``msd`` the lesion is one label id of the multi-label maps (``lesion_label``,
    an id or a name from dataset.json's ``labels``; optional when dataset.json has exactly one
    foreground label); every other label is ignored. A case is positive when its label map
    contains the lesion label, and its mask is ``label == lesion_label``.
    """

    source: Literal["phantom", "manifest", "nnunet", "msd"] = "phantom"
    manifest: Path | None = None
    dataset: Path | None = Field(None, description="nnunet/msd: the DatasetNNN_Name or TaskNN_Name folder")
    lesion_label: int | str | None = Field(
        None, description="nnunet/msd: the lesion's label id, or its name in dataset.json labels"
    )
    channel: int | str = Field(0, description="nnunet/msd: the image channel used, an index or its name")
    negatives: Literal["include", "exclude"] = Field(
        "include", description="nnunet/msd: cases without the lesion label are negatives (include) or left out"
    )
    max_voxels: int | None = Field(
        None, ge=1, description="voxels a NIfTI header may claim (default $SALIENT_MAX_VOXELS, else 1024**3)"
    )
    phantom: PhantomSpec = PhantomSpec()
    preprocessing: PreprocessSpec = PreprocessSpec()

    @field_validator("lesion_label", "channel", mode="before")
    @classmethod
    def _label_or_name(cls, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, bool):  # YAML `yes`/`true` is not a label id
            raise ValueError(f"{info.field_name} must be an integer id or a name, got {v!r}")
        if isinstance(v, str):
            v = v.strip()
            if not v:
                raise ValueError(f"{info.field_name} must not be empty")
            if v.isascii() and v.isdigit():  # "2" from a command line is the id 2
                return int(v)
        return v

    @model_validator(mode="after")
    def _check(self) -> CohortSpec:
        if self.source == "manifest" and self.manifest is None:
            raise ValueError("source 'manifest' needs cohort.manifest (a labels CSV)")
        if self.source != "manifest" and self.manifest is not None:
            raise ValueError(f"cohort.manifest is set but source is {self.source!r}; set source: manifest to use it")
        if self.source in ("nnunet", "msd") and self.dataset is None:
            raise ValueError(f"source {self.source!r} needs cohort.dataset (the dataset folder with dataset.json)")
        if self.source not in ("nnunet", "msd"):
            for name in ("dataset", "lesion_label", "channel", "negatives"):
                if getattr(self, name) != CohortSpec.model_fields[name].default:
                    raise ValueError(
                        f"cohort.{name} applies to source nnunet or msd, not {self.source!r} "
                        f"(got {getattr(self, name)!r})"
                    )
        if isinstance(self.lesion_label, int) and self.lesion_label < 1:
            raise ValueError(f"lesion_label must be >= 1 (0 is background), got {self.lesion_label}")
        if isinstance(self.channel, int) and self.channel < 0:
            raise ValueError(f"channel must be >= 0, got {self.channel}")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Fields added with the nnunet/msd sources are left out at their defaults, so a phantom or
        # manifest study dumps - and hashes (study key, tuning key) - exactly as before they existed.
        data: dict[str, Any] = handler(self)
        for name in _COHORT_FIELDS_SINCE_DATASETS:
            if name in data and getattr(self, name) == CohortSpec.model_fields[name].default:
                del data[name]
        return data

    def describe(self) -> str:
        """One line for the console: the source and where it is."""
        if self.source == "phantom":
            p = self.phantom
            return f"phantom ({p.n_subjects} subjects, {p.n_positive} positive, seed {p.seed})"
        if self.source == "manifest":
            return f"manifest {self.manifest}"
        label = "the only foreground label" if self.lesion_label is None else f"label {self.lesion_label!r}"
        return f"{self.source} {self.dataset} (lesion: {label}; channel {self.channel!r}; negatives {self.negatives})"


_COHORT_FIELDS_SINCE_DATASETS = ("dataset", "lesion_label", "channel", "negatives", "max_voxels")


class StagesSpec(Frozen):
    """Resolved model configuration of every stage (preset + the study's overrides)."""

    preset: Literal["tiny", "full"] = "tiny"
    mask_vae: MaskVAEConfig = MaskVAEConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    ucmt: UCMTConfig = UCMTConfig()
    detector: DetectorConfig = DetectorConfig()
    aggregator: AggregatorConfig = AggregatorConfig()


class ParamSpec(Frozen):
    """One search-space entry: exactly one of grid/choice/uniform/loguniform/int, plus options.

    ``grid`` values are swept exhaustively (expanded in Python); the others are sampled by the
    study's Optuna sampler. ``when`` makes the entry conditional on other entries' values, e.g.
    ``when: {diffusion.guidance.nei_schedule: [exponential]}``.
    """

    grid: tuple[Any, ...] | None = None
    choice: tuple[Any, ...] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    int: tuple[builtins.int, builtins.int] | None = None  # field named after the YAML key
    step: float | None = None
    when: dict[str, tuple[Any, ...]] | None = None

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        kinds = [k for k in ("grid", "choice", "uniform", "loguniform", "int") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                f"an entry needs exactly one of grid, choice, uniform, loguniform, int; got {kinds or 'none'}"
            )
        kind = kinds[0]
        values = getattr(self, kind)
        if kind in ("grid", "choice") and len(values) == 0:
            raise ValueError(f"{kind} needs at least one value")
        if kind in ("grid", "choice"):
            for i, v in enumerate(values):
                if (at := first_non_finite(v)) == "":
                    raise ValueError(f"{kind}[{i}] must be a finite number (not .nan or .inf), got {v!r}")
                if at is not None:
                    raise ValueError(f"{kind}[{i}] must hold finite numbers only (not .nan or .inf): {kind}[{i}]{at}")
        if kind in ("grid", "choice") and len({repr(v) for v in values}) != len(values):
            raise ValueError(f"{kind} values must be distinct, got {list(values)}")
        for cond, allowed in (self.when or {}).items():
            if first_non_finite(allowed) is not None:
                raise ValueError(f"when.{cond} values must be finite (no .nan or .inf), got {list(allowed)}")
        if kind in ("uniform", "loguniform", "int") and not values[0] < values[1]:
            raise ValueError(f"{kind} needs [low, high] with low < high, got {list(values)}")
        if kind == "loguniform" and values[0] <= 0:
            raise ValueError(f"loguniform needs low > 0, got {list(values)}")
        if self.step is not None and (kind not in ("uniform", "int") or self.step <= 0):
            raise ValueError(f"step must be > 0 and only with uniform or int, got step={self.step}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("grid", "choice", "uniform", "loguniform", "int") if getattr(self, k) is not None)

    @property
    def is_grid(self) -> bool:
        return self.grid is not None

    def candidate_values(self) -> tuple[Any, ...]:
        """Values to check against the parameter's rules (every grid/choice value, or the bounds)."""
        return tuple(getattr(self, self.kind))


#: Stages whose training can run data-parallel on several workers (Ray Train, DDP).
DATA_PARALLEL_STAGES = ("diffusion", "ucmt")
#: Most data-parallel workers one stage may ask for.
MAX_WORKERS = 1024


def _drop_defaults(model: BaseModel, data: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """Leave fields added after studies were first hashed out of a dump while they hold their
    default, so existing studies keep their keys (as :class:`CohortSpec` does)."""
    for name in names:
        if name in data and getattr(model, name) == type(model).model_fields[name].default:
            del data[name]
    return data


class SamplerSpec(Frozen):
    """How sampled (non-grid) search-space entries are drawn."""

    name: Literal["grid", "random", "tpe", "gp", "cmaes", "nsga2"] = "grid"
    n_trials: int = Field(1, ge=1, description="sampled configurations per grid cell and repeat")
    seed: Seed = 0
    #: the objective: a validation metric (selection never sees the test set), e.g. val_auprc_p0.05
    metric: str = "val_auprc"
    mode: Literal["max", "min"] = "max"
    #: ``asha``: stop poor draws early (Tune's ASHA); needs an objective reported before a trial
    #: ends (see salient.platform.tune_adapter.check_scheduler)
    scheduler: Literal["fifo", "asha"] = "fifo"

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _drop_defaults(self, handler(self), ("scheduler",))


class EvaluationSpec(Frozen):
    """Subject-level evaluation; prevalence is an evaluation property (no extra training).

    Selection (the sampler's objective, the best configuration per cell, the therapeutic dose)
    uses the validation subjects; the test subjects only report (see the README's protocol).
    ``ci`` is the confidence level of every interval; intervals of a dose's gain over 0x are
    Bonferroni-adjusted for the number of doses on its curve.
    """

    prevalences: tuple[float, ...] = (0.01, 0.02, 0.03, 0.04, 0.05)
    test_fraction: float = Field(0.5, gt=0, lt=1, description="share of the cohort held out for testing")
    validation_fraction: float = Field(
        0.25, gt=0, lt=1, description="share of the non-test subjects held out for selection (validation)"
    )
    prevalence_draws: int = Field(10, ge=1, description="seeded subsamples averaged per prevalence")
    bootstrap: int = Field(1000, ge=0, description="bootstrap replicates of every interval")
    ci: float = Field(0.95, gt=0, lt=1)
    tvr_prevalence: float = Field(0.04, gt=0, lt=1, description="prevalence each TVR stratum is evaluated at")
    aggregator_folds: int = Field(
        5, ge=2, description="cross-fitting folds of the aggregator over the validation subjects"
    )

    @field_validator("prevalences")
    @classmethod
    def _prevalences(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v:
            raise ValueError("needs at least one prevalence")
        for p in v:
            if not 0.0 < p < 1.0:
                raise ValueError(f"every prevalence must be in (0, 1), got {p}")
        return v


class StageResources(Frozen):
    """What one stage's task asks for.

    ``workers`` > 1 trains the stage data-parallel (Ray Train's TorchTrainer, DDP; diffusion and
    ucmt only): ``cpus``/``gpus`` are then per worker, and the config's ``batch_size`` is the
    global batch, split evenly over the workers (it must be divisible by ``workers``).
    """

    cpus: float = Field(1.0, gt=0, le=1e6)
    gpus: float = Field(0.0, ge=0, le=1e4)
    workers: int = Field(1, ge=1, le=MAX_WORKERS, description="data-parallel workers (diffusion, ucmt)")

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _drop_defaults(self, handler(self), ("workers",))


class ResourceSpec(Frozen):
    """Resources. ``cpus``/``gpus``: what each stage asks for unless ``stages`` overrides it for
    that stage (e.g. GPUs for diffusion, ``workers`` for data-parallel training).

    ``scheduling``: ``graph`` (default) runs the study as a stage graph - each distinct generator
    stage output once, as its own Ray task with its own request, as soon as its inputs exist;
    dose trials when their pool exists (:mod:`salient.platform.graph`). ``trial`` is the former
    scheme, one task per trial running all its stages with the largest request, trials sharing a
    generator waiting on its lock (kept for comparison, see benchmarks/orchestration_overhead.py).
    ``max_concurrent`` caps the tasks running at once on a local Ray (and Tune trials of sampled
    searches); on a cluster the cluster's resources bound the graph.
    """

    cpus: float = Field(1.0, gt=0, le=1e6)
    gpus: float = Field(0.0, ge=0, le=1e4)
    max_concurrent: int = Field(2, ge=1)
    stages: dict[str, StageResources] = {}
    retries: int = Field(2, ge=0, description="times a failed task is retried (from the stage cache and checkpoints)")
    scheduling: Literal["graph", "trial"] = "graph"

    @field_validator("stages")
    @classmethod
    def _stage_names(cls, v: dict[str, StageResources]) -> dict[str, StageResources]:
        if unknown := sorted(set(v) - set(STAGE_NAMES)):
            raise ValueError(f"unknown stage(s) {unknown}; stages: {list(STAGE_NAMES)}")
        for name, res in v.items():
            if res.workers > 1 and name not in DATA_PARALLEL_STAGES:
                raise ValueError(
                    f"stages.{name}.workers: only {list(DATA_PARALLEL_STAGES)} train data-parallel, got {res.workers}"
                )
        return v

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _drop_defaults(self, handler(self), ("scheduling",))

    def for_stage(self, stage: str) -> StageResources:
        return self.stages.get(stage, StageResources(cpus=self.cpus, gpus=self.gpus))

    def per_trial(self) -> StageResources:
        """What one trial asks for: it runs all its stages in one process, so the largest request."""
        res = [self.for_stage(s) for s in STAGE_NAMES]
        return StageResources(cpus=max(r.cpus for r in res), gpus=max(r.gpus for r in res))


#: A registered model name for a generator (MLflow Model Registry): letters, digits, '_', '-', '.'.
GENERATOR_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


class TrackingSpec(Frozen):
    uri: str | None = Field(None, description="MLflow tracking URI; default: embedded SQLite store")
    experiment: str | None = None
    log_subject_ids: bool = Field(
        False, description="log raw subject ids and the manifest path (default: sha256 ids, file name only)"
    )
    log_real_images: bool = Field(
        False, description="log real lesion slices of a manifest cohort in trial previews (phantom: always)"
    )
    register_generator: str | None = Field(
        None,
        pattern=GENERATOR_NAME_PATTERN,
        description="register each trained generator in the MLflow Model Registry under this name "
        "(then: platform synth --generator models:/NAME/VERSION)",
    )

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Left out when unset, so studies without it dump (and hash: tuning key) exactly as before.
        data: dict[str, Any] = handler(self)
        if self.register_generator is None:
            data.pop("register_generator", None)
        return data


class TuningWeights(Frozen):
    """Weights of the guidance-tuning score (see :class:`TuningSpec`)."""

    mask_dice: float = Field(1.0, ge=0)
    frechet: float = Field(0.5, ge=0)
    band_energy: float = Field(0.5, ge=0)
    cost: float = Field(0.25, ge=0)


class TuningSpec(Frozen):
    """Guidance auto-tuning (``kind: guidance_tuning``): held-out slices, early stopping, scalarisation.

    Each configuration is first scored on ``first_rung_slices`` held-out lesion slices; only the
    better half (ASHA, reduction factor 2) continues to all ``eval_slices``. The single pick
    maximises ``score = weights.mask_dice * Dice - weights.frechet * FD / FD0
    - weights.band_energy * B / B0 - weights.cost * NFE / NFE0`` where 0 marks the default
    guidance on the same slices; the Pareto front over (Dice up, FD down, B down, NFE down) is
    reported alongside.
    """

    held_out_fraction: float = Field(0.34, gt=0, lt=1, description="positives held out from generator training")
    eval_slices: int = Field(24, ge=2, description="held-out lesion slices a surviving configuration is scored on")
    first_rung_slices: int = Field(6, ge=1, description="slices every configuration is scored on first")
    weights: TuningWeights = TuningWeights()
    sampling_seed: Seed = 0

    @model_validator(mode="after")
    def _check(self) -> TuningSpec:
        if self.first_rung_slices >= self.eval_slices:
            raise ValueError(
                f"first_rung_slices ({self.first_rung_slices}) must be smaller than eval_slices ({self.eval_slices})"
            )
        return self


#: The highest ``limits.max_trials`` a study may set: the plan holds one small object per trial, so
#: even a raised cap keeps ``validate`` within seconds and megabytes.
MAX_TRIALS_CEILING = 100_000


class LimitsSpec(Frozen):
    """Caps on the size of a study's plan, checked by counting before anything is expanded
    (:mod:`salient.platform.study.plan_size`): a grid of a million values or ``repeats: 1000000000``
    is refused with its count instead of being built. Not part of the study's identity: raising a
    cap does not change the study key, so a study resumes after its cap is raised."""

    max_trials: int = Field(
        10_000, ge=1, le=MAX_TRIALS_CEILING, description="detector trainings the plan may hold (grid x repeats x draws)"
    )
    max_values: int = Field(1_000, ge=1, le=MAX_TRIALS_CEILING, description="values one grid or choice list may hold")


class RayClusterSpec(Frozen):
    address: str | None = Field(None, description="'auto' or HOST:PORT of a running Ray head")


#: Control arms a study may add beside its dose curve (see :class:`ProtocolSpec`).
REAL_ARM, SHUFFLED_ARM = "real", "shuffled"
CONTROL_ARMS = (REAL_ARM, SHUFFLED_ARM)
#: The arm of the dose curve itself: synthetic pairs from the study's generator.
SYNTHETIC_ARM = "synthetic"


class ProtocolSpec(Frozen):
    """How doses are stated and which controls run beside the dose curve.

    ``dose_unit``: ``ratio`` (default): a dose d adds ``round(d x L)`` synthetic lesion slices, L
    = the lesion slices of the labeled seed; ``slices``: a dose d adds d slices.
    ``controls``: for every dose > 0 (or each of ``control_doses``), ``real`` (positive control)
    adds the same number of *real* lesion slices from training positives outside the seed (where
    the cohort has that many), and
    ``shuffled`` (negative control) adds the same synthetic slices with their masks shuffled
    against the images. Both share the 0x detector of their seed size and repeat.
    ``min_pair_dice``: see the field.
    """

    dose_unit: Literal["ratio", "slices"] = "ratio"
    controls: tuple[Literal["real", "shuffled"], ...] = ()
    #: the doses the controls run at (each a dose > 0 of the grid); empty: every dose > 0. A control
    #: costs a detector per dose, seed size and repeat: a benchmark on a budget runs them where
    #: they are most telling.
    control_doses: tuple[Annotated[float, Field(gt=0)], ...] = ()
    #: a synthetic pair is kept only if its UCMT pseudo-label overlaps its conditioning mask with
    #: at least this Dice. 0.5: the label must cover most of where the lesion was synthesised (at
    #: 0.5 at least a third of the union is shared); a lower value lets a detector learn lesions
    #: where the image has none. 0 turns the check off (every pair is kept, even one whose label
    #: is empty).
    min_pair_dice: float = Field(0.5, ge=0, le=1)
    #: a synthetic lesion mask is put only where at least ``placement_share`` of its voxels fall on
    #: host tissue between these HU (null: anywhere). (-130, 20): fat and fluid-like tissue - the
    #: mediastinal fat a hematoma displaces - not lung or air, not enhanced vessels, heart or bone.
    #: Without it, 20-45% of the masks a MaskVAE3D draws for one torso fall partly on another's
    #: lung or heart (tests/platform/test_generator_signal.py).
    placement_hu: tuple[float, float] | None = (-130.0, 20.0)
    placement_share: float = Field(0.9, gt=0, le=1)

    @field_validator("placement_hu")
    @classmethod
    def _ordered(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not v[0] < v[1]:
            raise ValueError(f"placement_hu must be (low, high) with low < high, got {list(v)}")
        return v

    @field_validator("controls")
    @classmethod
    def _distinct(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError(f"controls must be distinct, got {list(v)}")
        return v


class Study(Frozen):
    """A validated study: everything `platform run` needs, with the search space resolved."""

    name: str
    kind: Literal["dose_response", "guidance_tuning"] = "dose_response"
    description: str = ""
    seed: Seed = 0
    source_file: Path | None = None
    guidance_profile: Path | None = None  # resolved from ``guidance: {profile: PATH}``
    cohort: CohortSpec = CohortSpec()
    stages: StagesSpec = StagesSpec()
    search_space: dict[str, ParamSpec] = {}
    sampler: SamplerSpec = SamplerSpec()
    repeats: int = Field(1, ge=1)
    evaluation: EvaluationSpec = EvaluationSpec()
    protocol: ProtocolSpec = ProtocolSpec()
    resources: ResourceSpec = ResourceSpec()
    tracking: TrackingSpec = TrackingSpec()
    ray: RayClusterSpec = RayClusterSpec()
    tuning: TuningSpec = TuningSpec()
    # exclude: limits are a guard, not content (dumps and every hash of the study leave them out)
    limits: LimitsSpec = Field(LimitsSpec(), exclude=True)
    output_dir: Path = Path("salient_runs")

    @property
    def results_dir(self) -> Path:
        """``OUTPUT_DIR/studies/NAME``: this study's own result files (``results.csv``,
        ``findings.json``). Studies may share an output folder (and so its stage cache, e.g. a
        pixel-space arm reusing the 0x detectors of a wavelet study); their results must not
        overwrite each other."""
        return self.output_dir / "studies" / self.name

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(
                "name must be 1-64 characters of letters, digits, '_', '.', '-' "
                f"starting with a letter or digit, got {v!r}"
            )
        return v
