"""PAD-Net (Xu et al., CVPR 2018) on layer4 features, as in Vandenhende et al.'s survey."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.resnet import Bottleneck

from .base import ModelOutput, MultiTaskModel
from .blocks import CrossTaskDistillation
from .encoder import Encoder
from .registry import register_model


def _bottlenecks(in_channels: int, width: int = 256) -> nn.Sequential:
    planes = width // Bottleneck.expansion
    down = None
    if in_channels != width:
        down = nn.Sequential(nn.Conv2d(in_channels, width, 1, bias=False), nn.BatchNorm2d(width))
    return nn.Sequential(Bottleneck(in_channels, planes, downsample=down), Bottleneck(width, planes))


class PADNet(MultiTaskModel):
    """Per task: two bottlenecks (-> 256) + 1x1 intermediate prediction (deeply supervised,
    scale 4); multi-modal distillation ``f_i + sum_j SA(f_j)``; two bottlenecks + 1x1 conv,
    upsampled bilinearly to the input size (scale 0)."""

    def __init__(self, tasks, num_classes, backbone, pretrained, width=256, input_norm="imagenet"):
        super().__init__(tasks, num_classes, (0, 4), input_norm)
        self.encoder = Encoder(backbone, pretrained)
        c = self.encoder.channels[-1]
        self.initial = nn.ModuleDict({t: _bottlenecks(c, width) for t in self.tasks})
        self.intermediate = nn.ModuleDict({t: nn.Conv2d(width, self.channels[t], 1) for t in self.tasks})
        self.distill = CrossTaskDistillation(self.tasks, width) if len(self.tasks) > 1 else None
        self.final = nn.ModuleDict({t: _bottlenecks(width, width) for t in self.tasks})
        self.predictor = nn.ModuleDict({t: nn.Conv2d(width, self.channels[t], 1) for t in self.tasks})
        self.init_prediction_biases()

    def prediction_layers(self):
        return {t: [self.intermediate[t], self.predictor[t]] for t in self.tasks}

    def forward(self, x: torch.Tensor) -> ModelOutput:
        self.check_input(x)
        top = self.encoder(self.normalize(x))[-1]
        f = {t: self.initial[t](top) for t in self.tasks}
        out: ModelOutput = {t: {4: self.intermediate[t](f[t])} for t in self.tasks}
        if self.distill is not None:
            f = self.distill(f)
        size = x.shape[-2:]
        for t in self.tasks:
            y = self.predictor[t](self.final[t](f[t]))
            out[t][0] = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return out


@register_model("padnet", "PAD-Net: intermediate predictions + multi-modal distillation on layer4")
def padnet(tasks, num_classes, backbone, pretrained, *, input_norm="imagenet"):
    """PAD-Net baseline."""
    return PADNet(tasks, num_classes, backbone, pretrained, input_norm=input_norm)
