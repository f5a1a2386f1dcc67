"""The "3-ways" task decoder of Hoyer et al. (CVPR 2021), one per task.

Widths per scale ``[s0..s4] = [64, 128, 128, 256, 256]``. The decoder runs stage by stage
(scale 4 down to 0) so that exchange modules (mTEB, PAD-Net distillation) can be applied to
all tasks' features between stages.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.segmentation.deeplabv3 import ASPP

from .blocks import ConvBlock, ReflectionPad1

DECODER_WIDTHS = (64, 128, 128, 256, 256)
HEAD_KINDS = ("conv1x1", "conv3x3")


class PaddedConv3x3(nn.Module):
    """Reflection pad 1 + 3x3 conv (with bias): the prediction conv of Monodepth2's depth
    decoder (its ``dispconv``; the sigmoid is the task's decoding)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.pad = ReflectionPad1()
        self.conv = nn.Conv2d(in_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))


def prediction_head(in_channels: int, out_channels: int, kind: str = "conv1x1") -> nn.Module:
    """A prediction conv: ``conv1x1`` (``nn.Conv2d``, 1x1) or ``conv3x3`` (:class:`PaddedConv3x3`)."""
    if kind == "conv1x1":
        return nn.Conv2d(in_channels, out_channels, 1)
    if kind == "conv3x3":
        return PaddedConv3x3(in_channels, out_channels)
    raise ValueError(f"unknown prediction head {kind!r}; choose from {', '.join(HEAD_KINDS)}")


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


class ThreeWayDecoder(nn.Module):
    """Decoder for one task.

    Args:
        enc_channels: the encoder's 5 channel counts (stem, layer1, layer2, layer3, layer4).
        out_channels: prediction channels of the task.
        head_scales: scales with a prediction head.
        widths: feature width at scales 0..4.
        head: ``conv1x1`` (default) or ``conv3x3`` (reflection-padded, Monodepth2's disparity conv).
    """

    def __init__(self, enc_channels, out_channels: int, head_scales=(0, 1), widths=DECODER_WIDTHS, head: str = "conv1x1"):
        super().__init__()
        c0, c1, c2, c3, c4 = enc_channels
        w = list(widths)
        self.widths = tuple(w)
        self.aspp = ASPP(c4, [6, 12, 18], w[4])
        self.fuse4 = ConvBlock(w[4] + c3, w[4])
        self.pre3, self.fuse3 = ConvBlock(w[4], w[3]), ConvBlock(w[3] + c2, w[3])
        self.pre2, self.fuse2 = ConvBlock(w[3], w[2]), ConvBlock(w[2] + c1, w[2])
        self.pre1, self.fuse1 = ConvBlock(w[2], w[1]), ConvBlock(w[1] + c0, w[1])
        self.pre0, self.fuse0 = ConvBlock(w[1], w[0]), ConvBlock(w[0], w[0])
        self.heads = nn.ModuleDict({str(s): prediction_head(w[s], out_channels, head) for s in sorted(head_scales)})

    def stage(self, scale: int, x: torch.Tensor | None, feats: list[torch.Tensor]) -> torch.Tensor:
        """Run the decoder block producing the features at ``scale`` (4, 3, 2, 1 or 0).

        ``x`` is the previous stage's output (ignored at scale 4); ``feats`` the encoder maps.
        Returns ``(B, widths[scale], H / 2^scale, W / 2^scale)``.
        """
        stem, l1, l2, l3, l4 = feats
        if scale == 4:
            return self.fuse4(torch.cat([self.aspp(l4), l3], 1))
        if scale == 3:
            return self.fuse3(torch.cat([_up(self.pre3(x)), l2], 1))
        if scale == 2:
            return self.fuse2(torch.cat([_up(self.pre2(x)), l1], 1))
        if scale == 1:
            return self.fuse1(torch.cat([_up(self.pre1(x)), stem], 1))
        if scale == 0:
            return self.fuse0(_up(self.pre0(x)))
        raise ValueError(f"decoder scale must be 0..4, got {scale}")

    def head(self, scale: int, x: torch.Tensor) -> torch.Tensor:
        return self.heads[str(scale)](x)

    def prediction_convs(self) -> list[nn.Conv2d]:
        """The convolutions of the prediction heads (scales ascending)."""
        return [h.conv if isinstance(h, PaddedConv3x3) else h for h in self.heads.values()]
