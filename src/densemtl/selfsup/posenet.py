"""Pose network (Monodepth2): ResNet-18 on two concatenated frames -> axis-angle + translation."""

from __future__ import annotations

import timm
import torch
import torch.nn as nn

from .geometry import pose_from_parameters


def load_pose_encoder_weights(encoder: nn.Module, path) -> None:
    """Load a local RGB backbone weights file (torchvision or timm names) into the 6-channel
    pose encoder: the first convolution's weights are duplicated over the two frames and halved.
    A file that already has 6 input channels (e.g. a saved pose encoder) is loaded as is."""
    from ..models.encoder import load_backbone_state, read_state_dict

    sd = dict(read_state_dict(path))
    for k, v in list(sd.items()):
        if k.endswith("conv1.weight") and v.dim() == 4 and v.shape[1] == 3 and "layer" not in k:
            sd[k] = torch.cat([v, v], 1) / 2
    load_backbone_state(encoder, sd, str(path))


class PoseNet(nn.Module):
    """``forward(frame_a, frame_b) -> (axis_angle (B, 3), translation (B, 3))``.

    Encoder: timm ResNet-18 with 6 input channels (with ``pretrained``, timm adapts the first
    layer by repeating the RGB weights and scaling them by 3/6, i.e. duplicated and halved).
    Decoder: 1x1 squeeze (512 -> 256), two 3x3 convs (256), 1x1 conv to 6 numbers, spatial mean,
    x 0.01. Inputs are RGB in [0, 1], normalised inside like the depth network.
    """

    def __init__(self, backbone: str = "resnet18", pretrained: bool | str = False, input_norm: str = "imagenet"):
        super().__init__()
        from ..models.base import INPUT_NORMS

        self.encoder = timm.create_model(backbone, pretrained=pretrained is True, in_chans=6, features_only=True, out_indices=(4,))
        if pretrained not in (False, True, None, ""):
            load_pose_encoder_weights(self.encoder, pretrained)
        c = self.encoder.feature_info.channels()[-1]
        self.squeeze = nn.Conv2d(c, 256, 1)
        self.decoder = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),
                                     nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(256, 6, 1))
        mean, std = INPUT_NORMS[input_norm]
        self.register_buffer("mean", torch.tensor(mean * 2).view(1, 6, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std * 2).view(1, 6, 1, 1), persistent=False)

    def forward(self, frame_a: torch.Tensor, frame_b: torch.Tensor):
        x = (torch.cat([frame_a, frame_b], 1) - self.mean) / self.std
        out = 0.01 * self.decoder(self.squeeze(self.encoder(x)[-1])).mean((2, 3))
        return out[:, :3], out[:, 3:]

    def relative_pose(self, target: torch.Tensor, source: torch.Tensor, source_is_previous: bool) -> torch.Tensor:
        """4x4 transform target -> source. Frames are fed in temporal order; for a previous
        source frame the predicted motion (source -> target) is inverted."""
        if source_is_previous:
            aa, t = self(source, target)
            return pose_from_parameters(aa, t, invert=True)
        aa, t = self(target, source)
        return pose_from_parameters(aa, t)
