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
from torch import nn

from sepray.dsp import center_crop
from sepray.models.residual_function import _layer_forward, _ResidualLayerFunction, pointwise

ACTIVATIONS = ("gated", "relu")


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
