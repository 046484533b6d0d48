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

import contextlib

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


def _accumulate(acc: torch.Tensor, weight: torch.Tensor, h: torch.Tensor, inplace: bool) -> torch.Tensor:
    """``acc (B, S, L) + weight (S, C) @ h (B, C, L)`` in ``acc``'s dtype; written into ``acc`` when ``inplace``.

    ``acc`` may be broadcast over the batch (then it is not written to), and of a wider dtype than ``h`` (a
    float32 running sum under autocast).
    """
    inplace = inplace and acc.is_contiguous()  # never write into a broadcast tensor
    if acc.dtype == h.dtype:
        w = weight.expand(h.shape[0], -1, -1)
        return acc.baddbmm_(w, h) if inplace else torch.baddbmm(acc, w, h)
    product = batched_matmul(weight, h)
    return acc.add_(product) if inplace else acc + product


def _layer_forward(
    x, weight, bias, extra, res_weight, res_bias, skip_weight, skip_acc, dilation, gated, crop, inference
):
    """One residual layer: -> (residual (B, C, T') or empty, skip, s or None, h).

    ``skip`` is ``skip_acc + skip_weight @ h[..., crop]`` (B, S, L) when ``skip_weight`` is given, else the
    cropped ``h`` (B, C, L). ``inference`` (no gradient wanted): the gate is written over its own sigmoid and
    the skip sum is accumulated in place, so a layer holds its input, one (B, 2C, T') buffer and its residual.
    """
    channels = x.shape[1]
    xin = x if gated else F.relu(x)
    if gated:  # tanh(a1) = 2 sigmoid(2 a1) - 1: scale the tiny weights, not the big activations
        scale = torch.ones(weight.shape[0], dtype=weight.dtype, device=weight.device)
        scale[:channels] = 2.0
        a = F.conv1d(xin, weight * scale[:, None, None], bias * scale, dilation=dilation)  # (B, 2C, T')
        if extra is not None:
            a += extra * scale[:, None]
        s = a.sigmoid_()  # [sigmoid(2 a1); sigmoid(a2)]
        s1, s2 = s[:, :channels], s[:, channels:]
        if inference:  # (2 s1 - 1) s2 = tanh(a1) sigmoid(a2), over s1
            h = s1.mul_(s2).mul_(2.0).sub_(s2)
        else:
            h = torch.addcmul(torch.neg(s2), s1, s2, value=2.0)  # (B, C, T')
    else:
        a = F.conv1d(xin, weight, bias, dilation=dilation)  # (B, C, T')
        if extra is not None:
            a += extra
        s, h = None, a.relu_()
    del xin
    if res_weight is not None:
        left = (x.shape[-1] - h.shape[-1]) // 2
        residual = batched_matmul(res_weight[:, :, 0], h).add_(res_bias[:, None])
        residual += x[..., left : left + h.shape[-1]]
    else:
        residual = x.new_empty(0)
    skip = h[..., crop[0] : crop[0] + crop[1]]
    if skip_weight is not None and crop[1]:
        skip = _accumulate(skip_acc, skip_weight[:, :, 0], skip, inference)
    return residual, skip, s, h


class _ResidualLayerFunction(torch.autograd.Function):
    """Fused forward/backward of one :class:`DilatedResidualLayer` (no full-size zero-filled slice gradients,
    tanh computed as ``2 * sigmoid(2a) - 1``, 1x1 convs as GEMMs, the skip 1x1 conv and running skip sum fused
    in).

    Inputs: ``x (B, C, T)``, dilated conv ``weight (H, C, k)`` / ``bias (H,)``, ``extra (B, H, T')`` or None
    (added to the conv output: the conditioning projection), residual 1x1 ``res_weight (C, C, 1)`` /
    ``res_bias (C,)`` or None, skip 1x1 ``skip_weight (S, C, 1)`` and running sum ``skip_acc (B, S, L)`` (or
    both None), then ``dilation``, ``gated`` and the skip crop ``(skip_left, skip_length)``
    (``skip_length == 0``: no skip). Outputs: ``residual (B, C, T')`` (empty when there is no residual conv)
    and ``skip_acc + skip_weight @ h[..., skip_left : skip_left + skip_length]`` (B, S, L), or that crop of
    ``h`` (B, C, L) without ``skip_weight``.

    Saved for backward: the input and the gate's sigmoids (gated) or ``h`` (relu): ``h`` is recomputed from
    the sigmoids, and the running sum is not needed at all.
    """

    @staticmethod
    def forward(
        ctx, x, weight, bias, extra, res_weight, res_bias, skip_weight, skip_acc, dilation, gated, skip_left,
        skip_length,
    ):  # fmt: skip
        crop = (skip_left, skip_length)
        residual, skip, s, h = _layer_forward(
            x, weight, bias, extra, res_weight, res_bias, skip_weight, skip_acc, dilation, gated, crop, False
        )
        ctx.save_for_backward(x, weight, res_weight, skip_weight, s if gated else h)
        ctx.config = (dilation, gated, skip_left, skip_length, extra is not None)
        ctx.set_materialize_grads(False)  # unused outputs give None gradients, not zero tensors
        unused = ([] if res_weight is not None else [residual]) + ([] if skip_length else [skip])
        ctx.mark_non_differentiable(*unused)
        return residual, skip

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_residual, grad_skip):
        x, weight, res_weight, skip_weight, saved = ctx.saved_tensors
        dilation, gated, skip_left, skip_length, has_extra = ctx.config
        channels = x.shape[1]
        need = ctx.needs_input_grad
        if gated:  # recompute h = (2 s1 - 1) s2 from the saved sigmoids
            s = saved
            s1, s2 = s[:, :channels], s[:, channels:]
            h = torch.addcmul(torch.neg(s2), s1, s2, value=2.0)
        else:
            h = saved
        crop = slice(skip_left, skip_left + skip_length)
        if res_weight is not None and grad_residual is not None:
            grad_h = batched_matmul(res_weight[:, :, 0].t(), grad_residual)  # (B, C, T')
        else:
            grad_h = torch.zeros_like(h)
        grad_skip_weight = grad_skip_acc = None
        if skip_length and grad_skip is not None:
            if skip_weight is not None:
                grad_product = grad_skip.to(h.dtype)  # (B, S, L)
                grad_h[..., crop] += batched_matmul(skip_weight[:, :, 0].t(), grad_product)
                if need[6]:
                    grad_skip_weight = torch.bmm(grad_product, h[..., crop].transpose(1, 2)).sum(0)[
                        :, :, None
                    ]
                grad_skip_acc = grad_skip if need[7] else None
            else:
                grad_h[..., crop] += grad_skip
        if gated:
            # With t = tanh(a1) = 2 s1 - 1 and h = t s2 (g = grad_h):
            # grad_a1 = g s2 (1 - t^2) = g s2 + g h - 2 g h s1;  grad_a2 = g t s2 (1 - s2) = g h - g h s2
            grad_a = torch.empty_like(s)  # (B, 2C, T')
            gh = torch.mul(grad_h, h)
            torch.mul(grad_h, s2, out=grad_a[:, :channels]).add_(gh).addcmul_(gh, s1, value=-2.0)
            torch.addcmul(gh, gh, s2, value=-1.0, out=grad_a[:, channels:])
            del gh, grad_h
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
        grads = (grad_x, grad_weight, grad_bias, grad_extra, grad_res_weight, grad_res_bias)
        return grads + (grad_skip_weight, grad_skip_acc) + (None,) * 4


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
        return self._run(x, cond, skip_length, None)

    def add_skip(
        self,
        x: torch.Tensor,
        skip_sum: torch.Tensor,
        cond: torch.Tensor | None = None,
        skip_length: int | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(B, C, T), running sum (B, skip_channels, L) -> (residual (B, C, T - context) or None, new sum).

        The new sum is ``skip_sum + skip.weight @ crop(h)`` (the skip conv *without* its bias: a stack adds the
        biases once). ``L = skip_length`` (default ``T - context``); ``skip_sum`` may be broadcast over the
        batch, and be float32 under autocast. Without gradients a contiguous sum is updated in place and no
        per-layer skip tensor is kept: memory does not grow with the number of layers.
        """
        if self.skip is None:
            raise ValueError("add_skip needs a layer built with skip_channels")
        return self._run(
            x, cond, x.shape[-1] - self.context if skip_length is None else skip_length, skip_sum
        )

    def _run(self, x, cond, skip_length, skip_sum):
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
            None if skip_sum is None else self.skip.weight,
        )
        # The fused function does its own casting: under autocast it runs in the autocast dtype (the running
        # skip sum keeps its own dtype).
        device = x.device.type
        autocast = torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)
        dtype = torch.get_autocast_dtype(device) if autocast else x.dtype
        tensors = tuple(None if t is None else t.to(dtype) for t in tensors)
        grad = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (*tensors, skip_sum)
        )
        args = (*tensors, skip_sum, self.dilation, self.activation == "gated")
        crop = ((length - skip_length) // 2, skip_length)
        with torch.autocast(device, enabled=False) if autocast else contextlib.nullcontext():
            if grad:
                residual, skip = _ResidualLayerFunction.apply(*args, *crop)
            else:
                residual, skip, _, _ = _layer_forward(*args, crop, True)
        return (residual if res is not None else None), (skip if skip_length else None)

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
    to ``skip_length``, sent through their 1x1 convs and added to one running sum as each layer runs, so
    inference memory does not grow with depth. ``cond (B, cond_channels, T_c)``, aligned (centred) with ``x``,
    feeds every layer.
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
        if not self.skip_channels:
            for layer in self.layers:
                x, _ = layer.core(x, cond, 0)
            return x, None
        # A running sum, started from the sum of the skip biases: no layer's skip output outlives its layer.
        bias = torch.stack([layer.skip.bias for layer in self.layers]).sum(0)  # (skip,)
        device = x.device.type
        autocast = torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)
        dtype = torch.get_autocast_dtype(device) if autocast else x.dtype  # what the layers compute in
        skip = bias.to(torch.promote_types(dtype, torch.float32))[:, None].expand(
            x.shape[0], -1, skip_length
        )  # (B, skip, L), float32 (or float64) even under autocast
        if not (torch.is_grad_enabled() and bias.requires_grad):
            skip = skip.contiguous()  # summed in place
        for layer in self.layers:
            x, skip = layer.add_skip(x, skip, cond, skip_length)  # the previous x is freed here
        return x, skip.to(dtype)  # (B, skip, skip_length)


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
