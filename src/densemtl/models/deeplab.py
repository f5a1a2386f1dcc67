"""STL and MTL baselines: encoder + DeepLab-v3 head(s) (Vandenhende et al.'s survey)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

from .base import ModelOutput, MultiTaskModel
from .encoder import Encoder
from .registry import register_model


class DeepLabMTL(MultiTaskModel):
    """Shared encoder + one DeepLab-v3 head (ASPP 12/24/36, 256 ch) per task on layer4.

    Each head's output (stride 16) is upsampled bilinearly to the input size (scale 0).
    """

    def __init__(self, tasks, num_classes, backbone, pretrained, input_norm="imagenet"):
        super().__init__(tasks, num_classes, (0,), input_norm)
        self.encoder = Encoder(backbone, pretrained)
        self.heads = nn.ModuleDict({t: DeepLabHead(self.encoder.channels[-1], self.channels[t]) for t in self.tasks})
        self.init_prediction_biases()

    def prediction_layers(self):
        return {t: [self.heads[t][-1]] for t in self.tasks}

    def forward(self, x: torch.Tensor) -> ModelOutput:
        self.check_input(x)
        top = self.encoder(self.normalize(x))[-1]
        size = x.shape[-2:]
        return {
            t: {0: F.interpolate(self.heads[t](top), size=size, mode="bilinear", align_corners=False)}
            for t in self.tasks
        }


@register_model("stl", "single-task network: encoder + DeepLab-v3 head")
def stl(tasks, num_classes, backbone, pretrained, *, input_norm="imagenet"):
    """Single-task learning baseline (exactly one task)."""
    if len(tasks) != 1:
        raise ValueError(f"model 'stl' takes exactly one task, got {list(tasks)}; train one STL model per task")
    return DeepLabMTL(tasks, num_classes, backbone, pretrained, input_norm)


@register_model("mtl", "shared encoder + one DeepLab-v3 head per task")
def mtl(tasks, num_classes, backbone, pretrained, *, input_norm="imagenet"):
    """Multi-task baseline with hard parameter sharing."""
    return DeepLabMTL(tasks, num_classes, backbone, pretrained, input_norm)
