"""Minimal reproducer of the oneDNN crash that made trial workers turn oneDNN off (issue #14 item 6).

What crashes: torch 2.13 ships oneDNN v3.12. Its AVX-512 1x1-convolution backward-weights
kernel (``jit_avx512_common_1x1_convolution_bwd_weights_t``, ``jit_1x1:avx512_core`` in
``ONEDNN_VERBOSE=1`` output) writes past its "reduce to unit stride" (rtus) workspace when

* the source is channels-last (``nhwc``; PyTorch picks that layout when the input *or* the
  weight looks channels-last),
* the convolution is 1x1 with a stride > 1 (only then is the rtus workspace used), and
* the input channels are fewer than the AVX-512 channel block, 16.

(Same mechanism as uxlfoundation/oneDNN#6035: the workspace offset is computed with the channel
block where the nhwc layout needs the real channel count.) Small overflows stay inside the
allocation's slack; larger ones corrupt the heap: SIGSEGV, or SIGABRT from glibc ("double
free or corruption"). The minimal case, one backward of ``Conv2d(8, 16, 1, stride=2)`` on one
(1, 8, 64, 64) channels-last input, crashes every time on an AVX-512 CPU.

How UCMT got there: ``ucmt_unlabeled_slices`` builds its tensor as
``torch.from_numpy(np.concatenate(volumes)[:, None][permutation])``. NumPy's fancy indexing
gives the size-1 channel axis a stride of one element, so the (N, 1, H, W) tensor has strides
(H*W, 1, W, 1); PyTorch's layout heuristic reads that as channels-last, the whole student
network runs nhwc, and the ResNet's first downsampling shortcut (1x1, stride 2, 8 -> 16
channels) hits the kernel. ``--ucmt`` reproduces it with the real ``UCMTTrainer``.

    python benchmarks/onednn_repro.py            # the minimal case, unpatched and under each workaround
    python benchmarks/onednn_repro.py --sweep    # which channels / strides / layouts crash or miscompute
    python benchmarks/onednn_repro.py --ucmt     # UCMT training fed as the platform feeds it
    python benchmarks/onednn_repro.py --case conv --workaround runtime   # one case in this process

Every case runs in a child process (``--case``), so a crash is reported, not suffered; a case
also checks the forward output and every gradient against an einsum reference in float64 and
exits with code 3 when they disagree (a silent miscompute is as bad as a crash).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

WORKAROUNDS = ("none", "off", "isa-avx2", "isa-avx2-late", "runtime")
WORKAROUND_HELP = {
    "none": "oneDNN on, as torch ships",
    "off": "torch.backends.mkldnn.enabled = False (what trial workers do today)",
    "isa-avx2": "ONEDNN_MAX_CPU_ISA=AVX2 set in-process before the first convolution",
    "isa-avx2-late": "ONEDNN_MAX_CPU_ISA=AVX2 set in-process after a first convolution",
    "runtime": "salient.platform.torch_runtime.configure_torch (the chosen workaround)",
}
WRONG_RESULT = 3  # exit code of a case whose output or gradients disagree with the reference
TOLERANCE = 1e-4  # max |error| / max |reference|; float32 sums of a few thousand terms stay near 1e-6


@dataclass(frozen=True)
class ConvCase:
    """One strided 1x1 convolution, forward + backward."""

    ic: int = 8
    oc: int = 16
    stride: int = 2
    size: int = 64
    batch: int = 1
    layout: str = "nhwc"  # nhwc: channels-last input (what the heuristic infers for UCMT's slices);
    # nhwc-weight: plain input, channels-last weight (a model converted with .to(memory_format=...))
    dims: int = 2
    iters: int = 1

    def argv(self) -> list[str]:
        return [
            *("--ic", str(self.ic), "--oc", str(self.oc), "--stride", str(self.stride)),
            *("--size", str(self.size), "--batch", str(self.batch), "--layout", self.layout),
            *("--dims", str(self.dims), "--iters", str(self.iters)),
        ]


MINIMAL = ConvCase()
# Below 8 channels the AVX2 1x1 kernel has the same bug (its channel block is 8): seen here as
# SIGABRT (1 thread), a spinning hang or silently wrong gradients (2 threads), varying by run. So
# capping the ISA at AVX2 is no fix.
FOUR_CHANNELS = ConvCase(ic=4, oc=8, batch=32, iters=3)


def apply_workaround(name: str, threads: int) -> None:
    """Put this process in the state ``name`` describes (before the case's first convolution)."""
    torch.set_num_threads(threads)
    if name == "off":
        torch.backends.mkldnn.enabled = False  # type: ignore[assignment]
    elif name == "isa-avx2":
        os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX2"  # read by oneDNN when it creates its first primitive
    elif name == "isa-avx2-late":
        conv = nn.Conv2d(1, 1, 3)  # oneDNN initialises here, with the full ISA
        conv(torch.zeros(1, 1, 4, 4)).sum().backward()
        os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    elif name == "runtime":
        from salient.platform.torch_runtime import configure_torch

        configure_torch(threads)
    elif name != "none":
        raise ValueError(f"workaround must be one of {WORKAROUNDS}, got {name!r}")


def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def run_conv_case(case: ConvCase) -> int:
    """Forward + backward of ``case`` ``iters`` times, checked against einsum; returns an exit code."""
    torch.manual_seed(0)
    conv_cls = nn.Conv2d if case.dims == 2 else nn.Conv3d
    conv = conv_cls(case.ic, case.oc, 1, stride=case.stride)
    x = torch.randn(case.batch, case.ic, *(case.size,) * case.dims)
    channels_last = torch.channels_last if case.dims == 2 else torch.channels_last_3d
    if case.layout == "nhwc":
        x = x.contiguous(memory_format=channels_last)
    elif case.layout == "nhwc-weight":
        conv = conv.to(memory_format=channels_last)  # type: ignore[call-overload]  # documented, not in the stubs
    sub = (slice(None), slice(None), *(slice(None, None, case.stride),) * case.dims)
    spatial = "hw" if case.dims == 2 else "dhw"
    w = conv.weight.detach().double().flatten(1)  # (OC, IC)
    worst = 0.0
    for _ in range(case.iters):
        conv.zero_grad(set_to_none=True)
        xi = x.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
        y = conv(xi)
        gy = torch.randn_like(y)
        y.backward(gy)
        assert xi.grad is not None and conv.weight.grad is not None and conv.bias is not None
        assert conv.bias.grad is not None
        xs, g = x.double()[sub], gy.double()
        y_ref = torch.einsum(f"ni{spatial},oi->no{spatial}", xs, w) + conv.bias.detach().double().view(
            1, -1, *(1,) * case.dims
        )
        gw_ref = torch.einsum(f"no{spatial},ni{spatial}->oi", g, xs)
        gx_ref = torch.zeros_like(x, dtype=torch.float64)
        gx_ref[sub] = torch.einsum(f"no{spatial},oi->ni{spatial}", g, w)
        gb_ref = g.sum(dim=(0, *range(2, 2 + case.dims)))
        worst = max(
            worst,
            _rel_err(y.detach(), y_ref),
            _rel_err(conv.weight.grad.flatten(1), gw_ref),
            _rel_err(conv.bias.grad, gb_ref),
            _rel_err(xi.grad, gx_ref),
        )
    print(f"max relative error {worst:.2e}", flush=True)
    return 0 if worst < TOLERANCE else WRONG_RESULT


def platform_unlabeled(size: int, n: int, seed: int) -> torch.Tensor:
    """(n, 1, size, size) slices built exactly as ``ucmt_unlabeled_slices`` builds them."""
    rng = np.random.default_rng(seed)
    volumes = [rng.uniform(-1, 1, (24, size, size)).astype(np.float32) for _ in range(4)]
    images = np.concatenate(volumes)[:, None]
    return torch.from_numpy(images[rng.permutation(len(images))[:n]]).float()


def run_ucmt_case(size: int, steps: int, seed: int) -> int:
    """A few UCMT training steps on platform-built unlabeled slices; returns an exit code."""
    from salient.models.configs import UCMTConfig
    from salient.models.ucmt import UCMTTrainer

    unlabeled = platform_unlabeled(size, 64, seed)
    print(f"unlabeled strides {unlabeled.stride()}", flush=True)
    g = torch.Generator().manual_seed(seed)
    labeled = torch.rand(8, 1, size, size, generator=g) * 2 - 1
    masks = (labeled > 0.8).float()
    cfg = UCMTConfig(train_steps=steps, rampup_steps=max(steps // 2, 1), batch_size=8)
    losses = UCMTTrainer(cfg, (labeled, masks), unlabeled, seed=seed).train()
    print(f"trained {len(losses)} steps, last loss {losses[-1]:.3f}", flush=True)
    return 0 if all(math.isfinite(v) for v in losses) else WRONG_RESULT


@dataclass(frozen=True)
class Outcome:
    result: str  # ok | wrong result | SIGSEGV | SIGABRT | ... | hang
    isa: str  # oneDNN's ISA line, when verbose output was asked for
    kernels: str  # the backward-weights implementations oneDNN chose


def _describe(rc: int) -> str:
    if rc == 0:
        return "ok"
    if rc == WRONG_RESULT:
        return "wrong result"
    if rc < 0:
        return signal.Signals(-rc).name
    return f"exit {rc}"


def run_child(case_argv: list[str], workaround: str, threads: int, timeout: float, verbose: bool) -> Outcome:
    """Run one case in a child process; a signal or a timeout there is a result here."""
    env = dict(os.environ)
    if verbose:
        env["ONEDNN_VERBOSE"] = "profile_create"  # creation lines: printed before a crashing execution
    cmd = [sys.executable, os.path.abspath(__file__), *case_argv, "--workaround", workaround, "--threads", str(threads)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Outcome("hang", "", "")
    isa = re.search(r"onednn_verbose,[^\n]*,isa:([^\n]*)", proc.stdout)
    found = re.findall(r"convolution,([^,]+),backward_weights,src:\w+:\w*:blocked:(\w+)", proc.stdout)
    kernels = " ".join(sorted({f"{impl} ({layout})" for impl, layout in found}))
    return Outcome(_describe(proc.returncode), isa.group(1) if isa else "-", kernels or "-")


def _table(header: list[str], rows: Sequence[Sequence[object]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths], *rows]:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--sweep", action="store_true", help="channels x stride x layout x threads table")
    mode.add_argument("--ucmt", action="store_true", help="UCMT training on platform-built slices")
    mode.add_argument("--case", choices=("conv", "ucmt"), help="run one case in this process")
    p.add_argument("--workaround", choices=WORKAROUNDS, default="none")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before a child counts as hung")
    for field in ("ic", "oc", "stride", "size", "batch", "dims", "iters"):
        p.add_argument(f"--{field}", type=int, default=getattr(MINIMAL, field))
    p.add_argument("--layout", choices=("nchw", "nhwc", "nhwc-weight"), default=MINIMAL.layout)
    p.add_argument("--steps", type=int, default=5, help="UCMT training steps")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    if args.case:  # child (or a direct run): apply the workaround, run, exit with the case's code
        apply_workaround(args.workaround, args.threads)
        if args.case == "ucmt":
            sys.exit(run_ucmt_case(args.size, args.steps, args.seed))
        fields = ("ic", "oc", "stride", "size", "batch", "layout", "dims", "iters")
        sys.exit(run_conv_case(ConvCase(**{f: getattr(args, f) for f in fields})))

    print(f"torch {torch.__version__}, {torch.backends.mkldnn.is_available() and 'oneDNN available'}")
    if args.sweep:
        rows = []
        for dims in (2, 3):
            for ic in (1, 4, 8, 12, 15, 16, 17, 24, 32):
                for stride, layout in ((2, "nhwc"), (1, "nhwc"), (2, "nchw")):
                    if dims == 3 and (ic not in (4, 8, 16) or layout == "nchw"):
                        continue
                    size = 64 if dims == 2 else 16
                    case = ConvCase(ic=ic, oc=16, stride=stride, size=size, batch=2, layout=layout, dims=dims, iters=3)
                    for threads in (1, 2):
                        out = run_child(["--case", "conv", *case.argv()], "none", threads, args.timeout, True)
                        rows.append([f"{dims}d", ic, 16, stride, size, layout, threads, out.result, out.kernels])
        _table(["conv", "ic", "oc", "stride", "size", "layout", "threads", "oneDNN on", "bwd-weights kernel"], rows)
        return
    if args.ucmt:
        rows = []
        for size in (48, 64):
            for workaround in ("none", "off", "runtime"):
                out = run_child(
                    ["--case", "ucmt", "--size", str(size), "--steps", str(args.steps), "--seed", str(args.seed)],
                    workaround,
                    args.threads,
                    args.timeout * 3,
                    False,
                )
                rows.append([size, workaround, out.result])
        _table(["slice px", "workaround", "UCMT training"], rows)
        return
    rows = []
    for workaround in WORKAROUNDS:
        out = run_child(["--case", "conv", *MINIMAL.argv()], workaround, args.threads, args.timeout, True)
        four = run_child(["--case", "conv", *FOUR_CHANNELS.argv()], workaround, args.threads, args.timeout, False)
        rows.append([workaround, out.result, four.result, out.isa, out.kernels, WORKAROUND_HELP[workaround]])
    print(f"minimal case: {MINIMAL}\n4 channels:   {FOUR_CHANNELS}")
    _table(["workaround", "minimal", "4 channels", "oneDNN ISA", "bwd-weights kernel (minimal)", "what"], rows)


if __name__ == "__main__":
    main()
