"""Small building blocks shared by the decoders and exchange modules."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """``channels_last`` for a 4-D channels-last tensor, else ``contiguous_format``."""
    cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


class _ReflectPad1(torch.autograd.Function):
    """Reflection padding by one pixel as copies into a preallocated tensor of the input's
    memory format; the backward folds the border gradients back onto the rows and columns
    they were copied from. Values are those of ``F.pad(x, (1, 1, 1, 1), mode="reflect")``
    exactly, gradients equal up to the order of the border additions
    (docs/performance.md: PyTorch's CPU reflection-pad kernels are 2-5x slower on
    channels-last tensors)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.fmt = fmt = _memory_format(x)
        B, C, H, W = x.shape
        out = torch.empty((B, C, H + 2, W + 2), dtype=x.dtype, device=x.device, memory_format=fmt)
        out[:, :, 1:-1, 1:-1] = x
        out[:, :, 0, 1:-1] = x[:, :, 1]
        out[:, :, -1, 1:-1] = x[:, :, -2]
        out[:, :, :, 0] = out[:, :, :, 2]      # columns last: the corners come from the padded rows
        out[:, :, :, -1] = out[:, :, :, -3]
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        # differentiable ops only: GradNorm differentiates gradients (create_graph=True)
        gx = g[:, :, 1:-1, 1:-1].clone(memory_format=ctx.fmt)
        gx[:, :, :, 1] += g[:, :, 1:-1, 0]
        gx[:, :, :, -2] += g[:, :, 1:-1, -1]
        gx[:, :, 1, :] += g[:, :, 0, 1:-1]
        gx[:, :, -2, :] += g[:, :, -1, 1:-1]
        gx[:, :, 1, 1] += g[:, :, 0, 0]
        gx[:, :, 1, -2] += g[:, :, 0, -1]
        gx[:, :, -2, 1] += g[:, :, -1, 0]
        gx[:, :, -2, -2] += g[:, :, -1, -1]
        return gx


def reflect_pad1(x: torch.Tensor) -> torch.Tensor:
    """``F.pad(x, (1, 1, 1, 1), mode="reflect")`` for ``(B, C, H, W)`` with ``H, W >= 2``, faster
    in eager mode; traced, exported or compiled graphs get ``F.pad`` itself (one ``Pad`` node,
    one fused kernel)."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return F.pad(x, (1, 1, 1, 1), mode="reflect")
    if x.dim() != 4 or x.shape[-1] < 2 or x.shape[-2] < 2:
        raise ValueError(f"reflection padding by 1 needs a (B, C, H, W) tensor with H, W >= 2, got {tuple(x.shape)}")
    return _ReflectPad1.apply(x)


class ReflectionPad1(nn.Module):
    """``nn.ReflectionPad2d(1)`` computed by :func:`reflect_pad1` (no parameters, same state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reflect_pad1(x)


class ConvBlock(nn.Module):
    """Reflection pad 1 + 3x3 conv (with bias) + ELU; no normalisation (3-ways decoder)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.pad = ReflectionPad1()
        self.conv = nn.Conv2d(in_channels, out_channels, 3)
        self.act = nn.ELU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(self.pad(x)))


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """1x1 conv (no bias) + BatchNorm + ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SpatialGate(nn.Module):
    """PAD-Net style "self-attention": ``conv(x) * sigmoid(gate(x))`` with two 3x3 convs.

    ``(B, C_in, h, w) -> (B, C_out, h, w)``; zero padding.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)
        self.gate = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * torch.sigmoid(self.gate(x))


class CrossTaskDistillation(nn.Module):
    """PAD-Net distillation: ``f_i + sum_{j != i} SA_{j->i}(f_j)`` for every task i."""

    def __init__(self, tasks: tuple[str, ...], channels: int):
        super().__init__()
        self.tasks = tuple(tasks)
        self.sa = nn.ModuleDict(
            {i: nn.ModuleDict({j: SpatialGate(channels, channels, bias=True) for j in tasks if j != i}) for i in tasks}
        )

    def forward(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for i in self.tasks:
            y = feats[i]
            for j in self.tasks:
                if j != i:
                    y = y + self.sa[i][j](feats[j])
            out[i] = y
        return out
