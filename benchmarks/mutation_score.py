"""Mutation score of the modules whose bugs would change a scientific answer (issue #19).

A passing test suite says little about whether it would notice a wrong number: a mutation
audit of the platform once found that 9 of 16 deliberate bugs in evaluation, splits and the
stage cache passed every test. This script measures it continuously: mutmut makes many small
deliberate bugs (flipped comparisons, swapped operators, constants +-1, dropped calls, changed
return values) in each chosen module, runs the most relevant tests against each one, and prints
per module how many were killed (a test failed), survived (every test passed), timed out
(counted as killed, shown apart) or had no test executing them (counted as survived).

mutmut 3 copies the project into ``mutants/`` and imports the mutated copy by module name. This
repository maps ``salient.platform`` -> ``platform/`` (and so on) with ``package-dir``, which
mutmut cannot follow, so the script first lays out a *snapshot* of the repository in a
temporary folder with the packages at ``salient/platform``, ``salient/models`` ...; it never
writes into the working tree (others are editing it). Slow (minutes per module) and not part of
CI:

    python benchmarks/mutation_score.py --modules evaluation splits          # working tree
    python benchmarks/mutation_score.py --max-mutants 40 --jobs 1            # every module, a sample
    python benchmarks/mutation_score.py --ref HEAD --modules stage_cache     # a commit instead
    python benchmarks/mutation_score.py --modules splits --keep /tmp/m       # then: cd /tmp/m; mutmut browse
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest depends on tomli before 3.11
    import tomli as tomllib

__all__ = ["EQUIVALENT", "MODULES", "ModuleScore", "Mutant", "main", "score_modules"]

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]

#: Module -> the tests that pin its rules. Short names are accepted on the command line.
MODULES: dict[str, tuple[str, ...]] = {
    "salient.models.metrics": ("tests/models/test_metrics.py",),  # image metrics (Dice, MS-SSIM, Frechet)
    "salient.dashboards.stats": ("tests/dashboards/test_stats.py", "tests/platform/test_evaluation.py"),
    "salient.dashboards.analysis": ("tests/dashboards/test_analysis.py",),
    "salient.dashboards.significance": (  # paired gains, dose decisions
        "tests/dashboards/test_significance.py",
        "tests/dashboards/test_significance_rules.py",
    ),
    "salient.platform.stages.scoring": ("tests/platform/test_scoring.py",),  # per-subject scores, trial metrics
    "salient.platform.evaluation": ("tests/platform/test_evaluation.py",),
    "salient.platform.splits": ("tests/platform/test_splits.py",),
    "salient.platform.stage_cache": ("tests/platform/test_stage_cache.py",),
}

# mutmut's exit-code verdicts (mutmut.stats.status_by_exit_code in 3.8), folded into the
# columns of the table. Anything else ("suspicious", a segfault) is "other" and is not counted
# as killed: we cannot tell whether the mutant or the machine made the test process die.
_VERDICT = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped"}
_TIMEOUT_CODES = {36, -24, 24, 152, 255}


@dataclass(frozen=True)
class Mutant:
    """One mutant that no test killed: its name and the line it changed."""

    name: str
    removed: str
    added: str
    equivalent_because: str | None = None


@dataclass(frozen=True)
class ModuleScore:
    """Verdicts of the mutants of one module that were run."""

    module: str
    mutants: int
    killed: int
    survived: int
    timeout: int
    no_tests: int
    other: int
    survivors: tuple[Mutant, ...]

    @property
    def equivalent(self) -> int:
        return sum(m.equivalent_because is not None for m in self.survivors)

    @property
    def raw_score(self) -> float:
        """Killed + timed out over every mutant that was run (no-test mutants count as survived)."""
        return (self.killed + self.timeout) / self.mutants if self.mutants else float("nan")

    @property
    def score(self) -> float:
        """As :attr:`raw_score`, leaving out the survivors judged equivalent in :data:`EQUIVALENT`."""
        judged = self.mutants - self.equivalent
        return (self.killed + self.timeout) / judged if judged else float("nan")


#: Surviving mutants judged equivalent: (module, line removed, line added, why no test should
#: kill it). Matched on the changed line (not on mutmut's numbering, which shifts with every
#: edit), so an entry whose line changes stops matching and the mutant is counted again.
EQUIVALENT: tuple[tuple[str, str, str, str], ...] = (
    (
        "salient.platform.evaluation",
        "means, _, _, _ = _at_prevalence(y[keep], s[keep], tvr_prevalence, draws, seed, 0)",
        "means, _, _, _ = _at_prevalence(y[keep], s[keep], tvr_prevalence, draws, seed, None)",
        "the strata's bootstrap replicates are discarded (_): only the means are reported",
    ),
    (
        "salient.platform.evaluation",
        "means, _, _, _ = _at_prevalence(y[keep], s[keep], tvr_prevalence, draws, seed, 0)",
        "means, _, _, _ = _at_prevalence(y[keep], s[keep], tvr_prevalence, draws, seed, 1)",
        "the strata's bootstrap replicates are discarded (_): only the means are reported",
    ),
    (
        "salient.platform.evaluation",
        "y = np.asarray(labels).astype(int)",
        "y = np.asarray(labels).astype(None)",
        "0/1 labels as float64 index, sum and compare the same; the metrics cast them to int themselves",
    ),
    (
        "salient.platform.evaluation",
        "s = np.asarray(scores, dtype=float)",
        "s = np.asarray(scores, dtype=None)",
        "the metrics cast scores to float themselves",
    ),
    (
        "salient.platform.evaluation",
        "s = np.asarray(scores, dtype=float)",
        "s = np.asarray(scores, )",
        "the metrics cast scores to float themselves",
    ),
    (
        "salient.platform.evaluation",
        "n_pos = n_neg = 0",
        "n_pos = n_neg = None",
        "overwritten by the first draw (draws >= 1 is checked)",
    ),
    (
        "salient.platform.evaluation",
        "n_pos = n_neg = 0",
        "n_pos = n_neg = 1",
        "overwritten by the first draw (draws >= 1 is checked)",
    ),
    (
        "salient.platform.evaluation",
        "n_boot = max(bootstrap // draws, 1) if bootstrap else 0",
        "n_boot = max(bootstrap // draws, 2) if bootstrap else 0",
        "only when bootstrap < 2 * draws: the floor of replicates per draw is not a documented rule",
    ),
    (
        "salient.platform.evaluation",
        "boot[k].extend(bootstrap_stats(fn, yy, ss, n_boot, seed * 7919 + d).tolist())",
        "boot[k].extend(bootstrap_stats(fn, yy, ss, n_boot, seed * 7920 + d).tolist())",
        "another seed for the bootstrap: still seeded, still a bootstrap",
    ),
    (
        "salient.platform.evaluation",
        "for name, keep in tvr_strata(np.asarray(tvr, dtype=float), y).items():",
        "for name, keep in tvr_strata(np.asarray(tvr, dtype=None), y).items():",
        "tvr_strata casts to float itself (None -> NaN either way)",
    ),
    (
        "salient.platform.evaluation",
        "for name, keep in tvr_strata(np.asarray(tvr, dtype=float), y).items():",
        "for name, keep in tvr_strata(np.asarray(tvr, ), y).items():",
        "tvr_strata casts to float itself (None -> NaN either way)",
    ),
    (
        "salient.platform.splits",
        'return np.random.default_rng(int.from_bytes(digest[:8], "little"))',
        "return np.random.default_rng(int.from_bytes(digest[:8], ))",
        "another seed from the same digest: splits stay seeded and distinct",
    ),
    (
        "salient.platform.splits",
        'return np.random.default_rng(int.from_bytes(digest[:8], "little"))',
        'return np.random.default_rng(int.from_bytes(digest[:9], "little"))',
        "another seed from the same digest: splits stay seeded and distinct",
    ),
    (
        "salient.platform.splits",
        'raise PlatformError("cohort has duplicate subject ids; run `platform cohort check` on it")',
        'raise PlatformError("XXcohort has duplicate subject ids; run `platform cohort check` on itXX")',
        "the same message with XX around it",
    ),
    (
        "salient.platform.splits",
        "group = sorted(r.subject for r in records if r.label == label)",
        "group = sorted(r.subject for r in records if r.label != label)",
        "the two groups are drawn in the other order: still the fraction of each class",
    ),
    (
        "salient.platform.splits",
        'seed = set(_rng("seed", study_seed, repeat).permutation(eligible)[:seed_size].tolist())',
        "seed = set(_rng(None, study_seed, repeat).permutation(eligible)[:seed_size].tolist())",
        "another name for the seed-draw stream: still keyed by study seed and repeat",
    ),
    (
        "salient.platform.splits",
        'seed = set(_rng("seed", study_seed, repeat).permutation(eligible)[:seed_size].tolist())',
        "seed = set(_rng(study_seed, repeat).permutation(eligible)[:seed_size].tolist())",
        "another name for the seed-draw stream: still keyed by study seed and repeat",
    ),
    (
        "salient.platform.splits",
        'seed = set(_rng("seed", study_seed, repeat).permutation(eligible)[:seed_size].tolist())',
        'seed = set(_rng("XXseedXX", study_seed, repeat).permutation(eligible)[:seed_size].tolist())',
        "another name for the seed-draw stream: still keyed by study seed and repeat",
    ),
    (
        "salient.platform.splits",
        'seed = set(_rng("seed", study_seed, repeat).permutation(eligible)[:seed_size].tolist())',
        'seed = set(_rng("SEED", study_seed, repeat).permutation(eligible)[:seed_size].tolist())',
        "another name for the seed-draw stream: still keyed by study seed and repeat",
    ),
    (
        "salient.platform.splits",
        'text = "|".join(",".join(getattr(self, role)) for role in self.ROLES)',
        'text = "XX|XX".join(",".join(getattr(self, role)) for role in self.ROLES)',
        "another role separator: the fingerprint still tells roles apart",
    ),
    (
        "salient.platform.splits",
        'text = "|".join(",".join(getattr(self, role)) for role in self.ROLES)',
        'text = "|".join("XX,XX".join(getattr(self, role)) for role in self.ROLES)',
        "another subject separator: the fingerprint still tells subjects apart",
    ),
    (
        "salient.platform.splits",
        "return hashlib.sha256(text.encode()).hexdigest()[:16]",
        "return hashlib.sha256(text.encode()).hexdigest()[:17]",
        "a fingerprint one hex digit longer",
    ),
    (
        "salient.platform.stage_cache",
        "return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}",
        "return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(None))}",
        "content_hash sorts keys itself (JSON sort_keys): item order never reaches the key",
    ),
    (
        "salient.platform.stage_cache",
        "return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}",
        "return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[1]))}",
        "content_hash sorts keys itself (JSON sort_keys): item order never reaches the key",
    ),
    (
        "salient.platform.stage_cache",
        "if isinstance(value, float | int | str | bool) or value is None:",
        "if isinstance(value, float | int | str | bool) and value is None:",
        "numbers and strings keyed by their repr: still one key per value",
    ),
    (
        "salient.platform.stage_cache",
        "assert spec is not None and spec.submodule_search_locations is not None",
        "assert spec is not None or spec.submodule_search_locations is not None",
        "a sanity assertion that holds for the real packages either way",
    ),
    (
        "salient.platform.stage_cache",
        "return h.hexdigest()[:12]",
        "return h.hexdigest()[:13]",
        "a code version one hex digit longer",
    ),
    (
        "salient.platform.stage_cache",
        '"stage": stage,',
        '"XXstageXX": stage,',
        "another name for a field of the hashed payload: every input still changes the key",
    ),
    (
        "salient.platform.stage_cache",
        '"stage": stage,',
        '"STAGE": stage,',
        "another name for a field of the hashed payload: every input still changes the key",
    ),
    (
        "salient.platform.stage_cache",
        '"config": _canonical(config),',
        '"XXconfigXX": _canonical(config),',
        "another name for a field of the hashed payload: every input still changes the key",
    ),
    (
        "salient.platform.stage_cache",
        '"config": _canonical(config),',
        '"CONFIG": _canonical(config),',
        "another name for a field of the hashed payload: every input still changes the key",
    ),
    (
        "salient.platform.stage_cache",
        '"data": _canonical(data),',
        '"XXdataXX": _canonical(data),',
        "another name for a field of the hashed payload: every input still changes the key",
    ),
    (
        "salient.platform.stage_cache",
        '"data": _canonical(data),',
        '"DATA": _canonical(data),',
        "another name for a field of the hashed payload: every input still changes the key",
    ),
    (
        "salient.platform.stage_cache",
        '"upstream": [str(u) for u in upstream],',
        '"XXupstreamXX": [str(u) for u in upstream],',
        "another name for a field of the hashed payload: every input still changes the key",
    ),
    (
        "salient.platform.stage_cache",
        '"upstream": [str(u) for u in upstream],',
        '"UPSTREAM": [str(u) for u in upstream],',
        "another name for a field of the hashed payload: every input still changes the key",
    ),
    (
        "salient.platform.stage_cache",
        '"code": CODE_VERSION,',
        '"XXcodeXX": CODE_VERSION,',
        "another name for a field of the hashed payload: every input still changes the key",
    ),
    (
        "salient.platform.stage_cache",
        '"code": CODE_VERSION,',
        '"CODE": CODE_VERSION,',
        "another name for a field of the hashed payload: every input still changes the key",
    ),
    (
        "salient.platform.stage_cache",
        "return StageKey(stage, content_hash(payload, 20))",
        "return StageKey(stage, content_hash(payload, None))",
        "the whole sha256 instead of 20 hex digits",
    ),
    (
        "salient.platform.stage_cache",
        "return StageKey(stage, content_hash(payload, 20))",
        "return StageKey(stage, content_hash(payload, 21))",
        "a key one hex digit longer",
    ),
    (
        "salient.platform.stage_cache",
        "final.parent.mkdir(parents=True, exist_ok=True)",
        "final.parent.mkdir(parents=None, exist_ok=True)",
        "get_or_compute made the stage folder (and its parents) before computing",
    ),
    (
        "salient.platform.stage_cache",
        "final.parent.mkdir(parents=True, exist_ok=True)",
        "final.parent.mkdir(exist_ok=True)",
        "get_or_compute made the stage folder (and its parents) before computing",
    ),
    (
        "salient.platform.stage_cache",
        "final.parent.mkdir(parents=True, exist_ok=True)",
        "final.parent.mkdir(parents=False, exist_ok=True)",
        "get_or_compute made the stage folder (and its parents) before computing",
    ),
    (
        "salient.platform.stage_cache",
        'tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key.key}."))',
        "tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=None))",
        "the temporary folder's name",
    ),
    (
        "salient.platform.stage_cache",
        'tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key.key}."))',
        "tmp = Path(tempfile.mkdtemp(dir=final.parent, ))",
        "the temporary folder's name",
    ),
    (
        "salient.platform.stage_cache",
        '(tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))',
        '(tmp / "meta.json").write_text(json.dumps(meta, indent=None, sort_keys=True))',
        "layout of meta.json (indent, key order), not its content",
    ),
    (
        "salient.platform.stage_cache",
        '(tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))',
        '(tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=None))',
        "layout of meta.json (indent, key order), not its content",
    ),
    (
        "salient.platform.stage_cache",
        '(tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))',
        '(tmp / "meta.json").write_text(json.dumps(meta, sort_keys=True))',
        "layout of meta.json (indent, key order), not its content",
    ),
    (
        "salient.platform.stage_cache",
        '(tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))',
        '(tmp / "meta.json").write_text(json.dumps(meta, indent=1, ))',
        "layout of meta.json (indent, key order), not its content",
    ),
    (
        "salient.platform.stage_cache",
        '(tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))',
        '(tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))',
        "layout of meta.json (indent, key order), not its content",
    ),
    (
        "salient.platform.stage_cache",
        '(tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))',
        '(tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=False))',
        "layout of meta.json (indent, key order), not its content",
    ),
    (
        "salient.platform.stage_cache",
        'fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")',
        "fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=None)",
        "the temporary file's name",
    ),
    (
        "salient.platform.stage_cache",
        'fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")',
        "fd, tmp = tempfile.mkstemp(dir=path.parent, )",
        "the temporary file's name",
    ),
    (
        "salient.platform.stage_cache",
        'fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")',
        'fd, tmp = tempfile.mkstemp(dir=path.parent, suffix="XX.tmpXX")',
        "the temporary file's name",
    ),
    (
        "salient.platform.stage_cache",
        'fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")',
        'fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".TMP")',
        "the temporary file's name",
    ),
    (
        "salient.platform.splits",
        'test = marked_test or _stratified(free, test_fraction, _rng("test", study_seed, repeat))',
        "test = marked_test or _stratified(free, test_fraction, _rng(None, study_seed, repeat))",
        "another name for the test-draw stream: still keyed by study seed and repeat",
    ),
    (
        "salient.platform.splits",
        'test = marked_test or _stratified(free, test_fraction, _rng("test", study_seed, repeat))',
        "test = marked_test or _stratified(free, test_fraction, _rng(study_seed, repeat))",
        "another name for the test-draw stream: still keyed by study seed and repeat",
    ),
    (
        "salient.platform.splits",
        'test = marked_test or _stratified(free, test_fraction, _rng("test", study_seed, repeat))',
        'test = marked_test or _stratified(free, test_fraction, _rng("XXtestXX", study_seed, repeat))',
        "another name for the test-draw stream: still keyed by study seed and repeat",
    ),
    (
        "salient.platform.splits",
        'test = marked_test or _stratified(free, test_fraction, _rng("test", study_seed, repeat))',
        'test = marked_test or _stratified(free, test_fraction, _rng("TEST", study_seed, repeat))',
        "another name for the test-draw stream: still keyed by study seed and repeat",
    ),
    (
        "salient.platform.splits",
        'return test, _stratified(rest, validation_fraction, _rng("validation", study_seed, repeat))',
        "return test, _stratified(rest, validation_fraction, _rng(None, study_seed, repeat))",
        "another name for the validation-draw stream: still keyed by study seed and repeat",
    ),
    (
        "salient.platform.splits",
        'return test, _stratified(rest, validation_fraction, _rng("validation", study_seed, repeat))',
        "return test, _stratified(rest, validation_fraction, _rng(study_seed, repeat))",
        "another name for the validation-draw stream: still keyed by study seed and repeat",
    ),
    (
        "salient.platform.splits",
        'return test, _stratified(rest, validation_fraction, _rng("validation", study_seed, repeat))',
        'return test, _stratified(rest, validation_fraction, _rng("XXvalidationXX", study_seed, repeat))',
        "another name for the validation-draw stream: still keyed by study seed and repeat",
    ),
    (
        "salient.platform.splits",
        'return test, _stratified(rest, validation_fraction, _rng("validation", study_seed, repeat))',
        'return test, _stratified(rest, validation_fraction, _rng("VALIDATION", study_seed, repeat))',
        "another name for the validation-draw stream: still keyed by study seed and repeat",
    ),
    (
        "salient.platform.splits",
        'free = [r for r in records if r.split not in ("train", "unlabeled", "test", "validation")]',
        'free = [r for r in records if r.split not in ("train", "unlabeled", "XXtestXX", "validation")]',
        "subjects marked test are the test set whenever there are any, so never drawn from free",
    ),
    (
        "salient.platform.splits",
        'free = [r for r in records if r.split not in ("train", "unlabeled", "test", "validation")]',
        'free = [r for r in records if r.split not in ("train", "unlabeled", "TEST", "validation")]',
        "subjects marked test are the test set whenever there are any, so never drawn from free",
    ),
    (
        "salient.platform.splits",
        '"evaluation.test_fraction or evaluation.validation_fraction"',
        '"XXevaluation.test_fraction or evaluation.validation_fractionXX"',
        "the wording of the error's advice",
    ),
    (
        "salient.platform.splits",
        '"evaluation.test_fraction or evaluation.validation_fraction"',
        '"EVALUATION.TEST_FRACTION OR EVALUATION.VALIDATION_FRACTION"',
        "the wording of the error's advice",
    ),
    (
        "salient.platform.splits",
        'raise AssertionError(f"{role} subjects leaked into training: {sorted(leaked)[:5]}")',
        'raise AssertionError(f"{role} subjects leaked into training: {sorted(leaked)[:6]}")',
        "the message names six leaked subjects instead of five",
    ),
    (
        "salient.platform.splits",
        'raise AssertionError(f"subjects are both validation and test: {sorted(both)[:5]}")',
        'raise AssertionError(f"subjects are both validation and test: {sorted(both)[:6]}")',
        "the message names six subjects instead of five",
    ),
    (
        "salient.dashboards.stats",
        "y, s = np.atleast_2d(np.asarray(y)).astype(int), np.atleast_2d(np.asarray(s, dtype=float))",
        "y, s = np.atleast_2d(np.asarray(y)).astype(None), np.atleast_2d(np.asarray(s, dtype=float))",
        "0/1 labels as float64 sum, multiply, index and compare as the ints do",
    ),
    (
        "salient.dashboards.stats",
        "y, s = np.asarray(y).astype(int).ravel(), np.asarray(s, dtype=float).ravel()",
        "y, s = np.asarray(y).astype(None).ravel(), np.asarray(s, dtype=float).ravel()",
        "0/1 labels as float64 sum, multiply, index and compare as the ints do",
    ),
    (
        "salient.dashboards.stats",
        'order = np.argsort(-s, kind="mergesort")',
        "order = np.argsort(-s, kind=None)",
        "ties are taken together (thresholds at distinct scores): order within a tie never reaches the metric",
    ),
    (
        "salient.dashboards.stats",
        'order = np.argsort(-s, kind="mergesort")',
        "order = np.argsort(-s, )",
        "ties are taken together (thresholds at distinct scores): order within a tie never reaches the metric",
    ),
    (
        "salient.dashboards.stats",
        'order = np.argsort(-s, kind="mergesort")',
        'order = np.argsort(-s, kind="MERGESORT")',
        "ties are taken together (thresholds at distinct scores): order within a tie never reaches the metric",
    ),
    (
        "salient.dashboards.stats",
        'order = np.argsort(-s, axis=1, kind="mergesort")',
        "order = np.argsort(-s, axis=1, kind=None)",
        "ties are taken together (thresholds at distinct scores): order within a tie never reaches the metric",
    ),
    (
        "salient.dashboards.stats",
        'order = np.argsort(-s, axis=1, kind="mergesort")',
        "order = np.argsort(-s, axis=1, )",
        "ties are taken together (thresholds at distinct scores): order within a tie never reaches the metric",
    ),
    (
        "salient.dashboards.stats",
        'order = np.argsort(-s, axis=1, kind="mergesort")',
        'order = np.argsort(-s, axis=1, kind="MERGESORT")',
        "ties are taken together (thresholds at distinct scores): order within a tie never reaches the metric",
    ),
    (
        "salient.dashboards.stats",
        'order = np.argsort(-s, axis=1, kind="mergesort")',
        'order = np.argsort(-s, kind="mergesort")',
        "numpy's default axis -1 is axis 1 of the (B, n) arrays",
    ),
    (
        "salient.dashboards.stats",
        "y, s = np.take_along_axis(y, order, 1), np.take_along_axis(s, order, 1)",
        "y, s = np.take_along_axis(y, order, ), np.take_along_axis(s, order, 1)",
        "numpy's default axis -1 is axis 1 of the (B, n) arrays",
    ),
    (
        "salient.dashboards.stats",
        "y, s = np.take_along_axis(y, order, 1), np.take_along_axis(s, order, 1)",
        "y, s = np.take_along_axis(y, order, 1), np.take_along_axis(s, order, )",
        "numpy's default axis -1 is axis 1 of the (B, n) arrays",
    ),
    (
        "salient.dashboards.stats",
        "last = np.ones_like(y, dtype=bool)  # the last slot of each run of tied scores is a threshold",
        "last = np.ones_like(y, dtype=None)  # the last slot of each run of tied scores is a threshold",
        "a 0/1 integer mask selects in np.where as the bool one does",
    ),
    (
        "salient.dashboards.stats",
        "last = np.ones_like(y, dtype=bool)  # the last slot of each run of tied scores is a threshold",
        "last = np.ones_like(y, )  # the last slot of each run of tied scores is a threshold",
        "a 0/1 integer mask selects in np.where as the bool one does",
    ),
    (
        "salient.dashboards.stats",
        'with np.errstate(invalid="ignore", divide="ignore"):',
        'with np.errstate(invalid="ignore", divide=None):',
        "no row divides a nonzero by zero (a row without a class has a zero numerator too): only "
        "'invalid' can arise, and it is still ignored",
    ),
    (
        "salient.dashboards.stats",
        'with np.errstate(invalid="ignore", divide="ignore"):',
        'with np.errstate(invalid="ignore", ):',
        "no row divides a nonzero by zero (a row without a class has a zero numerator too): only "
        "'invalid' can arise, and it is still ignored",
    ),
    (
        "salient.dashboards.stats",
        "labels = np.asarray(labels).astype(int)",
        "labels = np.asarray(labels).astype(None)",
        "0/1 labels as float64 sum, multiply, index and compare as the ints do",
    ),
    (
        "salient.dashboards.stats",
        "chosen = np.r_[rng.choice(pos, k * a, replace=False), rng.choice(neg, k * (b - a), replace=False)]",
        "chosen = np.r_[rng.choice(pos, k * a, replace=None), rng.choice(neg, k * (b - a), replace=False)]",
        "Generator.choice reads replace=None as False",
    ),
    (
        "salient.dashboards.stats",
        "chosen = np.r_[rng.choice(pos, k * a, replace=False), rng.choice(neg, k * (b - a), replace=False)]",
        "chosen = np.r_[rng.choice(pos, k * a, replace=False), rng.choice(neg, k * (b - a), replace=None)]",
        "Generator.choice reads replace=None as False",
    ),
    (
        "salient.dashboards.stats",
        "tvr, labels = np.asarray(tvr, float), np.asarray(labels).astype(int)",
        "tvr, labels = np.asarray(tvr, float), np.asarray(labels).astype(None)",
        "0/1 labels as float64 sum, multiply, index and compare as the ints do",
    ),
    (
        "salient.dashboards.significance",
        "return min(d for d, g in zip(doses, gains, strict=True) if math.isclose(g, best, rel_tol=0,"
        " abs_tol=TIE_TOLERANCE))",
        "return min(d for d, g in zip(doses, gains, strict=None) if math.isclose(g, best, rel_tol=0,"
        " abs_tol=TIE_TOLERANCE))",
        "the lengths are checked equal just above",
    ),
    (
        "salient.dashboards.significance",
        "return min(d for d, g in zip(doses, gains, strict=True) if math.isclose(g, best, rel_tol=0,"
        " abs_tol=TIE_TOLERANCE))",
        "return min(d for d, g in zip(doses, gains, ) if math.isclose(g, best, rel_tol=0, abs_tol=TIE_TOLERANCE))",
        "the lengths are checked equal just above",
    ),
    (
        "salient.dashboards.significance",
        "return min(d for d, g in zip(doses, gains, strict=True) if math.isclose(g, best, rel_tol=0,"
        " abs_tol=TIE_TOLERANCE))",
        "return min(d for d, g in zip(doses, gains, strict=False) if math.isclose(g, best, rel_tol=0,"
        " abs_tol=TIE_TOLERANCE))",
        "the lengths are checked equal just above",
    ),
    (
        "salient.dashboards.significance",
        "return min(d for d, g in zip(doses, gains, strict=True) if math.isclose(g, best, rel_tol=0,"
        " abs_tol=TIE_TOLERANCE))",
        "return min(d for d, g in zip(doses, gains, strict=True) if math.isclose(g, best, abs_tol=TIE_TOLERANCE))",
        "gains lie in [-1, 1], where the default rel_tol=1e-9 never exceeds abs_tol=1e-9",
    ),
    (
        "salient.dashboards.significance",
        'val, single = compare("validation", adjust=True), compare("test", adjust=False)',
        'val, single = compare("validation", adjust=True), compare("test", adjust=None)',
        "adjust=None is read as False",
    ),
    (
        "salient.dashboards.significance",
        'order = {"synthetic": 0, "real": 1, "shuffled": 2}',
        'order = {"synthetic": 0, "real": 2, "shuffled": 2}',
        "real and shuffled then tie and fall back to their names, which sort the same way",
    ),
    (
        "salient.dashboards.significance",
        "order.get(f.arm, 3),",
        "order.get(f.arm, 4),",
        "any rank after the controls' puts other arms last",
    ),
    (
        "salient.dashboards.significance",
        "-1.0 if f.prevalence is None else f.prevalence,",
        "-2.0 if f.prevalence is None else f.prevalence,",
        "any key below every prevalence (all > 0) puts the whole set first",
    ),
    (
        "salient.dashboards.significance",
        'return (0, float(seed_size), "")  # type: ignore[arg-type]',
        'return (0, float(seed_size), "XXXX")  # type: ignore[arg-type]',
        "numbers compare by value before this tie-breaker",
    ),
    (
        "salient.dashboards.significance",
        "return (1, 0.0, str(seed_size))",
        "return (2, 0.0, str(seed_size))",
        "only one label ('all': no seed_size column) can be among the seed sizes; labels still sort after numbers",
    ),
    (
        "salient.dashboards.significance",
        "return (1, 0.0, str(seed_size))",
        "return (1, 1.0, str(seed_size))",
        "only one label ('all': no seed_size column) can be among the seed sizes; labels still sort after numbers",
    ),
    (
        "salient.dashboards.significance",
        "return (1, 0.0, str(seed_size))",
        "return (1, 0.0, str(None))",
        "only one label ('all': no seed_size column) can be among the seed sizes; labels still sort after numbers",
    ),
    (
        "salient.dashboards.significance",
        'for seed_size, group in frame.groupby("seed_size", sort=True):',
        'for seed_size, group in frame.groupby("seed_size", ):',
        "pandas groupby sorts by default",
    ),
    (
        "salient.dashboards.significance",
        'for arm, curve in group[group["dose"] > 0].groupby("arm", sort=True):',
        'for arm, curve in group[group["dose"] > 0].groupby("arm", ):',
        "pandas groupby sorts by default",
    ),
    (
        "salient.dashboards.significance",
        "gains, reps, n_subj = [], [], 0",
        "gains, reps, n_subj = [], [], 1",
        "overwritten by the first comparable repeat; a dose without one is skipped",
    ),
    (
        "salient.dashboards.significance",
        'b["label"].to_numpy(int),',
        'b["label"].to_numpy(None),',
        "0/1 labels compare, index and sum the same as floats",
    ),
    (
        "salient.dashboards.significance",
        "b[score].to_numpy(float),",
        "b[score].to_numpy(None),",
        "auprc_rows/auroc_rows cast scores to float themselves",
    ),
    (
        "salient.dashboards.significance",
        "d[score].to_numpy(float),",
        "d[score].to_numpy(None),",
        "auprc_rows/auroc_rows cast scores to float themselves",
    ),
    (
        "salient.dashboards.significance",
        "seed * 1000 + int(repeat) * 100,",
        "seed * 1000 - int(repeat) * 100,",
        "another seed for the prevalence subsets: still seeded, still shared by the dose and its 0x trial",
    ),
    (
        "salient.dashboards.significance",
        "seed * 1000 + int(repeat) * 100,",
        "seed * 1001 + int(repeat) * 100,",
        "another seed for the prevalence subsets: still seeded, still shared by the dose and its 0x trial",
    ),
    (
        "salient.dashboards.significance",
        "seed * 1000 + int(repeat) * 100,",
        "seed * 1000 + int(repeat) * 101,",
        "another seed for the prevalence subsets: still seeded, still shared by the dose and its 0x trial",
    ),
    (
        "salient.dashboards.analysis",
        '"dose": frame["dose"].astype(float),',
        '"dose": frame["dose"].astype(None),',
        "pandas reads astype(None) as float64, the same as astype(float)",
    ),
    (
        "salient.dashboards.analysis",
        '"value": frame[col].astype(float),',
        '"value": frame[col].astype(None),',
        "pandas reads astype(None) as float64, the same as astype(float)",
    ),
    (
        "salient.dashboards.analysis",
        '"ci_low": frame.get(names.metric_name(metric, p, "ci_low"), frame[col]).astype(float),',
        '"ci_low": frame.get(names.metric_name(metric, p, "ci_low"), frame[col]).astype(None),',
        "pandas reads astype(None) as float64, the same as astype(float)",
    ),
    (
        "salient.dashboards.analysis",
        '"ci_high": frame.get(names.metric_name(metric, p, "ci_high"), frame[col]).astype(float),',
        '"ci_high": frame.get(names.metric_name(metric, p, "ci_high"), frame[col]).astype(None),',
        "pandas reads astype(None) as float64, the same as astype(float)",
    ),
    (
        "salient.dashboards.analysis",
        'rows[key]["AUROC"] = f"{g[\'auroc\'].astype(float).mean():.3f}"',
        'rows[key]["AUROC"] = f"{g[\'auroc\'].astype(None).mean():.3f}"',
        "pandas reads astype(None) as float64, the same as astype(float)",
    ),
    (
        "salient.dashboards.analysis",
        'order = frame.sort_values(objective, ascending=not maximise, kind="stable")',
        'order = frame.sort_values(objective, ascending=not maximise, kind="STABLE")',
        "numpy reads the sort kind case-insensitively",
    ),
    (
        "salient.dashboards.analysis",
        'keep = order.drop_duplicates(subset=list(CELL), keep="first").index',
        "keep = order.drop_duplicates(subset=list(CELL), ).index",
        "drop_duplicates keeps the first by default",
    ),
    (
        "salient.dashboards.analysis",
        "def _t_quantile(n: int, level: float = 0.95) -> float:",
        "def _t_quantile(n: int, level: float = 1.95) -> float:",
        "every caller passes its level",
    ),
    (
        "salient.dashboards.analysis",
        'long = pd.concat([long[long["dose"] > 0.0]] + [base.assign(arm=a) for a in arms], ignore_index=True)',
        'long = pd.concat([long[long["dose"] > 0.0]] + [base.assign(arm=a) for a in arms], ignore_index=None)',
        "the rows are only grouped and then indexed by repeat: their index labels never matter",
    ),
    (
        "salient.dashboards.analysis",
        'long = pd.concat([long[long["dose"] > 0.0]] + [base.assign(arm=a) for a in arms], ignore_index=True)',
        'long = pd.concat([long[long["dose"] > 0.0]] + [base.assign(arm=a) for a in arms], )',
        "the rows are only grouped and then indexed by repeat: their index labels never matter",
    ),
    (
        "salient.dashboards.analysis",
        'long = pd.concat([long[long["dose"] > 0.0]] + [base.assign(arm=a) for a in arms], ignore_index=True)',
        'long = pd.concat([long[long["dose"] > 0.0]] + [base.assign(arm=a) for a in arms], ignore_index=False)',
        "the rows are only grouped and then indexed by repeat: their index labels never matter",
    ),
    (
        "salient.dashboards.analysis",
        'for (arm, seed, prev, dose), g in long.groupby(["arm", "seed_size", "prevalence", "dose"], sort=True):',
        'for (arm, seed, prev, dose), g in long.groupby(["arm", "seed_size", "prevalence", "dose"], ):',
        "pandas groupby sorts by default",
    ),
    (
        "salient.dashboards.analysis",
        '"delta": float(paired.mean()) if len(paired) else np.nan,',
        '"delta": float(paired.mean()) if (len(paired)) or True else np.nan,',
        "the mean of an empty Series is NaN too",
    ),
    (
        "salient.dashboards.analysis",
        'frame = frame.sort_values(["arm", "prevalence", "seed_size"], key=natural_order).reset_index(drop=True)',
        'frame = frame.sort_values(["arm", "prevalence", "seed_size"], key=natural_order).reset_index(drop=None)',
        "the old index comes back as a column that frame[columns] leaves out",
    ),
    (
        "salient.dashboards.analysis",
        'frame = frame.sort_values(["arm", "prevalence", "seed_size"], key=natural_order).reset_index(drop=True)',
        'frame = frame.sort_values(["arm", "prevalence", "seed_size"], key=natural_order).reset_index(drop=False)',
        "the old index comes back as a column that frame[columns] leaves out",
    ),
    (
        "salient.dashboards.analysis",
        'first = frame.groupby(["arm", "prevalence"], dropna=False)["therapeutic_dose"].transform(lambda s: s.iloc[0])',
        'first = frame.groupby(["arm", "prevalence"], dropna=None)["therapeutic_dose"].transform(lambda s: s.iloc[0])',
        "pandas reads dropna=None as False: the whole-set findings keep their group",
    ),
    (
        "salient.dashboards.analysis",
        'return col.map(lambda v: (0, float(v), "") if _is_number(v) else (1, 0.0, str(v)))',
        'return col.map(lambda v: (0, float(v), "XXXX") if _is_number(v) else (1, 0.0, str(v)))',
        "numbers compare by value before this tie-breaker",
    ),
    (
        "salient.dashboards.analysis",
        'return col.map(lambda v: (0, float(v), "") if _is_number(v) else (1, 0.0, str(v)))',
        'return col.map(lambda v: (0, float(v), "") if _is_number(v) else (2, 0.0, str(v)))',
        "labels still sort after numbers, by name",
    ),
    (
        "salient.dashboards.analysis",
        'return col.map(lambda v: (0, float(v), "") if _is_number(v) else (1, 0.0, str(v)))',
        'return col.map(lambda v: (0, float(v), "") if _is_number(v) else (1, 1.0, str(v)))',
        "labels still sort after numbers, by name",
    ),
    (
        "salient.dashboards.analysis",
        'long = frame[[*keys, *cols]].melt(id_vars=keys, value_vars=cols, var_name="stratum", value_name=metric)',
        'long = frame[[*keys, *cols]].melt(id_vars=keys, value_vars=None, var_name="stratum", value_name=metric)',
        "the frame holds only the keys and cols: melt takes every other column",
    ),
    (
        "salient.dashboards.analysis",
        'long = frame[[*keys, *cols]].melt(id_vars=keys, value_vars=cols, var_name="stratum", value_name=metric)',
        'long = frame[[*keys, *cols]].melt(id_vars=keys, var_name="stratum", value_name=metric)',
        "the frame holds only the keys and cols: melt takes every other column",
    ),
    (
        "salient.dashboards.analysis",
        'long = long.dropna(subset=[metric]).groupby([*keys, "stratum"], as_index=False)[metric].mean()',
        'long = long.dropna(subset=[metric]).groupby([*keys, "stratum"], as_index=None)[metric].mean()',
        "pandas reads as_index=None as False",
    ),
    (
        "salient.dashboards.analysis",
        'long = long.dropna(subset=[metric]).groupby([*keys, "stratum"], as_index=False)[metric].mean()',
        'long = long.dropna(subset=None).groupby([*keys, "stratum"], as_index=False)[metric].mean()',
        "after the melt only the metric column can be missing",
    ),
    (
        "salient.dashboards.analysis",
        "getattr(row, metric) - base.get((row.seed_size, row.stratum), np.nan) for row in long.itertuples(index=False)",
        "getattr(row, metric) - base.get((row.seed_size, row.stratum), np.nan) for row in long.itertuples(index=None)",
        "rows are read by field name (row.seed_size ...), which an index field in front does not change",
    ),
    (
        "salient.dashboards.analysis",
        "getattr(row, metric) - base.get((row.seed_size, row.stratum), np.nan) for row in long.itertuples(index=False)",
        "getattr(row, metric) - base.get((row.seed_size, row.stratum), np.nan) for row in long.itertuples(index=True)",
        "rows are read by field name (row.seed_size ...), which an index field in front does not change",
    ),
    (
        "salient.dashboards.analysis",
        'table = table.merge(p, on=keys, how="outer")',
        'table = table.merge(p, on=None, how="outer")',
        "the tables share exactly the key columns, which merge then joins on",
    ),
    (
        "salient.dashboards.analysis",
        'table = table.merge(p, on=keys, how="outer")',
        'table = table.merge(p, how="outer")',
        "the tables share exactly the key columns, which merge then joins on",
    ),
    (
        "salient.dashboards.analysis",
        "for r in curves.itertuples(index=False):",
        "for r in curves.itertuples(index=None):",
        "rows are read by field name (row.seed_size ...), which an index field in front does not change",
    ),
    (
        "salient.dashboards.analysis",
        "for r in curves.itertuples(index=False):",
        "for r in curves.itertuples(index=True):",
        "rows are read by field name (row.seed_size ...), which an index field in front does not change",
    ),
    (
        "salient.dashboards.analysis",
        "for row in table.itertuples(index=False):",
        "for row in table.itertuples(index=None):",
        "itertuples reads index=None as False",
    ),
    (
        "salient.dashboards.significance",
        'dose=trials["dose"].astype(float),',
        'dose=trials["dose"].astype(None),',
        "pandas reads astype(None) as float64, the same as astype(float)",
    ),
    (
        "salient.platform.stages.scoring",
        "keep = np.array([r == role for r in self.role], dtype=bool)",
        "keep = np.array([r == role for r in self.role], dtype=None)",
        "a list of Python bools makes a bool array either way",
    ),
    (
        "salient.platform.stages.scoring",
        "keep = np.array([r == role for r in self.role], dtype=bool)",
        "keep = np.array([r == role for r in self.role], )",
        "a list of Python bools makes a bool array either way",
    ),
    (
        "salient.platform.stages.scoring",
        "body = int((subject.image > floor + 1e-6).sum())",
        "body = int((subject.image >= floor + 1e-6).sum())",
        "only a voxel exactly at the tolerance's edge (floor + 1e-6) changes side",
    ),
    (
        "salient.platform.stages.scoring",
        'np.asarray(rows["label"], dtype=int),',
        'np.asarray(rows["label"], dtype=None),',
        "the list holds Python numbers of that type already (labels, subject_tvr's floats, tensor.tolist())",
    ),
    (
        "salient.platform.stages.scoring",
        'np.asarray(rows["label"], dtype=int),',
        'np.asarray(rows["label"], ),',
        "the list holds Python numbers of that type already (labels, subject_tvr's floats, tensor.tolist())",
    ),
    (
        "salient.platform.stages.scoring",
        'np.asarray(rows["tvr"], dtype=float),',
        'np.asarray(rows["tvr"], dtype=None),',
        "the list holds Python numbers of that type already (labels, subject_tvr's floats, tensor.tolist())",
    ),
    (
        "salient.platform.stages.scoring",
        'np.asarray(rows["tvr"], dtype=float),',
        'np.asarray(rows["tvr"], ),',
        "the list holds Python numbers of that type already (labels, subject_tvr's floats, tensor.tolist())",
    ),
    (
        "salient.platform.stages.scoring",
        'np.asarray(rows["score"], dtype=float),',
        'np.asarray(rows["score"], dtype=None),',
        "the list holds Python numbers of that type already (labels, subject_tvr's floats, tensor.tolist())",
    ),
    (
        "salient.platform.stages.scoring",
        'np.asarray(rows["score"], dtype=float),',
        'np.asarray(rows["score"], ),',
        "the list holds Python numbers of that type already (labels, subject_tvr's floats, tensor.tolist())",
    ),
    (
        "salient.platform.stages.scoring",
        'np.asarray(rows["max_slice"], dtype=float),',
        'np.asarray(rows["max_slice"], dtype=None),',
        "the list holds Python numbers of that type already (labels, subject_tvr's floats, tensor.tolist())",
    ),
    (
        "salient.platform.stages.scoring",
        'np.asarray(rows["max_slice"], dtype=float),',
        'np.asarray(rows["max_slice"], ),',
        "the list holds Python numbers of that type already (labels, subject_tvr's floats, tensor.tolist())",
    ),
    (
        "salient.platform.stages.scoring",
        "found = evaluate_subjects(part.label, part.score, ev.prevalences, bootstrap=0, **common)",
        "found = evaluate_subjects(part.label, part.score, ev.prevalences, bootstrap=None, **common)",
        "evaluate_subjects reads a falsy bootstrap as none",
    ),
    (
        "salient.platform.stages.scoring",
        "max_slice = evaluate_subjects(part.label, part.max_slice, ev.prevalences, bootstrap=0, **common)",
        "max_slice = evaluate_subjects(part.label, part.max_slice, ev.prevalences, bootstrap=None, **common)",
        "evaluate_subjects reads a falsy bootstrap as none",
    ),
    (
        "salient.models.metrics",
        "coarsest = size // 2 ** (scales - 1)  # >= kernel also gives size > (kernel-1) * 2**(scales-1)",
        "coarsest = size / 2 ** (scales - 1)  # >= kernel also gives size > (kernel-1) * 2**(scales-1)",
        "kernel is an integer: floor(x) >= kernel exactly when x >= kernel",
    ),
    (
        "salient.models.metrics",
        "coarsest = size // 2 ** (scales - 1)  # >= kernel also gives size > (kernel-1) * 2**(scales-1)",
        "coarsest = size // 2 * (scales - 1)  # >= kernel also gives size > (kernel-1) * 2**(scales-1)",
        "equal at 2 scales; at 3 and 5 scales MONAI's rule (size // 4 or 16 > kernel - 1) is the same test, "
        "at 4 scales (size // 9) a stricter one, and 1 scale never comes (16 px fits 2)",
    ),
    (
        "salient.models.metrics",
        'net = torch.jit.load(path, map_location="cpu")',
        "net = torch.jit.load(path, map_location=None)",
        "on a machine without a GPU (where the tests run) a TorchScript file loads on the CPU either way",
    ),
    (
        "salient.models.metrics",
        'net = torch.jit.load(path, map_location="cpu")',
        "net = torch.jit.load(path, )",
        "on a machine without a GPU (where the tests run) a TorchScript file loads on the CPU either way",
    ),
    (
        "salient.models.metrics",
        'raise ValueError(f"MS-SSIM needs images of at least 16 px, got {size}")',
        "raise ValueError(None)",
        "the message only: ms_ssim refuses sizes < 16 px with its own message before asking for a plan",
    ),
    (
        "salient.models.metrics",
        "size = min(x.shape[-2:])",
        "size = min(x.shape[+2:])",
        "images and attention maps are (B, 1, H, W) tensors: shape[2:] is shape[-2:]",
    ),
    (
        "salient.models.metrics",
        'raise ValueError(f"MS-SSIM needs images of at least 16 px, got {tuple(x.shape[-2:])}")',
        'raise ValueError(f"MS-SSIM needs images of at least 16 px, got {tuple(x.shape[+2:])}")',
        "images and attention maps are (B, 1, H, W) tensors: shape[2:] is shape[-2:]",
    ),
    (
        "salient.models.metrics",
        "m = nn.functional.adaptive_max_pool2d(mask.float(), attention.shape[-2:])",
        "m = nn.functional.adaptive_max_pool2d(mask.float(), attention.shape[+2:])",
        "images and attention maps are (B, 1, H, W) tensors: shape[2:] is shape[-2:]",
    ),
    (
        "salient.models.metrics",
        "for scales in range(5, 0, -1):",
        "for scales in range(5, 1, -1):",
        "every size >= 16 px fits 2 scales (16 > 6 * 2): the loop never reaches 1 scale",
    ),
    (
        "salient.models.metrics",
        "s1, s2 = np.atleast_2d(np.cov(f1, rowvar=False)), np.atleast_2d(np.cov(f2, rowvar=False))",
        "s1, s2 = np.atleast_2d(np.cov(f1, rowvar=None)), np.atleast_2d(np.cov(f2, rowvar=False))",
        "np.cov reads rowvar=None as False",
    ),
    (
        "salient.models.metrics",
        "s1, s2 = np.atleast_2d(np.cov(f1, rowvar=False)), np.atleast_2d(np.cov(f2, rowvar=False))",
        "s1, s2 = np.atleast_2d(np.cov(f1, rowvar=False)), np.atleast_2d(np.cov(f2, rowvar=None))",
        "np.cov reads rowvar=None as False",
    ),
    (
        "salient.models.metrics",
        "p.copy_(torch.randn(p.shape, generator=g) * (2.0 / max(p[0].numel(), 1)) ** 0.5)",
        "p.copy_(torch.randn(p.shape, generator=g) * (2.0 / max(p[1].numel(), 1)) ** 0.5)",
        "p[1] has p[0]'s shape for conv weights and biases alike",
    ),
)


def _resolve_module(name: str) -> str:
    matches = [m for m in MODULES if m == name or m.rsplit(".", 1)[-1] == name]
    if len(matches) != 1:
        raise ValueError(f"--modules: unknown module {name!r}; choose from {sorted(MODULES)} or their last part")
    return matches[0]


def _package_dirs(pyproject: dict) -> dict[str, str]:
    """``salient.platform -> platform`` ... from ``[tool.setuptools] package-dir``."""
    mapping = pyproject.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    if not mapping:
        raise RuntimeError("pyproject.toml has no [tool.setuptools] package-dir: nothing to lay out")
    return {str(k): str(v) for k, v in mapping.items()}


def _snapshot_files(ref: str | None) -> dict[str, bytes]:
    """Relative path -> content: the working tree (tracked and untracked, not ignored), or ``ref``."""
    if ref is None:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            check=True,
            capture_output=True,
        ).stdout.split(b"\0")
        files = {}
        for raw in filter(None, listed):
            rel = raw.decode()
            path = REPO / rel
            if path.is_file() and not path.is_symlink():  # deleted-but-tracked files are skipped
                files[rel] = path.read_bytes()
        return files
    names = subprocess.run(
        ["git", "ls-tree", "-r", "-z", "--name-only", ref], cwd=REPO, check=True, capture_output=True
    ).stdout.split(b"\0")
    return {
        n.decode(): subprocess.run(
            ["git", "show", f"{ref}:{n.decode()}"], cwd=REPO, check=True, capture_output=True
        ).stdout
        for n in filter(None, names)
    }


def _module_path(module: str) -> str:
    """``salient.platform.splits`` -> ``salient/platform/splits.py`` (its path in the snapshot)."""
    return module.replace(".", "/") + ".py"


def lay_out(work: Path, ref: str | None) -> set[str]:
    """Write the snapshot into ``work`` with the packages under ``salient/``; returns the names of
    the other top-level files and folders (studies, search spaces ...)."""
    files = _snapshot_files(ref)
    pyproject = tomllib.loads(files["pyproject.toml"].decode())
    package_dirs = _package_dirs(pyproject)
    # Longest source folder first, so a nested mapping wins over its parent.
    mapping = sorted(((src.rstrip("/") + "/", pkg) for pkg, src in package_dirs.items()), key=lambda x: -len(x[0]))
    top_level = set()
    for rel, content in files.items():
        target = rel
        for src, pkg in mapping:
            if rel.startswith(src):
                target = pkg.replace(".", "/") + "/" + rel[len(src) :]
                break
        else:
            top_level.add(rel.split("/", 1)[0])
        dest = work / target
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(content)
    return top_level


def configure(
    work: Path, modules: Sequence[str], tests: Sequence[str], top_level: set[str], timeout_multiplier: float
) -> None:
    """Append mutmut's configuration to the snapshot's ``pyproject.toml``."""
    # mutmut copies only the source and tests into mutants/: the rest (studies, search spaces ...)
    # must come along for tests that read them.
    also_copy = sorted(t for t in top_level - {"tests", "pyproject.toml"} if not t.startswith("."))
    config = {
        "source_paths": ["salient"],
        "only_mutate": [_module_path(m) for m in modules],
        "also_copy": also_copy,
        "pytest_add_cli_args_test_selection": list(tests),
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-p", "no:randomly"],
        "timeout_multiplier": timeout_multiplier,
    }
    lines = ["", "[tool.mutmut]"] + [f"{k} = {json.dumps(v)}" for k, v in config.items()]
    with (work / "pyproject.toml").open("a") as fh:
        fh.write("\n".join(lines) + "\n")


def _present(work: Path, modules: Sequence[str], strict: bool) -> tuple[list[str], list[str]]:
    """The modules whose source and at least one test file are in the snapshot, and those tests.

    Modules move (the subject-level statistics went from ``salient.models.metrics`` to
    ``salient.dashboards.stats``): a default run skips what the snapshot lacks and says so; a
    module asked for by name must be there.
    """
    kept: list[str] = []
    tests: set[str] = set()
    for m in modules:
        found = [t for t in MODULES[m] if (work / t).is_file()]
        problem = None
        if not (work / _module_path(m)).is_file():
            problem = f"module {m} is not in the snapshot"
        elif not found:
            problem = f"none of the tests of {m} is in the snapshot: {list(MODULES[m])} (commit them, or drop --ref)"
        if problem is not None:
            if strict:
                raise RuntimeError(problem)
            log.warning("skipped: %s", problem)
            continue
        kept.append(m)
        tests.update(found)
    if not kept:
        raise RuntimeError("none of the modules can be scored in this snapshot")
    return kept, sorted(tests)


#: mutmut forks a worker per mutant from a process that has already run torch. Forked, torch's
#: OpenMP pool spins: a 0.3 s test burnt its whole CPU-time limit (13 s) and was reported as a
#: timeout - counted as killed - whatever the mutant did. One thread per worker avoids it.
_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _mutmut(work: Path, args: Sequence[str], timeout_s: float | None) -> int:
    """Run mutmut in ``work`` in its own process group, so an interrupt stops every worker."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mutmut", *args],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, **_ENV},
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    (work / "mutmut.log").open("a").write(out)
    return proc.returncode


def _verdicts(work: Path) -> dict[str, int | None]:
    """Mutant name -> mutmut's exit code, from the ``.meta`` files mutmut writes next to each mutated file."""
    found: dict[str, int | None] = {}
    for meta in (work / "mutants").rglob("*.py.meta"):
        found.update(json.loads(meta.read_text())["exit_code_by_key"])
    return found


def _module_of(mutant: str) -> str:
    """``salient.platform.splits.x_make_split__mutmut_3`` -> ``salient.platform.splits`` (methods
    are named ``module.xǁClassǁmethod__mutmut_N``: the module is still everything before the last dot)."""
    return mutant.rpartition(".")[0]


def _sample(names: Sequence[str], n: int | None) -> list[str]:
    """At most ``n`` names spread evenly over the list (every function gets its share)."""
    ordered = sorted(names, key=lambda s: (s.rsplit("__mutmut_", 1)[0], int(s.rsplit("_", 1)[1])))
    if n is None or len(ordered) <= n:
        return ordered
    step = len(ordered) / n
    return [ordered[int(i * step)] for i in range(n)]


def score_modules(
    modules: Sequence[str],
    *,
    max_mutants: int | None,
    jobs: int,
    ref: str | None,
    timeout_multiplier: float,
    keep: Path | None,
    time_limit_s: float | None,
    strict: bool = True,
) -> list[ModuleScore]:
    """Run mutmut on ``modules`` (full names) in a snapshot of the repository; one score per module.

    The snapshot lives in a temporary folder that is removed afterwards, or in ``keep``. With
    ``strict`` False, modules (or their tests) missing from the snapshot are skipped, not an error.
    """
    work = keep if keep is not None else Path(tempfile.mkdtemp(prefix="salient-mutation-"))
    if keep is not None:
        if keep.exists() and any(keep.iterdir()):
            raise ValueError(f"--keep: {keep} is not empty; the run needs a fresh folder")
        keep.mkdir(parents=True, exist_ok=True)
    try:
        return _score_in(work, modules, strict, max_mutants, jobs, ref, timeout_multiplier, time_limit_s)
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def _score_in(
    work: Path,
    modules: Sequence[str],
    strict: bool,
    max_mutants: int | None,
    jobs: int,
    ref: str | None,
    timeout_multiplier: float,
    time_limit_s: float | None,
) -> list[ModuleScore]:
    top_level = lay_out(work, ref)
    modules, tests = _present(work, modules, strict)
    configure(work, modules, tests, top_level, timeout_multiplier)
    log.info("snapshot laid out in %s; tests: %s", work, " ".join(tests))
    # First pass: generate the mutants and record which tests execute which function. A pattern
    # that matches no mutant makes `mutmut run` stop right after that (the stats are cached in
    # mutants/ for the second pass), so the mutants can be listed and sampled.
    _mutmut(work, ["run", "--max-children", str(jobs), "salient.__list_only__"], time_limit_s)
    every = _verdicts(work)
    if not every:
        raise RuntimeError(f"mutmut generated no mutants; see {work / 'mutmut.log'}")
    chosen: list[str] = []
    for module in modules:
        chosen += _sample([n for n in every if _module_of(n) == module], max_mutants)
    log.info("running %d mutants of %d generated", len(chosen), len(every))
    code = _mutmut(work, ["run", "--max-children", str(jobs), *chosen], time_limit_s)
    if code != 0:
        log.warning("mutmut exited with %d; see %s", code, work / "mutmut.log")
    verdicts = _verdicts(work)
    scores = []
    for module in modules:
        names = [n for n in chosen if _module_of(n) == module]
        counts: Counter[str] = Counter()
        survivors = []
        for n in names:
            code_n = verdicts.get(n)
            if code_n is None:
                counts["not run"] += 1
                continue
            verdict = "timeout" if code_n in _TIMEOUT_CODES else _VERDICT.get(code_n, "other")
            counts[verdict] += 1
            if verdict in ("survived", "no tests"):
                survivors.append(_describe(work, module, n))
        scores.append(
            ModuleScore(
                module=module,
                mutants=len(names) - counts["not run"] - counts["skipped"],
                killed=counts["killed"],
                survived=counts["survived"],
                timeout=counts["timeout"],
                no_tests=counts["no tests"],
                other=counts["other"],
                survivors=tuple(survivors),
            )
        )
    return scores


def _describe(work: Path, module: str, name: str) -> Mutant:
    """The survivor's changed line (from ``mutmut show``) and, if listed, why it is equivalent."""
    shown = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=work, capture_output=True, text=True)
    diff = shown.stdout.splitlines()
    removed = " ".join(ln[1:].strip() for ln in diff if ln.startswith("-") and not ln.startswith("---"))
    added = " ".join(ln[1:].strip() for ln in diff if ln.startswith("+") and not ln.startswith("+++"))
    why = next((r for m, old, new, r in EQUIVALENT if (m, old, new) == (module, removed, added)), None)
    return Mutant(name, removed, added, why)


def _table(scores: Sequence[ModuleScore]) -> str:
    head = (
        "module",
        "mutants",
        "killed",
        "survived",
        "timeout",
        "no tests",
        "other",
        "equivalent",
        "raw score",
        "score",
    )
    rows = [
        (
            s.module,
            s.mutants,
            s.killed,
            s.survived,
            s.timeout,
            s.no_tests,
            s.other,
            s.equivalent,
            f"{100 * s.raw_score:.1f}%",
            f"{100 * s.score:.1f}%",
        )
        for s in scores
    ]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*map(str, r)) for r in [head, *rows])


def _positive_int(option: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} must be an integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{option} must be >= 1, got {value}")
        return value

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modules", nargs="+", help="modules to mutate (full or last part; default: every one present)")
    p.add_argument("--max-mutants", type=_positive_int("--max-mutants"), help="per module, spread over its functions")
    p.add_argument("--jobs", type=_positive_int("--jobs"), default=1, help="parallel mutants (default 1)")
    p.add_argument("--ref", help="mutate this commit instead of the working tree (tests must be committed)")
    p.add_argument("--timeout-multiplier", type=float, default=5.0, help="mutant time limit / clean test time")
    p.add_argument("--time-limit", type=float, help="seconds for each of the two mutmut passes (default: none)")
    p.add_argument("--keep", type=Path, help="lay out the snapshot here and keep it (mutmut show/browse work in it)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.timeout_multiplier <= 0:
        p.error(f"--timeout-multiplier must be > 0, got {args.timeout_multiplier}")
    try:
        modules = list(dict.fromkeys(_resolve_module(m) for m in (args.modules or MODULES)))
    except ValueError as exc:
        p.error(str(exc))
    try:
        import mutmut  # noqa: F401
    except ImportError:
        p.error("mutmut is not installed: pip install -e '.[dev]'")
    scores = score_modules(
        modules,
        max_mutants=args.max_mutants,
        jobs=args.jobs,
        ref=args.ref,
        timeout_multiplier=args.timeout_multiplier,
        keep=args.keep,
        time_limit_s=args.time_limit,
        strict=args.modules is not None,
    )
    print(_table(scores))
    print("\nscore: (killed + timeout) / (mutants - equivalent); raw score counts every mutant")
    for s in scores:
        for title, group in (
            ("survivors", [m for m in s.survivors if m.equivalent_because is None]),
            ("judged equivalent", [m for m in s.survivors if m.equivalent_because is not None]),
        ):
            if group:
                print(f"\n{title} in {s.module} ({len(group)}):")
            for m in group:
                print(f"  {m.name}: {m.removed!r} -> {m.added!r}")
                if m.equivalent_because is not None:
                    print(f"      ({m.equivalent_because})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
