"""The dilated residual stack's running skip sum: same outputs and gradients as the concatenate-every-skip
formulation it replaced, and inference memory that does not grow with depth."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sepray.models.layers import DilatedResidualStack
from sepray.models.residual_function import batched_matmul


def concatenated_skips(stack, x, cond=None, skip_length=None):
    """The old formulation: keep every layer's cropped ``h``, concatenate, one GEMM with all skip weights.

    (B, C, T) -> (residual (B, C, T - context) or None, skip sum (B, S, L)).
    """
    skip_length = x.shape[-1] - stack.context if skip_length is None else skip_length
    hidden = []
    for layer in stack.layers:
        x, h = layer.core(x, cond, skip_length)  # h: (B, C, L)
        hidden.append(h)
    weight = torch.cat([layer.skip.weight[:, :, 0] for layer in stack.layers], dim=1)  # (S, layers * C)
    bias = torch.stack([layer.skip.bias for layer in stack.layers]).sum(0)
    return x, batched_matmul(weight, torch.cat(hidden, dim=1)).add_(bias[:, None])


STACKS = {
    "wavenet": dict(activation="gated", final_residual=False),
    "gated-residual-cond": dict(activation="gated", cond_channels=3),
    "relu-cond": dict(activation="relu", cond_channels=2),
    "relu": dict(activation="relu", final_residual=False),
}


def make_stack(kind, dtype=torch.float64):
    torch.manual_seed(0)
    stack = DilatedResidualStack(6, blocks=2, layers_per_block=3, skip_channels=5, **STACKS[kind])
    return stack.to(dtype)


@pytest.mark.parametrize("kind", STACKS)
def test_running_sum_matches_concatenated_skips_with_gradients(kind):
    stack = make_stack(kind)
    x = torch.randn(2, 6, 50, dtype=torch.float64, requires_grad=True)
    cond = None
    if stack.layers[0].cond is not None:
        cond = torch.randn(2, stack.layers[0].cond.in_channels, 48, dtype=torch.float64, requires_grad=True)
    inputs = [x, *([cond] if cond is not None else []), *stack.parameters()]

    def loss(outputs):
        residual, skip = outputs
        return (skip**2).sum() + ((residual**3).sum() if residual is not None else 0)

    ours, ref = stack(x, cond, 9), concatenated_skips(stack, x, cond, 9)
    assert ours[1].shape == (2, 5, 9) and ours[1].dtype == torch.float64
    for a, b in zip(ours, ref, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)
    grads = torch.autograd.grad(loss(ours), inputs), torch.autograd.grad(loss(ref), inputs)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)
    if STACKS[kind]["activation"] == "gated":  # (finite differences are unreliable at ReLU kinks)
        torch.autograd.gradcheck(lambda t: stack(t, cond, 7)[1], (x,), fast_mode=True)


@pytest.mark.parametrize("kind", STACKS)
def test_inference_path_matches_in_float32(kind):
    """No gradients: the gate is written over its sigmoid and the sum is accumulated in place."""
    stack = make_stack(kind, torch.float32)
    x = torch.randn(3, 6, 400)
    cond = torch.randn(3, stack.layers[0].cond.in_channels, 400) if stack.layers[0].cond is not None else None
    with torch.no_grad():
        ours, ref = stack(x, cond), concatenated_skips(stack, x, cond)
    scale = ref[1].abs().max().item()
    torch.testing.assert_close(ours[1], ref[1], atol=1e-5 * scale, rtol=1e-5)
    if ref[0] is not None:
        torch.testing.assert_close(ours[0], ref[0], atol=1e-5 * ref[0].abs().max().item(), rtol=1e-5)


def test_autocast_keeps_a_float32_sum_and_returns_the_autocast_dtype():
    stack = make_stack("wavenet", torch.float32)
    x = torch.randn(2, 6, 60)
    with torch.no_grad():
        expected = stack(x)[1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, skip = stack(x)
    assert skip.dtype == torch.bfloat16
    torch.testing.assert_close(skip.float(), expected, atol=0.05 * expected.abs().max().item(), rtol=0.05)
    skip.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in stack.parameters())


MEMORY_PROBE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import torch
    from sepray.models.layers import DilatedResidualStack
    from tests.test_stack_memory import concatenated_skips

    torch.set_num_threads(1)
    layers, formulation = int(sys.argv[1]), sys.argv[2]
    torch.manual_seed(0)
    stack = DilatedResidualStack(64, 1, layers, dilation_base=1, skip_channels=256, final_residual=False)
    run = stack if formulation == "running" else lambda x: concatenated_skips(stack, x)
    x = torch.randn(1, 64, 60000)

    def status_kib(field):
        line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field))
        return int(line.split()[1])

    with torch.no_grad():
        run(x[..., :2000])  # warm up: library buffers belong to the baseline
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
        before = status_kib("VmRSS:")
        skip = run(x)[1]
    print((status_kib("VmHWM:") - before) * 1024)
    """
)


def peak_growth(layers: int, formulation: str) -> int:
    """Peak RSS growth (bytes) of one no-grad forward, in a fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(layers), formulation],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return int(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(
    sys.platform != "linux", reason="the peak-RSS reset (/proc/self/clear_refs) is Linux only"
)
def test_inference_memory_does_not_grow_with_depth():
    """2 vs 16 layers on the same (1, 64, 60000) input: the deep stack peaks at most 1.5x the shallow one.

    The old formulation fails the same bound (each layer's 15 MB skip input is kept and concatenated), so the
    measurement can tell the two apart.
    """
    shallow, deep = peak_growth(2, "running"), peak_growth(16, "running")
    assert deep <= 1.5 * shallow, f"16 layers peaked {deep / 1e6:.0f} MB, 2 layers {shallow / 1e6:.0f} MB"
    old_deep = peak_growth(16, "concatenated")
    assert old_deep > 1.5 * shallow, f"old formulation: {old_deep / 1e6:.0f} MB vs {shallow / 1e6:.0f} MB"
