"""The GPU check (issue #16 item 6): three measurements, one table, on whatever device is there.

1. Training-step throughput, wavelet (SALIENT) vs pixel-space diffusion, same UNet (width 16,
   batch 4, as benchmarks/diffusion_throughput.py), at 256 and 512 px (``--small``: 16 and 32 px).
2. One sampling step with structured CFG (three branches - unconditional, mask, mask +
   neighbours - batched into one forward) vs an unguided step (one branch), at the larger size.
3. Each trained model's trainer on the device (the stages' training code, at the demo's 48 px
   and tiny preset sizes): diffusion, UCMT, detector and a pool's sampling, a few steps each -
   parameters on the device, finite losses, seconds per step.
4. A tiny study (one dose-1 trial: every stage) through ``platform run`` with ``gpus: 1`` per
   stage (``gpus: 0`` on a machine without a GPU), from a fresh output folder: wall time, exit code.
   Skipped, and said so, where Ray or MLflow is not installed (a bare GPU image).

Needs nothing but this repository and its installed packages; writes everything under ``$OUT``
(or ``--out``; a temporary folder otherwise): ``gpu_check.json``, ``gpu_check.txt`` (the table),
and the tiny study's folder. ``benchmarks/gpu_check.sh`` runs it (``--cpu`` there = ``--small``).

    python benchmarks/gpu_check.py                  # on a GPU machine (< 8 min on one H100)
    python benchmarks/gpu_check.py --small          # CI / a CPU: small sizes, gpus: 0 (< 1 min)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from salient.models.configs import DiffusionConfig, GuidanceConfig, stage_config
from salient.models.detector import DetectorTrainer
from salient.models.diffusion import ConditionalDiffusion, DiffusionBatch, DiffusionTrainer
from salient.models.ucmt import UCMTTrainer

REPO = Path(__file__).resolve().parents[1]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train_steps_per_second(domain: str, size: int, device: str, steps: int, warmup: int) -> float:
    """Optimiser steps per second of one diffusion model (width 16, batch 4) on ``size`` px slices."""
    torch.manual_seed(0)
    cfg = DiffusionConfig(domain=domain, base_channels=16, batch_size=4)
    model = ConditionalDiffusion(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    n = cfg.batch_size
    batch = DiffusionBatch(
        torch.rand(n, 1, size, size, device=device) * 2 - 1,
        (torch.rand(n, 1, size, size, device=device) > 0.95).float(),
        torch.rand(n, len(cfg.neighbour_offsets), size, size, device=device) * 2 - 1,
    )

    def step() -> None:
        loss = model.loss(batch)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps / (time.perf_counter() - t0)


@torch.no_grad()
def sampling_step_seconds(size: int, device: str, repeats: int) -> tuple[float, float]:
    """Seconds of one denoising step, structured CFG (3 branches in one forward) and unguided (1)."""
    torch.manual_seed(0)
    model = ConditionalDiffusion(DiffusionConfig(base_channels=16)).to(device).eval()
    b = 4
    x = torch.randn(b, model.data_channels, size // 2, size // 2, device=device)
    t = torch.full((b,), 500, device=device, dtype=torch.long)
    mask = (torch.rand(b, 1, size, size, device=device) > 0.95).float()
    nei = torch.rand(b, len(model.cfg.neighbour_offsets), size, size, device=device)
    ones = torch.ones(b, device=device)
    g = GuidanceConfig()

    def guided() -> None:
        model.guided_x0(x, t, mask, nei, g.s_mask, g.s_nei_start)

    def unguided() -> None:
        model(x, t, mask, nei, ones, ones)

    for fn in (guided, unguided, guided, unguided):  # warm both up before timing either
        fn()
    out = []
    for fn in (guided, unguided):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        _sync(device)
        out.append((time.perf_counter() - t0) / repeats)
    return out[0], out[1]


def stage_training(device: str, size: int, steps: int) -> list[dict[str, Any]]:
    """A few training steps of each stage's trainer (tiny preset) on ``device``, as a trial's
    stages call them: seconds per step, whether the parameters live on the device, finite losses."""
    torch.manual_seed(0)
    n = 32
    image = torch.rand(n, 1, size, size) * 2 - 1
    mask = torch.zeros(n, 1, size, size)
    mask[:, :, size // 3 : size // 2, size // 3 : size // 2] = 1
    rows = []

    def timed(name: str, params: Any, run: Any, per: int = steps) -> None:
        _sync(device)
        t0 = time.perf_counter()
        losses = run()
        _sync(device)
        seconds = (time.perf_counter() - t0) / per
        on = {p.device.type for p in params}
        finite = bool(torch.isfinite(torch.as_tensor(losses, dtype=torch.float64)).all())
        rows.append({"stage": name, "s_per_step": seconds, "param_devices": sorted(on), "finite": finite})

    diff_cfg = stage_config("diffusion", "tiny", {"train_steps": steps})
    diffusion = ConditionalDiffusion(diff_cfg)
    nei = torch.rand(n, len(diff_cfg.neighbour_offsets), size, size) * 2 - 1
    trainer = DiffusionTrainer(diffusion, DiffusionBatch(image, mask, nei), seed=0, device=device)
    timed("diffusion", diffusion.parameters(), trainer.train)
    g = torch.Generator().manual_seed(0)
    guidance = diff_cfg.guidance
    with torch.no_grad():
        timed(
            f"sampling 8 slices ({guidance.sampling_steps} steps)",
            diffusion.parameters(),
            lambda: [
                float(diffusion.sample(mask[:8].to(device), nei[:8].to(device), guidance, generator=g).abs().mean())
            ],
            per=guidance.sampling_steps,
        )
    ucmt_cfg = stage_config("ucmt", "tiny", {"train_steps": steps})
    ucmt = UCMTTrainer(ucmt_cfg, (image, mask), image.flip(-1), seed=0, device=device)
    timed("ucmt", ucmt.student_a.parameters(), ucmt.train)
    det_cfg = stage_config("detector", "tiny", {"steps": steps})
    labels = torch.arange(n) % 2
    det = DetectorTrainer(det_cfg, image.repeat(1, 3, 1, 1), labels, mask * labels[:, None, None, None], device=device)
    timed("detector", det.model.parameters(), det.train)
    return rows


def tiny_study(folder: Path, gpus: float) -> dict[str, Any]:
    """``platform run`` of a tiny phantom study with ``gpus`` per stage; wall time and exit code."""
    import yaml  # with the platform's packages (a bare GPU image may lack them; then this is skipped)

    study = {
        "name": "gpu_check",
        "seed": 0,
        "cohort": {
            "source": "phantom",
            "phantom": {"n_subjects": 32, "n_positive": 12, "shape": [48, 48, 12], "spacing": [8.0, 8.0, 10.0]},
            "preprocessing": {"spacing": [8.0, 8.0, 10.0], "hu_window": [-160, 240], "roi": [32, 32, 12]},
        },
        "stages": {
            "preset": "tiny",
            "mask_vae": {"epochs": 3, "volume_size": [8, 16, 16]},
            "diffusion": {"train_steps": 6, "base_channels": 8, "guidance": {"sampling_steps": 3}},
            "ucmt": {"train_steps": 6},
            "detector": {"steps": 6},
            "aggregator": {"epochs": 2},
        },
        "search_space": {"dose": {"grid": [1.0]}, "seed_size": {"grid": [2]}},  # every stage, one trial
        # untrained tiny models fail the pool's pair check and placement rule: keep every pair
        "protocol": {"min_pair_dice": 0.0, "placement_hu": None},
        "evaluation": {
            "prevalences": [0.25, 0.5],
            "test_fraction": 0.34,
            "validation_fraction": 0.3,
            "bootstrap": 20,
            "prevalence_draws": 2,
        },
        "resources": {"cpus": 1, "gpus": gpus, "max_concurrent": 2, "retries": 1},
        "output_dir": str(folder / "out"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "salient.platform.cli", "run", str(path)], capture_output=True, text=True, timeout=420
    )
    (folder / "run.log").write_text(done.stdout + done.stderr)
    return {"gpus": gpus, "exit_code": done.returncode, "seconds": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="small sizes, gpus: 0 without a GPU (CI, CPU)")
    p.add_argument("--out", default=os.environ.get("OUT"), help="output folder (default $OUT, else a temporary one)")
    args = p.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="gpu_check-"))
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if not cuda:
        from salient.platform.torch_runtime import configure_torch

        configure_torch(torch.get_num_threads())  # as in trial workers (oneDNN's broken kernel routed around)
        if not args.small:
            print("no GPU here: the full sizes on a CPU take long; --small is the CPU variant", file=sys.stderr)
    sizes = (16, 32) if args.small else (256, 512)
    steps, warmup, repeats = (2, 1, 2) if args.small else (10, 3, 10)
    card = torch.cuda.get_device_name(0) if cuda else "CPU"
    lines: list[str] = []

    def emit(line: str) -> None:  # printed as measured: a run cut short keeps what it measured
        lines.append(line)
        print(line, flush=True)

    emit(f"device: {card} (torch {torch.__version__}, {torch.get_num_threads()} CPU threads)")
    results: dict[str, Any] = {"device": card, "torch": torch.__version__, "small": args.small, "throughput": []}
    emit(f"{'size':>6} {'wavelet steps/s':>16} {'pixel steps/s':>14} {'speed-up':>9}")
    for size in sizes:
        w = train_steps_per_second("wavelet", size, device, steps, warmup)
        px = train_steps_per_second("pixel", size, device, steps, warmup)
        results["throughput"].append({"size": size, "wavelet": w, "pixel": px})
        emit(f"{size:>6} {w:>16.3f} {px:>14.3f} {w / px:>8.2f}x")
    guided, unguided = sampling_step_seconds(sizes[-1], device, repeats)
    results["sampling_step"] = {"size": sizes[-1], "structured_cfg_s": guided, "unguided_s": unguided}
    emit(
        f"sampling step at {sizes[-1]} px, batch 4: structured CFG {guided * 1e3:.2f} ms, "
        f"unguided {unguided * 1e3:.2f} ms ({guided / unguided:.2f}x)"
    )
    results["stage_training"] = stage_training(device, 48, steps)
    for row in results["stage_training"]:
        emit(
            f"{row['stage']:>24}: {row['s_per_step'] * 1e3:8.1f} ms/step, parameters on "
            f"{'/'.join(row['param_devices'])}, losses {'finite' if row['finite'] else 'NOT FINITE'}"
        )
    missing = [m for m in ("ray", "mlflow") if importlib.util.find_spec(m) is None]
    if missing:
        study = {"skipped": f"{' and '.join(missing)} not installed here"}
        emit(f"tiny study: skipped ({study['skipped']})")
    else:
        study = tiny_study(out / "tiny_study", 1.0 if cuda else 0.0)
        emit(f"tiny study, gpus: {study['gpus']:g}: exit {study['exit_code']}, {study['seconds']:.1f} s")
    results["tiny_study"] = study
    text = "\n".join(lines)
    (out / "gpu_check.txt").write_text(text + "\n")
    (out / "gpu_check.json").write_text(json.dumps(results, indent=1))
    bad = [r["stage"] for r in results["stage_training"] if not r["finite"] or r["param_devices"] != [device]]
    if bad:
        print(f"stages not on {device} or with non-finite losses: {bad}", file=sys.stderr)
        sys.exit(1)
    if study.get("exit_code", 0) != 0:
        print(f"the tiny study failed; its log: {out / 'tiny_study' / 'run.log'}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
