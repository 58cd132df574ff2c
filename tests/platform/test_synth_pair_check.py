"""`platform synth` applies the pair check and placement rule its generator's pool applied (#14).

The tiny generator (tests/platform/tiny_generator.py) is untrained, so its UCMT labels say
nothing; where a test needs labels that agree or not, the teacher is replaced by one that returns
the conditioning mask of the block it labels, or nothing, in a known pattern.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from salient.platform import synth as synth_module
from salient.platform.cli import main
from salient.platform.errors import PlatformError
from salient.platform.generator_lookup import generator_from_entry
from salient.platform.stages.generator import MAX_DRAW_FACTOR, EmptyMasksError
from salient.platform.synth import synthesize_cohort

from tests.platform.tiny_generator import tiny_generator

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_generator(tmp_path_factory)


@pytest.fixture
def doctored(pool: Path) -> Iterator[Any]:
    """Copies of the pool entry beside it (same stage cache, so the models resolve) with fields of
    the generator record replaced; removed afterwards."""
    made: list[Path] = []

    def make(**fields: Any) -> Path:
        entry = pool.parent / f"doctored_{len(made)}_{pool.name}"
        shutil.copytree(pool, entry)
        meta = json.loads((entry / "meta.json").read_text())
        meta["generator"].update(fields)
        (entry / "meta.json").write_text(json.dumps(meta))
        made.append(entry)
        return entry

    yield make
    for entry in made:
        shutil.rmtree(entry, ignore_errors=True)


def _teacher(monkeypatch: pytest.MonkeyPatch, labels: list[str]) -> list[str]:
    """Replace the UCMT teacher: the n-th labelled block gets ``labels[n % len(labels)]``: its own
    conditioning mask (``agree``), an empty label (``empty``) or a label beside the lesion
    (``low``: Dice far below 0.5). Returns the labels given, in order."""
    masks: list[torch.Tensor] = []
    made: list[str] = []
    real_sample = synth_module.sample_blocks

    def sample(diffusion, cfg, blocks, hosts, g):
        masks.append(blocks[0].mask)
        return real_sample(diffusion, cfg, blocks, hosts, g)

    def label(cfg, state, images):
        kind = labels[len(made) % len(labels)]
        made.append(kind)
        if kind == "agree":
            return masks[-1].clone()
        if kind == "empty":
            return torch.zeros_like(images)
        low = (masks[-1] <= 0.5).float()  # everywhere but the lesion: Dice 0 ...
        low.view(-1)[0] = 1.0  # ... and never empty (one voxel, wherever it is, keeps Dice far below 0.5)
        return low

    monkeypatch.setattr(synth_module, "sample_blocks", sample)
    monkeypatch.setattr(synth_module, "ucmt_labels", label)
    return made


def test_the_pool_records_its_check_and_placement_rule(tmp_path_factory: pytest.TempPathFactory) -> None:
    # not the record's defaults (0, None, 1.0): only a pool that records its study's rules passes
    protocol = {"min_pair_dice": 0.05, "placement_hu": [-160.0, 240.0], "placement_share": 0.5}
    record = generator_from_entry(tiny_generator(tmp_path_factory, protocol), "--generator").record
    assert (record.min_pair_dice, record.placement_hu, record.placement_share) == (0.05, [-160.0, 240.0], 0.5)
    default = generator_from_entry(tiny_generator(tmp_path_factory), "--generator").record
    assert (default.min_pair_dice, default.placement_hu) == (0.0, None)  # the tiny study turns both off


def test_lesions_whose_label_disagrees_are_redrawn_and_counted(
    pool: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = _teacher(monkeypatch, ["empty", "agree", "low"])
    out = tmp_path / "synth"
    manifest, counts = synthesize_cohort(generator_from_entry(pool, "--generator"), 3, out, min_pair_dice=0.5)
    assert (counts.written, counts.drawn, counts.rejected_empty, counts.rejected_low_dice) == (3, 8, 3, 2)
    assert made == ["empty", "agree", "low"] * 2 + ["empty", "agree"]
    rows = list(csv.DictReader(manifest.open()))
    assert len(rows) == 3 and all(float(r["mask_dice_vs_condition"]) == 1.0 for r in rows)
    recorded = json.loads((out / "synth.json").read_text())
    assert recorded["n_masks"] == 3 and recorded["pair_check"]["drawn"] == 8
    assert recorded["pair_check"]["min_pair_dice"] == 0.5


def test_the_generators_recorded_threshold_is_the_default(
    doctored: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _teacher(monkeypatch, ["empty", "low", "agree"])
    entry = doctored(min_pair_dice=0.5)
    _, counts = synthesize_cohort(generator_from_entry(entry, "--generator"), 2, tmp_path / "a")
    assert (counts.min_pair_dice, counts.written, counts.drawn) == (0.5, 2, 6)
    _teacher(monkeypatch, ["empty", "low", "agree"])
    _, off = synthesize_cohort(generator_from_entry(entry, "--generator"), 2, tmp_path / "b", min_pair_dice=0.0)
    assert (off.written, off.drawn, off.rejected_empty) == (2, 2, 0)  # 0 turns the check off


def test_a_generator_whose_labels_never_agree_writes_nothing(
    pool: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _teacher(monkeypatch, ["empty", "low"])
    out = tmp_path / "synth"
    with pytest.raises(PlatformError, match=r"nothing written .* wrote 0 of 2 requested subjects: drew 8 lesions"):
        synthesize_cohort(generator_from_entry(pool, "--generator"), 2, out, min_pair_dice=0.5)
    assert MAX_DRAW_FACTOR * 2 == 8
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".synth")]


def test_the_placement_rule_of_the_record_is_applied(doctored: Any, tmp_path: Path) -> None:
    # Nothing in the preprocessing window [-160, 240] HU lies in [1000, 2000] HU: no mask fits any host.
    entry = doctored(placement_hu=[1000.0, 2000.0], placement_share=0.5)
    with pytest.raises(
        PlatformError,
        match=r"nothing written .* drew 0 lesions.* [1-9]\d* masks fit no host \(then no drawn mask fit any host: "
        r"placement \[1000.0, 2000.0\] HU, share 0.5\); take healthy hosts from another --cohort",
    ):
        synthesize_cohort(generator_from_entry(entry, "--generator"), 2, tmp_path / "synth")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"min_pair_dice": 1.5}, r"generator.min_pair_dice must be in \[0, 1\], got 1.5"),
        ({"placement_share": 0.0}, r"generator.placement_share must be in \(0, 1\], got 0.0"),
        ({"placement_hu": [20.0, -130.0]}, r"generator.placement_hu must be \[low, high\] .*, got \[20.0, -130.0\]"),
    ],
)
def test_a_record_with_an_impossible_check_is_refused(doctored: Any, fields: dict, message: str) -> None:
    with pytest.raises(PlatformError, match=message):
        generator_from_entry(doctored(**fields), "--generator")


@pytest.mark.parametrize("value", ["nan", "1.5", "-0.1", "half"])
def test_cli_refuses_a_bad_min_pair_dice(pool: Path, tmp_path: Path, value: str, capsys: Any) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["synth", "--generator", str(pool), "--masks", "1", "--min-pair-dice", value, str(tmp_path / "o")])
    assert exc.value.code == 2
    assert "--min-pair-dice" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_reports_what_was_drawn_and_kept(
    pool: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    _teacher(monkeypatch, ["agree", "empty"])
    rc = main(["synth", "--generator", str(pool), "--masks", "2", "--min-pair-dice", "0.5", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert rc == 0 and "drew 3 lesions, kept 2 (pair Dice >= 0.5)" in " ".join(out.split())


def test_a_vae_that_stops_drawing_lesions_is_named_in_the_shortfall(
    pool: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _teacher(monkeypatch, ["agree", "empty"])
    real_draw, calls = synth_module.draw_lesion_blocks, []

    def draw(*args, **kwargs):
        calls.append(kwargs["min_blocks"])
        if len(calls) > 1:
            raise EmptyMasksError("MaskVAE3D produced only empty masks")
        return real_draw(*args, **kwargs)

    monkeypatch.setattr(synth_module, "draw_lesion_blocks", draw)
    _, counts = synthesize_cohort(generator_from_entry(pool, "--generator"), 3, tmp_path / "o", min_pair_dice=0.5)
    assert calls == [3, 1] and (counts.written, counts.drawn, counts.vae_only_empty) == (2, 3, True)
    assert "then MaskVAE3D drew only empty masks (it is undertrained)" in str(counts.shortfall())
