"""Every name a result is stored under: metrics, MLflow tags and params, artifacts, study kinds.

The platform writes results under these names and the dashboards read them back, so they are
defined once, here, in the layer that reads them (the platform imports this module; this module
imports nothing). Renaming a metric here renames it on both sides; a literal elsewhere would
silently empty a dashboard panel.

Metric names use ``_p<prevalence>`` (``auprc_p0.05``) because MLflow rejects ``@``.
"""

from __future__ import annotations

import re

__all__ = [
    "ADDED_RATIO",
    "AGGREGATOR_STEPS",
    "ARMS",
    "ARM_LABELS",
    "ARTIFACT_FINDINGS",
    "ARTIFACT_PLAN",
    "ARTIFACT_PREVIEW",
    "ARTIFACT_RESULT",
    "ARTIFACT_RESULTS_CSV",
    "ARTIFACT_SAMPLES",
    "ARTIFACT_SCORES",
    "ARTIFACT_SPLIT",
    "ARTIFACT_STUDY",
    "DETECTOR_STEPS",
    "EXPERIMENT_KIND_TRAINING",
    "KIND_STUDY",
    "N_ADDED",
    "N_ADDED_BLOCKS",
    "N_ADDED_REQUESTED",
    "N_REAL_POSITIVE",
    "PARAM_ARM",
    "PARAM_BOOTSTRAP",
    "PARAM_CI",
    "PARAM_CODE_VERSION",
    "PARAM_COHORT",
    "PARAM_DRAWS",
    "PARAM_GIT",
    "PARAM_MODE",
    "PARAM_OBJECTIVE",
    "PARAM_REPEAT",
    "PARAM_SEED",
    "PARAM_STAGE_CACHE",
    "PARAM_STAGE_KEY_PREFIX",
    "PARAM_STUDY_KEY",
    "PREVALENCE_METRICS",
    "PREVIEW_CONDITION",
    "PROVENANCE_PARAMS",
    "ROLES",
    "SEEN_ADDED_POSITIVE",
    "SEEN_NEGATIVE",
    "SEEN_SEED_POSITIVE",
    "TAG_EXPERIMENT_KIND",
    "TAG_KIND",
    "TAG_PARENT",
    "TAG_PARETO",
    "TAG_PROGRESS",
    "TAG_SPLIT",
    "TAG_STAGES",
    "TAG_STOPPED_EARLY",
    "TAG_STUDY_KEY",
    "TAG_TRIAL_KEY",
    "TRAIN_LOSS_PREFIX",
    "TRAIN_STAGES",
    "VALIDATION_PREFIX",
    "_PREVALENCE_METRIC",
    "is_validation_metric",
    "metric_name",
    "parse_prevalence_metric",
]

# -- metrics ----------------------------------------------------------------------------------

#: Subject-level metrics evaluated at every prevalence.
PREVALENCE_METRICS = ("auprc", "auroc")
#: The two held-out sets: validation selects, test reports. Test metrics carry no prefix.
ROLES = ("validation", "test")
VALIDATION_PREFIX = "val_"
_PREVALENCE_METRIC = re.compile(r"^(auprc|auroc)_p([0-9.eE+-]+)$")


def metric_name(metric: str, prevalence: float | None = None, suffix: str = "", role: str = "test") -> str:
    """``metric_name("auprc", 0.05, "ci_low")`` -> ``"auprc_p0.05_ci_low"``; without a prevalence
    the metric on the whole held-out set (``"auprc"``); ``role="validation"`` prefixes ``val_``."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    base = metric if prevalence is None else f"{metric}_p{prevalence:g}"
    prefix = VALIDATION_PREFIX if role == "validation" else ""
    return prefix + base + (f"_{suffix}" if suffix else "")


def is_validation_metric(name: str) -> bool:
    return name.startswith(VALIDATION_PREFIX)


def parse_prevalence_metric(name: str) -> tuple[str, float] | None:
    """``"auprc_p0.05"`` -> ``("auprc", 0.05)``; None for any other name (validation metrics and
    intervals included)."""
    m = _PREVALENCE_METRIC.match(name)
    return (m.group(1), float(m.group(2))) if m else None


#: A trial's data and compute counts (metrics), so a reader can check what a dose meant.
N_REAL_POSITIVE = "n_real_positive_slices"  # lesion slices of the labeled seed
N_ADDED = "n_added_slices"  # slices the arm added (synthetic pairs, or real ones for the real control)
N_ADDED_REQUESTED = "n_added_requested"  # what the dose asked for (more than N_ADDED: the source ran short)
N_ADDED_BLOCKS = "n_added_blocks"  # distinct lesion blocks (MaskVAE3D draws) the added slices came from
ADDED_RATIO = "added_ratio"  # N_ADDED / N_REAL_POSITIVE: the dose as achieved
DETECTOR_STEPS = "detector_steps"
AGGREGATOR_STEPS = "aggregator_steps"
SEEN_SEED_POSITIVE = "seen_seed_positive"  # slices drawn into batches, by kind
SEEN_ADDED_POSITIVE = "seen_added_positive"
SEEN_NEGATIVE = "seen_negative"
#: Training-loss histories on a trial run: ``train_loss.<stage>``, one value per step or epoch
#: (read back with ``MlflowClient.get_metric_history``; the run's metric is the last value).
TRAIN_LOSS_PREFIX = "train_loss."
TRAIN_STAGES = ("mask_vae", "diffusion", "ucmt", "detector", "aggregator")  # in pipeline order

# -- MLflow tags --------------------------------------------------------------------------------

TAG_PARENT = "mlflow.parentRunId"  # MLflow's own: a trial run's study run
TAG_KIND = "salient.kind"  # on a study run: KIND_STUDY
TAG_STUDY_KEY = "salient.study_key"  # a study run's identity (content hash + code version)
TAG_TRIAL_KEY = "salient.trial_key"  # a trial run's identity (finds it again on resume)
TAG_SPLIT = "salient.split"  # fingerprint of the trial's subject split
TAG_STAGES = "salient.stages"  # JSON: seconds per stage, reused or trained
TAG_PARETO = "salient.pareto"  # guidance tuning: on the Pareto front
TAG_STOPPED_EARLY = "salient.stopped_early"  # guidance tuning: stopped by ASHA

TAG_PROGRESS = "salient.progress"  # on a study run: JSON {done, running, failed, total, eta_seconds, updated}
#: MLflow's own experiment tag that picks the UI's view; the platform's experiments train models
#: (MLflow 3 otherwise opens them in its GenAI view). Values checked in MLflow 3.17's UI bundle.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING = "custom_model_development"

KIND_STUDY = "study"

# -- MLflow params ------------------------------------------------------------------------------

PARAM_STUDY_KEY = "study_key"
PARAM_CODE_VERSION = "code_version"
PARAM_GIT = "git_revision"
PARAM_COHORT = "cohort_fingerprint"
PARAM_OBJECTIVE = "objective"  # study run: the metric selection maximises or minimises
PARAM_MODE = "mode"  # study run: "max" or "min"
PARAM_STAGE_CACHE = "stage_cache"  # study run: where its stage cache lives (for `platform synth`)
PARAM_REPEAT = "repeat"
# study run: what the significance analysis needs to redo itself (evaluation settings, study seed)
PARAM_CI = "ci"
PARAM_BOOTSTRAP = "bootstrap"
PARAM_DRAWS = "prevalence_draws"
PARAM_SEED = "seed"
PARAM_ARM = "arm"  # trial: "synthetic" (the dose curve) or a control arm ("real", "shuffled")
ARMS = ("synthetic", "real", "shuffled")  # display order
ARM_LABELS = {"synthetic": "synthetic pairs", "real": "real control", "shuffled": "shuffled-mask control"}
PARAM_STAGE_KEY_PREFIX = "stage_key."  # trial run: stage_key.<stage> = <stage>/<key>
#: Trial params that record provenance rather than a setting of the trial.
PROVENANCE_PARAMS = (PARAM_STAGE_KEY_PREFIX, PARAM_GIT, PARAM_CODE_VERSION, PARAM_COHORT)

# -- artifacts ------------------------------------------------------------------------------------

ARTIFACT_RESULT = "trial_result.json"  # a trial's metrics, params, stage keys and events
ARTIFACT_PLAN = "plan.json"  # a trial's fully resolved plan (configs, split sizes, stage keys)
ARTIFACT_SAMPLES = "samples.png"  # synthetic slice | conditioning mask | pseudo-label
ARTIFACT_PREVIEW = "preview.npz"  # slices for the dashboard gallery
#: preview.npz key of the synthetic slices' conditioning masks (MaskVAE3D draws); ``synthetic_mask``
#: beside it is the UCMT pseudo-label the detector trained with.
PREVIEW_CONDITION = "synthetic_condition"
ARTIFACT_SPLIT = "split.json"  # subjects per role (hashed unless opted in)
ARTIFACT_SCORES = "scores.csv"  # every validation and test subject's scores (ids hashed unless opted in)
ARTIFACT_FINDINGS = "findings.json"  # the study run's significance analysis
ARTIFACT_STUDY = "study.resolved.yaml"  # the study run's resolved study
ARTIFACT_RESULTS_CSV = "results.csv"  # the study run's table of finished trials
