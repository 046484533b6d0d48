"""Blocks shared by several model families.

* :class:`DilatedResidualLayer` / :class:`DilatedResidualStack`: the non-causal dilated residual layers of the
  WaveNet separator, and of the Universal Music Translation encoder (ReLU variant) and decoder (gated variant
  with a per-layer conditioning input). All convolutions are *valid* (no padding): a layer with kernel ``k`` and
  dilation ``d`` shortens the time axis by ``context = (k - 1) * d`` samples, half on each side (odd kernels
  only, so every layer stays centred).
* :func:`decimate` / :class:`Upsample2x`: the Wave-U-Net resampling pair (drop every other sample; interpolate
  back so that the kept samples line up again).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from sepray.dsp import center_crop

ACTIVATIONS = ("gated", "relu")


def pointwise(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """Apply a kernel-1 ``nn.Conv1d`` as one matrix product: (B, C_in, T) -> (B, C_out, T).

    Same result as ``conv(x)``; on CPU a batched GEMM is faster than conv1d's 1x1 path.
    """
    y = batched_matmul(conv.weight[:, :, 0], x)
    return y if conv.bias is None else y.add_(conv.bias[:, None])


def batched_matmul(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``weight (O, I)`` applied to every batch item of ``x (B, I, T)`` -> (B, O, T), contiguous.

    ``torch.matmul`` would fold the batch into a transposed copy; an expanded ``bmm`` does not copy.
    """
    return torch.bmm(weight.expand(x.shape[0], -1, -1), x)


class _ResidualLayerFunction(torch.autograd.Function):
    """Fused forward/backward of one :class:`DilatedResidualLayer` (no full-size zero-filled slice gradients,
    tanh computed as ``2 * sigmoid(2a) - 1``, 1x1 convs as GEMMs).

    Inputs: ``x (B, C, T)``, dilated conv ``weight (H, C, k)`` / ``bias (H,)``, ``extra (B, H, T')`` or None
    (added to the conv output: the conditioning projection), residual 1x1 ``res_weight (C, C, 1)`` /
    ``res_bias (C,)`` or None, then ``dilation``, ``gated`` and the skip crop ``(skip_left, skip_length)``
    (``skip_length == 0``: no skip). Outputs: ``residual (B, C, T')`` (empty when there is no residual conv)
    and ``h[..., skip_left : skip_left + skip_length]`` (B, C, skip_length).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, extra, res_weight, res_bias, dilation, gated, skip_left, skip_length):
        channels = x.shape[1]
        xin = x if gated else F.relu(x)
        if gated:  # tanh(a1) = 2 sigmoid(2 a1) - 1: scale the tiny weights, not the big activations
            scale = torch.ones(weight.shape[0], dtype=weight.dtype, device=weight.device)
            scale[:channels] = 2.0
            a = F.conv1d(xin, weight * scale[:, None, None], bias * scale, dilation=dilation)  # (B, H, T')
            if extra is not None:
                a += extra * scale[:, None]
        else:
            a = F.conv1d(xin, weight, bias, dilation=dilation)  # (B, H, T')
            if extra is not None:
                a += extra
        if gated:
            s = a.sigmoid_()  # [sigmoid(2 a1); sigmoid(a2)]
            s1, s2 = s[:, :channels], s[:, channels:]
            h = torch.addcmul(torch.neg(s2), s1, s2, value=2.0)  # (2 s1 - 1) s2 = tanh(a1) sigmoid(a2)
        else:
            s = None
            h = a.relu_()
        if res_weight is not None:
            left = (x.shape[-1] - h.shape[-1]) // 2
            residual = batched_matmul(res_weight[:, :, 0], h).add_(res_bias[:, None])
            residual += x[..., left : left + h.shape[-1]]
        else:
            residual = x.new_empty(0)
        ctx.save_for_backward(x, weight, res_weight, s, h)
        ctx.config = (dilation, gated, skip_left, skip_length, extra is not None)
        ctx.set_materialize_grads(False)  # unused outputs give None gradients, not zero tensors
        skip = h[..., skip_left : skip_left + skip_length]
        unused = ([] if res_weight is not None else [residual]) + ([] if skip_length else [skip])
        ctx.mark_non_differentiable(*unused)
        return residual, skip

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_residual, grad_skip):
        x, weight, res_weight, s, h = ctx.saved_tensors
        dilation, gated, skip_left, skip_length, has_extra = ctx.config
        channels = x.shape[1]
        need = ctx.needs_input_grad
        if res_weight is not None and grad_residual is not None:
            grad_h = batched_matmul(res_weight[:, :, 0].t(), grad_residual)  # (B, C, T')
        else:
            grad_h = torch.zeros_like(h)
        if skip_length and grad_skip is not None:
            grad_h[..., skip_left : skip_left + skip_length] += grad_skip
        if gated:
            # With t = tanh(a1) = 2 s1 - 1 and h = t s2 (g = grad_h):
            # grad_a1 = g s2 (1 - t^2) = g s2 + g h - 2 g h s1;  grad_a2 = g t s2 (1 - s2) = g h - g h s2
            s1, s2 = s[:, :channels], s[:, channels:]
            grad_a = torch.empty_like(s)  # (B, 2C, T')
            gh = torch.mul(grad_h, h)
            torch.mul(grad_h, s2, out=grad_a[:, :channels]).add_(gh).addcmul_(gh, s1, value=-2.0)
            torch.addcmul(gh, gh, s2, value=-1.0, out=grad_a[:, channels:])
        else:
            grad_a = grad_h.masked_fill_(h <= 0, 0.0)
        xin = x if gated else F.relu(x)
        grad_x, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad_a, xin, weight, [weight.shape[0]], [1], [0], [dilation], False, [0], 1,
            [need[0], need[1], need[2]],
        )  # fmt: skip
        if grad_x is not None:
            if not gated:
                grad_x.masked_fill_(x <= 0, 0.0)
            if res_weight is not None and grad_residual is not None:
                left = (x.shape[-1] - h.shape[-1]) // 2
                grad_x[..., left : left + h.shape[-1]] += grad_residual
        grad_extra = grad_a if has_extra and need[3] else None
        grad_res_weight = grad_res_bias = None
        if res_weight is not None and grad_residual is not None:
            if need[4]:
                grad_res_weight = torch.bmm(grad_residual, h.transpose(1, 2)).sum(0)[:, :, None]
            if need[5]:
                grad_res_bias = grad_residual.sum((0, 2))
        return (grad_x, grad_weight, grad_bias, grad_extra, grad_res_weight, grad_res_bias) + (None,) * 4


class DilatedResidualLayer(nn.Module):
    """One non-causal dilated residual layer with valid convolutions.

    ``activation="gated"`` (WaveNet): ``h = tanh(a) * sigmoid(b)`` where ``[a; b]`` is one fused dilated conv
    with ``2 * channels`` outputs (plus the layer's own 1x1 projection of the conditioning input, if any).
    ``activation="relu"`` (UMT encoder): ``h = relu(conv(relu(x)) + cond)``.

    Outputs: ``residual = crop(x) + conv1x1(h)`` and ``skip = conv1x1(crop(h))``. The skip path is cropped to
    the requested length *before* its 1x1 conv, so no work is spent on samples that are thrown away later.
    Forward and backward are fused by hand (:class:`_ResidualLayerFunction`); parameters are plain
    ``nn.Conv1d`` modules (``conv``, ``cond``, ``residual``, ``skip``).

    Shapes: ``x (B, channels, T)`` -> ``residual (B, channels, T - context)``,
    ``skip (B, skip_channels, skip_length)``; ``cond (B, cond_channels, T_c)`` with ``T_c >= T - context``,
    aligned (centred) with ``x``.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        dilation: int = 1,
        skip_channels: int | None = None,
        activation: str = "gated",
        cond_channels: int = 0,
        residual: bool = True,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
        if dilation < 1 or channels < 1:
            raise ValueError(f"need channels >= 1 and dilation >= 1, got {channels}, {dilation}")
        if not residual and not skip_channels:
            raise ValueError("a layer without a residual output needs a skip output")
        self.channels = channels
        self.dilation = dilation
        self.activation = activation
        self.context = (kernel_size - 1) * dilation
        hidden = 2 * channels if activation == "gated" else channels
        self.conv = nn.Conv1d(channels, hidden, kernel_size, dilation=dilation)
        self.cond = nn.Conv1d(cond_channels, hidden, 1, bias=False) if cond_channels else None
        self.residual = nn.Conv1d(channels, channels, 1) if residual else None
        self.skip = nn.Conv1d(channels, skip_channels, 1) if skip_channels else None

    def core(
        self, x: torch.Tensor, cond: torch.Tensor | None = None, skip_length: int | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(B, C, T) -> (residual (B, C, T - context) or None, cropped h (B, C, skip_length) or None).

        ``skip_length=None`` keeps all of ``h``; 0 returns no ``h``.
        """
        length = x.shape[-1] - self.context
        if length < 1:
            raise ValueError(
                f"input length {x.shape[-1]} is too short for a layer with context {self.context}"
            )
        if skip_length is None:
            skip_length = length
        if not 0 <= skip_length <= length:
            raise ValueError(f"skip_length {skip_length} must be in [0, {length}]")
        extra = None
        if self.cond is not None:
            if cond is None:
                raise ValueError("this layer was built with cond_channels > 0 and needs a conditioning input")
            extra = pointwise(self.cond, center_crop(cond, length))  # (B, H, T - context)
        res = self.residual
        tensors = (
            x,
            self.conv.weight,
            self.conv.bias,
            extra,
            None if res is None else res.weight,
            None if res is None else res.bias,
        )
        # The fused function does its own casting: under autocast it runs in the autocast dtype.
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        tensors = tuple(None if t is None else t.to(dtype) for t in tensors)
        with torch.autocast(device, enabled=False):
            residual, h = _ResidualLayerFunction.apply(
                *tensors, self.dilation, self.activation == "gated", (length - skip_length) // 2, skip_length
            )
        return (residual if res is not None else None), (h if skip_length else None)

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor | None = None, skip_length: int | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(B, channels, T) -> (residual (B, channels, T - context) or None, skip (B, skip, L) or None)."""
        residual, h = self.core(x, cond, skip_length if self.skip is not None else 0)
        return residual, (pointwise(self.skip, h) if self.skip is not None else None)


class DilatedResidualStack(nn.Module):
    """``blocks`` x ``layers_per_block`` :class:`DilatedResidualLayer`, dilation ``dilation_base ** i`` in a block.

    ``forward(x, cond, skip_length)`` returns ``(residual, skip_sum)``:
    ``x (B, channels, T)`` -> ``residual (B, channels, T - context)`` (None when ``final_residual`` is False,
    which drops the last layer's unused residual conv) and ``skip_sum (B, skip_channels, skip_length)``
    (None without skip outputs; ``skip_length`` defaults to ``T - context``). All layer skips are centre-cropped
    to ``skip_length`` and summed through one fused 1x1 conv (mathematically the sum of the per-layer 1x1 skip
    convs). ``cond (B, cond_channels, T_c)``, aligned (centred) with ``x``, feeds every layer.
    """

    def __init__(
        self,
        channels: int,
        blocks: int,
        layers_per_block: int,
        kernel_size: int = 3,
        dilation_base: int = 2,
        skip_channels: int | None = None,
        activation: str = "gated",
        cond_channels: int = 0,
        final_residual: bool = True,
    ) -> None:
        super().__init__()
        if blocks < 1 or layers_per_block < 1 or dilation_base < 1:
            raise ValueError("need blocks >= 1, layers_per_block >= 1 and dilation_base >= 1")
        count = blocks * layers_per_block
        self.skip_channels = skip_channels
        self.layers = nn.ModuleList(
            DilatedResidualLayer(
                channels,
                kernel_size,
                dilation_base ** (index % layers_per_block),
                skip_channels=skip_channels,
                activation=activation,
                cond_channels=cond_channels,
                residual=final_residual or index < count - 1,
            )
            for index in range(count)
        )

    @property
    def context(self) -> int:
        """Input samples lost over the stack (receptive field - 1), split evenly between both sides."""
        return sum(layer.context for layer in self.layers)

    def output_length(self, input_length: int) -> int:
        return input_length - self.context

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor | None = None, skip_length: int | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(B, channels, T) -> (residual (B, channels, T - context) | None, skip sum (B, skip, L) | None)."""
        if skip_length is None:
            skip_length = x.shape[-1] - self.context
        if not 0 < skip_length <= x.shape[-1] - self.context:
            raise ValueError(
                f"skip_length {skip_length} must be in [1, {x.shape[-1] - self.context}] for input length "
                f"{x.shape[-1]} (stack context {self.context})"
            )
        hidden = []
        for layer in self.layers:
            x, h = layer.core(x, cond, skip_length if self.skip_channels else 0)  # h: (B, C, skip_length)
            hidden.append(h)
        if not self.skip_channels:
            return x, None
        # One GEMM instead of one 1x1 conv + one add per layer.
        weight = torch.cat([layer.skip.weight[:, :, 0] for layer in self.layers], dim=1)  # (skip, L * C)
        bias = torch.stack([layer.skip.bias for layer in self.layers]).sum(0)
        return x, batched_matmul(weight, torch.cat(hidden, dim=1)).add_(
            bias[:, None]
        )  # (B, skip, skip_length)


def decimate(x: torch.Tensor) -> torch.Tensor:
    """Keep every other sample, starting with the first: (..., T) -> (..., ceil(T / 2))."""
    return x[..., ::2]


class Upsample2x(nn.Module):
    """Inverse of :func:`decimate`: input samples stay at the even output positions, odd positions interpolate.

    ``learned=False``: midpoints ``(x[k] + x[k+1]) / 2``; ``learned=True``: ``w * x[k] + (1 - w) * x[k+1]`` with
    a per-channel ``w = sigmoid(weight)`` (Wave-U-Net's learned interpolation; starts at linear).
    ``same=False`` (valid geometry): (B, C, M) -> (B, C, 2M - 1), both ends on input samples.
    ``same=True``: (B, C, M) -> (B, C, 2M), the last odd position repeats the last sample.
    """

    def __init__(self, channels: int, learned: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels)) if learned else None

    def forward(self, x: torch.Tensor, same: bool = False) -> torch.Tensor:
        left, right = x[..., :-1], x[..., 1:]
        if self.weight is None:
            mid = 0.5 * (left + right)
        else:
            w = torch.sigmoid(self.weight)[:, None]  # (C, 1)
            mid = right + w * (left - right)
        mid = torch.cat([mid, x[..., -1:]], dim=-1)  # (B, C, M); the last one is only kept when same
        out = torch.stack([x, mid], dim=-1).flatten(-2)  # (B, C, 2M)
        return out if same else out[..., :-1]
