"""What the oneDNN workaround buys: training steps/s with oneDNN off vs on behind the guard.

"off" is what trial workers did until now (``torch.backends.mkldnn.enabled = False``);
"workaround" is ``salient.platform.torch_runtime.configure_torch``: oneDNN on, with a guard that
gives the few 1x1 strided convolutions its AVX-512 kernel mishandles an NCHW input (see
benchmarks/onednn_repro.py). Workloads:

* diffusion: benchmarks/diffusion_throughput.py settings (UNet width 16, batch 4), wavelet and
  pixel domain, at 64 and 128 px;
* UCMT: the tiny preset, one ``UCMTTrainer`` step (two students on labeled + unlabeled slices,
  EMA teacher), unlabeled slices built as the platform builds them (which PyTorch reads as
  channels-last: the case the guard exists for); "UCMT plain" builds them NCHW-strided;
* detector: the tiny preset, one ``MaskGuidedResNet`` loss + AdamW step on triplets.

The machine may be shared, so the settings are interleaved inside one process at the finest
grain: each setting trains its own fresh model, and after ``--warmup`` untimed steps each they
take turns one timed step at a time (``--steps`` each), so load from other work lands on both
alike. The table shows the median of ``--repeats`` such runs and every run's ratio. Only the
ratios mean anything beyond the machine that printed them. On a crowded machine, ``--threads 1
--clock cpu`` times the CPU this process used, which other work cannot inflate.

    python benchmarks/onednn_speed.py                        # everything, 3 repeats
    python benchmarks/onednn_speed.py --only ucmt detector --repeats 1
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from salient.models.configs import DetectorConfig, DiffusionConfig, UCMTConfig, stage_config
from salient.models.detector import MaskGuidedResNet
from salient.models.diffusion import ConditionalDiffusion, DiffusionBatch
from salient.models.ucmt import UCMTTrainer
from salient.platform.torch_runtime import configure_torch, remove_onednn_guard

SETTINGS = ("off", "workaround")


@dataclass(frozen=True)
class Workload:
    name: str
    build: Callable[[], Callable[[], None]]  # fresh model + data -> one training step


def apply_setting(setting: str, threads: int) -> None:
    if setting == "off":
        remove_onednn_guard()
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = False  # type: ignore[assignment]
    else:
        configure_torch(threads)


def diffusion_step(domain: str, size: int) -> Callable[[], Callable[[], None]]:
    def build() -> Callable[[], None]:
        torch.manual_seed(0)
        cfg = DiffusionConfig(domain=domain, base_channels=16, batch_size=4)
        model = ConditionalDiffusion(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        n = cfg.batch_size
        batch = DiffusionBatch(
            torch.rand(n, 1, size, size) * 2 - 1,
            (torch.rand(n, 1, size, size) > 0.95).float(),
            torch.rand(n, len(cfg.neighbour_offsets), size, size) * 2 - 1,
        )

        def step() -> None:
            loss = model.loss(batch)["total"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    return build


def platform_slices(n: int, size: int, seed: int, plain: bool) -> torch.Tensor:
    """(n, 1, size, size) slices built like the platform's UCMT unlabeled set (fancy-indexed
    NumPy, strides (H*W, 1, W, 1)); ``plain`` re-strides them to NCHW."""
    rng = np.random.default_rng(seed)
    images = np.concatenate([rng.uniform(-1, 1, (24, size, size)).astype(np.float32) for _ in range(4)])[:, None]
    t = torch.from_numpy(images[rng.permutation(len(images))[:n]])
    return t.clone(memory_format=torch.contiguous_format) if plain else t


def ucmt_step(size: int, plain: bool) -> Callable[[], Callable[[], None]]:
    def build() -> Callable[[], None]:
        cfg: UCMTConfig = stage_config("ucmt", "tiny")
        g = torch.Generator().manual_seed(0)
        labeled = torch.rand(16, 1, size, size, generator=g) * 2 - 1
        trainer = UCMTTrainer(cfg, (labeled, (labeled > 0.8).float()), platform_slices(64, size, 0, plain), seed=0)

        def step() -> None:  # one more step of the trainer's own loop
            trainer.cfg = dataclasses.replace(cfg, train_steps=trainer.step + 1)
            trainer.train()

        return step

    return build


def detector_step(size: int) -> Callable[[], Callable[[], None]]:
    def build() -> Callable[[], None]:
        torch.manual_seed(0)
        cfg: DetectorConfig = stage_config("detector", "tiny")
        model = MaskGuidedResNet(cfg).train()
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        n = cfg.batch_size
        images = torch.rand(n, 3 if cfg.input_mode == "triplet" else 1, size, size) * 2 - 1
        labels = (torch.arange(n) % 2).float()
        masks = (torch.rand(n, 1, size, size) > 0.97).float() * labels.view(-1, 1, 1, 1)

        def step() -> None:
            loss = model.loss(images, labels, masks)["total"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    return build


def measure(workload: Workload, threads: int, warmup: int, steps: int, clock: Callable[[], float]) -> dict[str, float]:
    """Steps/s of ``workload`` under each setting, one step at a time in alternation.

    Each setting trains its own fresh model (same seed); after ``warmup`` untimed steps each,
    the settings take turns one step at a time, so a burst of load from other work on the
    machine lands on both alike. Returns total timed steps / total time per setting.
    """
    steps_of = {}
    for setting in SETTINGS:
        apply_setting(setting, threads)
        steps_of[setting] = workload.build()
        for _ in range(warmup):
            steps_of[setting]()
    spent = dict.fromkeys(SETTINGS, 0.0)
    for i in range(steps):
        for setting in SETTINGS if i % 2 == 0 else SETTINGS[::-1]:
            apply_setting(setting, threads)
            t0 = clock()
            steps_of[setting]()
            spent[setting] += clock() - t0
    return {setting: steps / spent[setting] for setting in SETTINGS}


def workloads(ucmt_size: int, detector_size: int) -> list[Workload]:
    out = [Workload(f"{d} {s} px", diffusion_step(d, s)) for s in (64, 128) for d in ("wavelet", "pixel")]
    out.append(Workload(f"UCMT {ucmt_size} px", ucmt_step(ucmt_size, plain=False)))
    out.append(Workload(f"UCMT plain {ucmt_size} px", ucmt_step(ucmt_size, plain=True)))
    out.append(Workload(f"detector {detector_size} px", detector_step(detector_size)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--ucmt-size", type=int, default=48, help="slice size (the demo's ROI is 48)")
    p.add_argument("--detector-size", type=int, default=48)
    p.add_argument("--only", nargs="+", help="workloads whose name starts with one of these words")
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: this process's CPU time, which time-sharing with other work does not inflate; "
        "meaningful with --threads 1 only (with more, idle threads spinning at barriers count as work)",
    )
    args = p.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        p.error(f"--clock cpu needs --threads 1, got --threads {args.threads}")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    chosen = [
        w
        for w in workloads(args.ucmt_size, args.detector_size)
        if not args.only or any(w.name.lower().startswith(o.lower()) for o in args.only)
    ]
    print(
        f"torch {torch.__version__}, {args.threads} threads, {args.clock} clock, "
        f"{args.steps} timed steps after {args.warmup}, median of {args.repeats} interleaved repeats"
    )
    results: dict[tuple[str, str], list[float]] = {}
    for r in range(args.repeats):
        for w in chosen:
            rates = measure(w, args.threads, args.warmup, args.steps, clock)
            for setting, rate in rates.items():
                results.setdefault((w.name, setting), []).append(rate)
            print(  # as it comes, so a run cut short still says something
                f"repeat {r + 1}: {w.name}: off {rates['off']:.3f}, workaround {rates['workaround']:.3f} steps/s "
                f"({rates['workaround'] / rates['off']:.2f}x)",
                flush=True,
            )
    apply_setting("workaround", args.threads)
    header = ["workload", "off steps/s", "workaround steps/s", "speed-up", "speed-up per repeat"]
    rows = []
    for w in chosen:
        off, on = results[(w.name, "off")], results[(w.name, "workaround")]
        per = " ".join(f"{b / a:.2f}" for a, b in zip(off, on, strict=True))
        rows.append([w.name, f"{statistics.median(off):.3f}", f"{statistics.median(on):.3f}"])
        rows[-1] += [f"{statistics.median(on) / statistics.median(off):.2f}x", per]
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    for row in [header, ["-" * n for n in widths], *rows]:
        print("| " + " | ".join(c.ljust(n) for c, n in zip(row, widths, strict=True)) + " |")


if __name__ == "__main__":
    main()
