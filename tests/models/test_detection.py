import copy

import numpy as np
import pytest
import torch
from salient.dashboards.stats import auroc
from salient.models.aggregator import AggregatorTrainer, EViTAggregator, pad_sequences
from salient.models.configs import AggregatorConfig, DetectorConfig, UCMTConfig
from salient.models.detector import DetectorTrainer, MaskGuidedResNet, balanced_indices, focal_loss
from salient.models.ucmt import UCMTTrainer, patch_uncertainty, rampup, umix
from salient.platform.cohort.phantom import draw_subject
from salient.platform.study.schema import PhantomSpec


def test_focal_loss_matches_direct_formula() -> None:
    logits = torch.tensor([-2.0, -0.5, 0.3, 1.7, 3.0])
    y = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0])
    gamma, alpha = 2.0, 0.25
    p = torch.sigmoid(logits)
    direct = []
    for pi, yi in zip(p.tolist(), y.tolist(), strict=True):
        pt = pi if yi == 1 else 1 - pi
        at = alpha if yi == 1 else 1 - alpha
        direct.append(-at * (1 - pt) ** gamma * np.log(pt))
    assert float(focal_loss(logits, y, gamma, alpha)) == pytest.approx(np.mean(direct), rel=1e-5)
    assert float(focal_loss(logits, y, 0.0, 0.5)) == pytest.approx(
        0.5 * float(torch.nn.functional.binary_cross_entropy_with_logits(logits, y)), rel=1e-5
    )


def test_umix_swaps_the_intended_patches() -> None:
    x = torch.arange(2).float().view(2, 1, 1, 1).expand(2, 1, 8, 8).clone()  # image 0 all 0, image 1 all 1
    y = x.clone() + 10
    unc = torch.zeros(2, 16)
    unc[0, 5], unc[0, 10] = 9.0, 8.0  # image 0: most uncertain patches 5, 10
    unc[1] = torch.arange(16).float() + 1
    unc[1, 3] = 0.0  # image 1: most certain patches 3 then 0
    xm, ym, pairs = umix(x, y, unc, grid=4, k=2)
    assert pairs[0] == [(5, 3), (10, 0)]
    changed = (xm[0, 0] != x[0, 0]).nonzero().tolist()
    expected = {
        (r, c)
        for p in (5, 10)
        for r in range(2 * (p // 4), 2 * (p // 4) + 2)
        for c in range(2 * (p % 4), 2 * (p % 4) + 2)
    }
    assert {tuple(rc) for rc in changed} == expected
    assert torch.equal(ym - 10, xm)  # labels mixed identically


def test_patch_uncertainty_and_rampup() -> None:
    prob = torch.full((1, 1, 8, 8), 0.99)
    prob[..., :4, :4] = 0.5
    unc = patch_uncertainty(prob, 2)
    assert int(unc.argmax()) == 0
    assert rampup(0, 100) == pytest.approx(np.exp(-5)) and rampup(100, 100) == 1.0


def test_ucmt_teacher_segments_lesions() -> None:
    x, y, m = _phantom_slices(16, seed=0)
    pos = y > 0
    xs, ms = x[pos][:, 1:2], m[pos]  # central slices with a lesion
    # augmentation off: 120 steps on 8 slices test that the teacher learns; augmentation (which
    # needs longer training to pay off) is tested in test_augment.py
    cfg = UCMTConfig(
        train_steps=120,
        rampup_steps=40,
        batch_size=8,
        lr=3e-3,
        ema_decay=0.9,
        augment_shift=0,
        augment_flip=False,
        augment_noise=0.0,
    )
    trainer = UCMTTrainer(cfg, (xs[::2], ms[::2]), xs[1::2], seed=0)
    losses = trainer.train()
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])
    pred = trainer.predict(xs[1::2])
    dice = float(2 * (pred * ms[1::2]).sum() / (pred.sum() + ms[1::2].sum()))
    assert dice > 0.2, dice  # held-out slices: the teacher finds the hematomas


def test_aggregator_ignores_padding_and_trains() -> None:
    torch.manual_seed(0)
    cfg = AggregatorConfig(
        max_len=12, d_model=16, heads=4, layers=3, keep_rate=0.5, dropout=0.0, epochs=30, batch_size=8, lr=3e-3
    )
    seqs = [torch.randn(n, 6) for n in (3, 12, 20, 7)]
    x, pad = pad_sequences(seqs, 12)
    assert pad.sum(1).tolist() == [9, 0, 0, 5]
    model = EViTAggregator(6, cfg).eval()
    x2 = x.clone()
    x2[pad] = torch.randn(int(pad.sum()), 6) * 1e3
    assert torch.allclose(model(x, pad), model(x2, pad), atol=1e-6)
    # subjects with a bright slice somewhere are positive
    g = torch.Generator().manual_seed(0)
    seqs, labels = [], []
    for i in range(40):
        s = torch.randn((8, 6), generator=g)
        if i % 2:
            s[int(torch.randint(0, 8, (1,), generator=g)), 0] += 5
        seqs.append(s)
        labels.append(i % 2)
    x, pad = pad_sequences(seqs, 12)
    tr = AggregatorTrainer(cfg, x, pad, torch.tensor(labels), seed=0)
    tr.train()
    assert auroc(np.array(labels), tr.predict(x, pad).numpy()) > 0.9


def _phantom_slices(n_subjects: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """2.5D triplets (N, 3, 32, 32) of mediastinal crops, slice labels (lesion present), masks."""
    spec = PhantomSpec(shape=(48, 48, 10), spacing=(8.0, 8.0, 12.0), seed=seed)
    imgs, masks, labels = [], [], []
    for i in range(n_subjects):
        s = draw_subject(spec, i, i % 2, "large" if i % 2 else None)
        vol = np.clip((s.image.astype(np.float32) + 160) / 400 * 2 - 1, -1, 1).transpose(2, 1, 0)[:, 8:40, 8:40]
        m = s.mask.transpose(2, 1, 0)[:, 8:40, 8:40]
        for z in range(1, 9):
            imgs.append(vol[z - 1 : z + 2])
            masks.append(m[z])
            labels.append(float(m[z].any()))
    return torch.tensor(np.stack(imgs)), torch.tensor(labels), torch.tensor(np.stack(masks)).float()[:, None]


def test_tiny_detector_learns_the_phantom_task() -> None:
    x, y, m = _phantom_slices(60, seed=0)
    cfg = DetectorConfig(widths=(4, 8, 16, 32), schedule="epochs", epochs=6, batch_size=16, lr=2e-3)
    trainer = DetectorTrainer(cfg, x, y, m, seed=0)
    trainer.train()
    xt, yt, _ = _phantom_slices(20, seed=1)  # other subjects (another phantom seed)
    score = auroc(yt.numpy(), trainer.predict(xt).numpy())
    # Measured 0.658 (train 1.0): above chance (0.5) by ~3 standard errors at 160 test slices.
    assert score > 0.58, score
    emb = trainer.model.embed(xt[:5])
    assert emb.shape == (5, trainer.model.embed_dim)


def test_no_mask_guidance_ablation_turns_alignment_off() -> None:
    x, y, m = _phantom_slices(4, seed=0)
    guided = MaskGuidedResNet(DetectorConfig(mask_guidance=True))
    ablated = MaskGuidedResNet(DetectorConfig(mask_guidance=False))
    ablated.load_state_dict(guided.state_dict())
    tg, ta = guided.loss(x, y, m), ablated.loss(x, y, m)
    assert float(tg["align"]) > 0 and float(ta["align"]) == 0
    assert float(tg["focal"]) == pytest.approx(float(ta["focal"]))


def test_balanced_sampling_takes_every_positive() -> None:
    labels = torch.tensor([1, 0, 0, 0, 0, 0, 1, 0, 0, 0.0])
    idx = balanced_indices(labels, 1.5, torch.Generator().manual_seed(0))
    assert set(torch.nonzero(labels).flatten().tolist()) <= set(idx.tolist())
    assert len(idx) == 2 + 3


def test_detector_input_mode_is_checked() -> None:
    with pytest.raises(ValueError, match="expects 3 channels"):
        MaskGuidedResNet(DetectorConfig(input_mode="triplet"))(torch.zeros(2, 1, 32, 32))


def _toy(n_pos: int, n_neg: int, n_added: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    n = n_pos + n_neg + n_added
    x = torch.randn((n, 3, 16, 16), generator=g)
    y = torch.tensor([1.0] * n_pos + [0.0] * n_neg + [1.0] * n_added)
    m = (torch.rand((n, 1, 16, 16), generator=g) > 0.9).float() * y.view(-1, 1, 1, 1)
    added = torch.tensor([False] * (n_pos + n_neg) + [True] * n_added)
    return x, y, m, added


TINY_DET = {"layers": (1, 1, 1, 1), "widths": (4, 4, 8, 8), "batch_size": 8, "neg_per_pos": 1.0}


def test_matched_schedule_takes_the_same_steps_and_negatives_at_every_dose() -> None:
    cfg = DetectorConfig(**TINY_DET, schedule="matched", steps=12)
    runs = {}
    for n_added in (0, 80):  # 0x and a large dose (80 added positives beside 20 real ones)
        x, y, m, added = _toy(20, 100, n_added)
        trainer = DetectorTrainer(cfg, x, y, m, seed=3, synthetic=added)
        drawn: list[list[int]] = []
        update = trainer._update

        def record(b: torch.Tensor, update=update, drawn=drawn) -> float:  # type: ignore[no-untyped-def]
            drawn.append(b.tolist())
            return update(b)

        trainer._update = record  # type: ignore[method-assign]
        trainer.train()
        negatives = [[i for i in b if float(y[i]) == 0.0] for b in drawn]
        runs[n_added] = (trainer.step, dict(trainer.seen), negatives)
    (steps0, seen0, neg0), (steps80, seen80, neg80) = runs[0], runs[80]
    assert steps0 == steps80 == 12
    assert neg0 == neg80  # the very same negatives, in the same order
    assert seen0["negative"] == seen80["negative"] == 12 * 4  # 8 per batch, 1 negative per positive
    assert seen0["synthetic_positive"] == 0 and seen80["synthetic_positive"] > seen80["real_positive"]
    assert seen0["real_positive"] == seen80["real_positive"] + seen80["synthetic_positive"] == 48


def test_epochs_schedule_grows_with_the_dose() -> None:
    cfg = DetectorConfig(**TINY_DET, schedule="epochs", epochs=2)
    steps = []
    for n_added in (0, 80):
        x, y, m, added = _toy(20, 100, n_added)
        trainer = DetectorTrainer(cfg, x, y, m, seed=3, synthetic=added)
        trainer.train()
        steps.append(trainer.step)
    # an epoch is every positive + as many negatives: 40 vs 200 slices, batches of 8
    assert steps == [2 * 5, 2 * 25]


def test_matched_schedule_resumes_exactly() -> None:
    cfg = DetectorConfig(**TINY_DET, schedule="matched", steps=8)
    x, y, m, added = _toy(10, 40, 10)
    full = DetectorTrainer(cfg, x, y, m, seed=1, synthetic=added)
    full.train()
    part = DetectorTrainer(cfg, x, y, m, seed=1, synthetic=added)
    states = []
    # a copy, as the stage cache's checkpoint file is: state_dict() holds the live tensors
    part.train(on_epoch=lambda step, _: states.append(copy.deepcopy(part.state_dict())) if step == 3 else None)
    resumed = DetectorTrainer(cfg, x, y, m, seed=1, synthetic=added)
    resumed.load_state_dict(states[0])
    assert resumed.step == 3
    resumed.train()
    assert resumed.seen == full.seen
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_aggregator_batches_are_half_positive_whatever_the_class_ratio() -> None:
    cfg = AggregatorConfig(max_len=4, d_model=8, heads=2, layers=1, epochs=2, batch_size=8)
    for n_pos in (3, 20):  # 3 or 20 positives among 40 subjects
        labels = torch.tensor([1.0] * n_pos + [0.0] * (40 - n_pos))
        x, pad = pad_sequences([torch.randn(3, 5) for _ in range(40)], 4)
        trainer = AggregatorTrainer(cfg, x, pad, labels, seed=0)
        batches = [trainer._batch() for _ in range(50)]
        assert all(float(labels[b].mean()) == 0.5 for b in batches)
        trainer.train()
        assert trainer.steps == 2 * 5  # ceil(40 / 8) batches per epoch: the same for any dose
