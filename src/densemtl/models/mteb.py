"""mTEB: multi-task exchange block (paper section 3.2.1, Eq. 5)."""

from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import conv_bn_relu
from .xtam import DirectionalXTAM

FUSIONS = ("add", "prod", "concat")
# attention downscale factor s per decoder scale
XTAM_DOWNSCALE = {4: 1, 3: 1, 2: 2, 1: 4}


class MTEB(nn.Module):
    """One directional xTAM per ordered task pair, fused into each target task's features.

    ``forward({task: (B, C, h, w)}) -> {task: (B, C, h, w)}``, with
    ``add``: ``f_i + F_i([f_{j->i}]_j)``; ``prod``: ``f_i * F_i(...)``;
    ``concat``: ``F_i([f_i, f_{j->i}...])`` (no residual). Sources are concatenated in
    canonical task order; ``F_i`` = 1x1 conv (no bias) + BN + ReLU.
    """

    def __init__(self, tasks: tuple[str, ...], channels: int, s: int, fusion: str = "add", **xtam_options):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got '{fusion}'")
        if len(tasks) < 2:
            raise ValueError(f"mTEB needs at least two tasks, got {list(tasks)}")
        self.tasks = tuple(tasks)
        self.fusion = fusion
        self.xtam = nn.ModuleDict(
            {i: nn.ModuleDict({j: DirectionalXTAM(channels, s, **xtam_options) for j in tasks if j != i}) for i in tasks}
        )
        n_in = (len(tasks) - (0 if fusion == "concat" else 1)) * channels
        self.fuse = nn.ModuleDict({i: conv_bn_relu(n_in, channels) for i in tasks})

    def forward(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for i in self.tasks:
            directional = [self.xtam[i][j](feats[i], feats[j]) for j in self.tasks if j != i]
            if self.fusion == "concat":
                out[i] = self.fuse[i](torch.cat([feats[i], *directional], 1))
            else:
                r = self.fuse[i](torch.cat(directional, 1))
                out[i] = feats[i] + r if self.fusion == "add" else feats[i] * r
        return out
