"""Process-wide torch setup for trial workers and the test suite: threads, and oneDNN kept on.

What crashed. torch 2.13 ships oneDNN v3.12, whose AVX-512 1x1-convolution backward-weights
kernel (``jit_avx512_common_1x1_convolution_bwd_weights_t``; ``jit_1x1:avx512_core`` in
``ONEDNN_VERBOSE`` output) writes past its "reduce to unit stride" workspace when the source is
channels-last (nhwc), the convolution is 1x1 with a stride > 1, and there are fewer than 16
input channels (its AVX-512 channel block); the same mechanism as uxlfoundation/oneDNN#6035.
The overflow corrupts the heap: SIGSEGV, or SIGABRT "double free or corruption". UCMT hit it
because its unlabeled slices are built as ``torch.from_numpy(array[:, None][permutation])``:
NumPy's fancy indexing gives the size-1 channel axis a one-element stride, PyTorch's layout
heuristic reads the (N, 1, H, W) tensor as channels-last, the student ResNets run nhwc, and
their first downsampling shortcut (1x1, stride 2, 8 -> 16 channels) is exactly the bad case.

How it was reproduced. ``benchmarks/onednn_repro.py``: one backward of ``Conv2d(8, 16, 1,
stride=2)`` on one (1, 8, 64, 64) channels-last input segfaults every time on this AVX-512
CPU; ``--sweep`` shows it crashes for 4-15 input channels at stride 2 in nhwc, and never at
stride 1, in NCHW, or from 16 channels up (gradients there match an einsum reference);
``--ucmt`` crashes real ``UCMTTrainer`` training on platform-built 64 px slices.

Why this fix is the narrowest. Until now every worker turned oneDNN off (1.1-2.1x slower).
Instead, a forward pre-hook hands exactly the affected convolutions (1x1, strided, fewer than
16 input channels per group) plain NCHW-strided tensors, so oneDNN runs them too, through its
blocked-layout path, which is correct; every other convolution, its layout, and oneDNN's
AVX-512 kernels are untouched. The alternatives are wider: ``ONEDNN_MAX_CPU_ISA=AVX2`` (works
in-process only before oneDNN's first primitive) gives up AVX-512 everywhere and its AVX2 1x1
kernel has the same bug below 8 channels; a ``torch.backends.mkldnn`` flag cannot be scoped to
one module's backward. The hook API is documented as global state "for debugging/profiling";
global process state is what this module is for, and it is installed once per process.

Not covered: ``F.conv2d`` called directly (the platform's only direct calls are the 2x2 Haar
filters, not 1x1) and convolution modules called with the input as a keyword argument.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["ONEDNN_CHANNEL_BLOCK", "configure_torch", "install_onednn_guard", "is_affected_conv", "remove_onednn_guard"]

logger = logging.getLogger(__name__)

#: Channel block of oneDNN's AVX-512 1x1 kernel: nhwc sources with fewer channels overflow its workspace.
ONEDNN_CHANNEL_BLOCK = 16

_guard: RemovableHandle | None = None


def configure_torch(threads: int) -> None:
    """Threads for this process, oneDNN on, and the guard around its broken 1x1 kernel.

    Args:
        threads: intra-op threads (torch.set_num_threads), at least 1.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    torch.set_num_threads(threads)
    # On explicitly: an earlier setup in this process (older workers, the test suite) turned it off.
    torch.backends.mkldnn.enabled = True  # type: ignore[assignment]  # a module-level flag
    install_onednn_guard()


def install_onednn_guard() -> bool:
    """Register the forward pre-hook that keeps affected convolutions off the nhwc path.

    Idempotent; returns whether this call installed it (False: it already was).
    """
    global _guard
    if _guard is not None:
        return False
    # torch annotates the hook as returning None, but documents (and honours) a returned input.
    _guard = nn.modules.module.register_module_forward_pre_hook(_route_to_nchw)  # type: ignore[arg-type]
    logger.debug("oneDNN guard installed for 1x1 strided convolutions below %d channels", ONEDNN_CHANNEL_BLOCK)
    return True


def remove_onednn_guard() -> None:
    """Unregister the guard (benchmarks and tests that compare with and without it); idempotent."""
    global _guard
    if _guard is not None:
        _guard.remove()
        _guard = None


def is_affected_conv(module: nn.Module) -> bool:
    """Whether ``module``'s weight gradient can run oneDNN's broken kernel when its source is nhwc."""
    if not isinstance(module, nn.Conv2d | nn.Conv3d):
        return False
    return (
        all(k == 1 for k in module.kernel_size)
        and any(s != 1 for s in module.stride)
        and module.in_channels // module.groups < ONEDNN_CHANNEL_BLOCK
    )


def _contiguous_strides(shape: torch.Size) -> tuple[int, ...]:
    # torch's own rule for contiguous tensors: size-1 dimensions get the stride of the next block,
    # which is what makes its channels-last heuristic say "NCHW".
    strides = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        strides[i] = strides[i + 1] * max(shape[i + 1], 1)
    return tuple(strides)


def _plain(t: torch.Tensor) -> torch.Tensor:
    """``t`` with NCHW strides; a copy only when its strides differ (values and autograd unchanged)."""
    if t.stride() == _contiguous_strides(t.shape):
        return t
    return t.clone(memory_format=torch.contiguous_format)


def _route_to_nchw(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    # Runs before every module's forward: the cheap module test first.
    if not is_affected_conv(module) or not args or not isinstance(args[0], torch.Tensor):
        return None
    if args[0].device.type != "cpu":  # cuDNN and other backends do not have the bug
        return None
    weight = module.weight
    if isinstance(weight, torch.Tensor) and weight.stride() != _contiguous_strides(weight.shape):
        # A model converted to channels-last: PyTorch would pick nhwc from the weight alone. The
        # parameter object stays the same (optimizers and EMA keep it); only its strides change.
        logger.warning("re-striding the weight of %s to NCHW to avoid oneDNN's nhwc 1x1 kernel", module)
        weight.data = weight.data.clone(memory_format=torch.contiguous_format)
    plain = _plain(args[0])
    return None if plain is args[0] else (plain, *args[1:])
