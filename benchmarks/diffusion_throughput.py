"""Training-step throughput: wavelet (SALIENT) vs pixel-space diffusion, same UNet width.

Both models get slices of the same in-plane size; the wavelet model denoises (4, H/2, W/2)
bands, the pixel model (1, H, W). Prints one row per size with steps/s of each and the ratio
(the paper reports ~4x on an H100 at 512 px). Ratios are measured side by side in one run;
absolute numbers only mean something on the machine that printed them.

    python benchmarks/diffusion_throughput.py                 # 64, 128, 256 px on this machine
    python benchmarks/diffusion_throughput.py --device cuda --sizes 256 512 --steps 20
"""

from __future__ import annotations

import argparse
import time

import torch
from salient.models.configs import DiffusionConfig
from salient.models.diffusion import ConditionalDiffusion, DiffusionBatch


def steps_per_second(domain: str, size: int, args: argparse.Namespace) -> float:
    torch.manual_seed(0)
    cfg = DiffusionConfig(domain=domain, base_channels=args.width, batch_size=args.batch)  # type: ignore[arg-type]
    model = ConditionalDiffusion(cfg).to(args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    n = args.batch
    batch = DiffusionBatch(
        torch.rand(n, 1, size, size, device=args.device) * 2 - 1,
        (torch.rand(n, 1, size, size, device=args.device) > 0.95).float(),
        torch.rand(n, len(cfg.neighbour_offsets), size, size, device=args.device) * 2 - 1,
    )

    def step() -> None:
        loss = model.loss(batch)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    return args.steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--width", type=int, default=16, help="UNet base channels (both models)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    if args.device == "cpu":  # as in trial workers: oneDNN on, its broken 1x1 backward kernel routed around
        from salient.platform.torch_runtime import configure_torch

        configure_torch(torch.get_num_threads())
    print(
        f"device={args.device} width={args.width} batch={args.batch} steps={args.steps} "
        f"torch={torch.__version__} threads={torch.get_num_threads()}"
    )
    print(f"{'size':>6} {'wavelet steps/s':>16} {'pixel steps/s':>14} {'speed-up':>9}")
    for size in args.sizes:
        w = steps_per_second("wavelet", size, args)
        px = steps_per_second("pixel", size, args)
        print(f"{size:>6} {w:>16.3f} {px:>14.3f} {w / px:>8.2f}x")


if __name__ == "__main__":
    main()
