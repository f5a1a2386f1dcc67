"""Small building blocks shared by the decoders and exchange modules."""

from __future__ import annotations

import torch
import torch.nn as nn


class ConvBlock(nn.Module):
    """Reflection pad 1 + 3x3 conv (with bias) + ELU; no normalisation (3-ways decoder)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
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
