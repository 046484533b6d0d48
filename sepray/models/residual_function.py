"""The arithmetic of one dilated residual layer, with a memory-lean backward.

:func:`_layer_forward` computes a layer's residual output and adds its skip projection to a running sum;
:class:`_ResidualLayerFunction` wraps it for training, saving only the layer input and the gate's sigmoids (the
gate output is recomputed in backward and no per-layer skip tensor is kept). :func:`pointwise` and
:func:`batched_matmul` are the 1x1 convolutions as batched GEMMs. Used by :mod:`sepray.models.layers`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable


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
