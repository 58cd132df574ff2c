"""configure_torch keeps oneDNN on and routes the one broken oneDNN kernel around.

The crash itself is only ever provoked in a child process (benchmarks/onednn_repro.py), so a
failing guard fails a test instead of killing the test run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from salient.platform.torch_runtime import (
    configure_torch,
    install_onednn_guard,
    is_affected_conv,
    remove_onednn_guard,
)
from torch import nn

REPRO = Path(__file__).resolve().parents[2] / "benchmarks" / "onednn_repro.py"
BAD_KERNEL = "jit_1x1:avx512_core,backward_weights"


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ONEDNN_VERBOSE": "profile_create"}  # oneDNN prints each primitive it creates
    return subprocess.run([sys.executable, str(REPRO), *args], env=env, capture_output=True, text=True, timeout=timeout)


def _bwd_weights_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if "convolution" in line and "backward_weights" in line]


@pytest.fixture
def guard() -> Iterator[None]:
    """The guard installed for the test, and removed afterwards unless it was already there."""
    fresh = install_onednn_guard()
    yield
    if fresh:
        remove_onednn_guard()


def test_reproducer_crashes_without_the_workaround() -> None:
    # Shows the next test is not vacuous: on this CPU the unpatched minimal case dies by a signal.
    proc = _run("--case", "conv", "--workaround", "none", "--threads", "1")
    chosen = _bwd_weights_lines(proc.stdout)
    if not any(BAD_KERNEL in line and ":acdb:" in line for line in chosen):
        pytest.skip(f"oneDNN does not pick the affected kernel on this CPU: {chosen}")
    assert proc.returncode < 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])


@pytest.mark.parametrize(
    "case",
    [
        ("--layout", "nhwc"),  # the minimal case: channels-last input, 8 channels
        ("--layout", "nhwc-weight"),  # plain input, channels-last weight
        ("--layout", "nhwc", "--ic", "4", "--oc", "8", "--batch", "32", "--iters", "3"),
    ],
    ids=["nhwc-input", "nhwc-weight", "4-channels"],
)
def test_reproducer_survives_configure_torch(case: tuple[str, ...]) -> None:
    proc = _run("--case", "conv", *case, "--workaround", "runtime", "--threads", "2")
    # Exit 0 also means forward, weight, bias and input gradients matched an einsum reference.
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    chosen = _bwd_weights_lines(proc.stdout)
    # oneDNN still computes the weight gradient (not the native fallback), in its blocked layout.
    assert chosen, proc.stdout[-2000:]
    assert all(":acdb:" not in line for line in chosen), chosen


@pytest.mark.slow  # 6-18 s on 2 shared cores
def test_ucmt_training_on_platform_slices_survives_configure_torch() -> None:
    # 64 px platform-built slices crash UCMTTrainer unpatched (benchmarks/onednn_repro.py --ucmt).
    proc = _run("--case", "ucmt", "--size", "64", "--steps", "2", "--workaround", "runtime", "--threads", "2")
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "unlabeled strides (4096, 1, 64, 1)" in proc.stdout  # the channels-last-looking tensor
    assert "trained 2 steps" in proc.stdout


def test_onednn_is_on_after_configure_torch() -> None:
    # In a child: the test session itself may run with oneDNN off.
    code = (
        "import torch\n"
        "from salient.platform.torch_runtime import configure_torch\n"
        "torch.backends.mkldnn.enabled = False\n"
        "configure_torch(1)\n"
        "assert torch.backends.mkldnn.enabled and torch.get_num_threads() == 1\n"
        "torch.nn.Conv2d(3, 8, 3)(torch.randn(2, 3, 16, 16)).sum().backward()\n"
        "print('done')\n"
    )
    env = {**os.environ, "ONEDNN_VERBOSE": "profile_create"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    created = [line for line in proc.stdout.splitlines() if ",convolution," in line]
    assert any(",forward_training," in line for line in created), proc.stdout[-2000:]
    assert any(",backward_weights," in line for line in created), proc.stdout[-2000:]


@pytest.mark.parametrize(
    ("module", "affected"),
    [
        (nn.Conv2d(8, 16, 1, stride=2), True),
        (nn.Conv2d(15, 16, 1, stride=(1, 2)), True),
        (nn.Conv2d(1, 8, 1, stride=2), True),
        (nn.Conv3d(8, 16, 1, stride=2), True),
        (nn.Conv2d(64, 64, 1, stride=2, groups=8), True),  # 8 input channels per group
        (nn.Conv2d(16, 32, 1, stride=2), False),  # a full channel block
        (nn.Conv2d(8, 16, 1), False),  # stride 1: no reduce-to-unit-stride workspace
        (nn.Conv2d(8, 16, 3, stride=2, padding=1), False),  # not 1x1
        (nn.Linear(8, 16), False),
    ],
)
def test_is_affected_conv(module: nn.Module, affected: bool) -> None:
    assert is_affected_conv(module) is affected


def test_guard_restrides_only_affected_convolutions(guard: None) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 8, 16, 16).contiguous(memory_format=torch.channels_last)
    assert x.stride() == (2048, 1, 128, 8)
    seen: dict[str, tuple[int, ...]] = {}
    affected = nn.Conv2d(8, 16, 1, stride=2)
    other = nn.Conv2d(8, 16, 3, stride=2, padding=1)
    affected.register_forward_pre_hook(lambda m, a: seen.__setitem__("affected", a[0].stride()))
    other.register_forward_pre_hook(lambda m, a: seen.__setitem__("other", a[0].stride()))
    y = affected(x)
    other(x)
    assert seen == {"affected": (2048, 256, 16, 1), "other": (2048, 1, 128, 8)}
    assert affected.bias is not None
    w, b = affected.weight.detach().flatten(1), affected.bias.detach().view(1, -1, 1, 1)
    expected = torch.einsum("nihw,oi->nohw", x[:, :, ::2, ::2], w) + b
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


def test_guard_restrides_a_channels_last_weight_in_place(guard: None) -> None:
    conv = nn.Conv2d(8, 16, 1, stride=2).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    param, before = conv.weight, conv.weight.detach().clone()
    assert conv.weight.stride() == (8, 1, 8, 8)
    conv(torch.randn(1, 8, 8, 8))
    assert conv.weight is param  # optimizers and EMA keep pointing at it
    assert conv.weight.stride() == (8, 1, 1, 1)
    assert torch.equal(conv.weight.detach(), before)


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2"])
def test_configure_torch_rejects_bad_threads(threads: object) -> None:
    with pytest.raises(ValueError, match=r"threads must be an integer >= 1, got") as err:
        configure_torch(threads)
    assert repr(threads) in str(err.value)
