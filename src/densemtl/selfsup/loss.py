"""The Monodepth2 objective on a batch with neighbour frames (paper section 4.4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..tasks.disparity import sigmoid_to_depth
from .geometry import warp_frame
from .photometric import edge_aware_smoothness, min_reprojection_loss


def self_supervised_depth_loss(disp_logits: dict[int, torch.Tensor], image: torch.Tensor, frames: dict[int, torch.Tensor],
                               poses: dict[int, torch.Tensor], K: torch.Tensor, smoothness: float = 1e-3,
                               automask: bool = True, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """Photometric + smoothness loss, averaged over the disparity scales.

    Args:
        disp_logits: ``{scale: (B, 1, H / 2^s, W / 2^s)}`` raw outputs of the disparity head.
        image: target frame ``(B, 3, H, W)`` in [0, 1]; frames: ``{-1: prev, 1: next}``.
        poses: ``{k: (B, 4, 4)}`` transforms target -> frame k (from :class:`PoseNet`).
        K: ``(B, 3, 3)`` intrinsics of the (cropped, scaled) input.

    Each scale's disparity is upsampled to the input size, turned into depth
    (0.1-100 m), used to warp both neighbours into the target; per-pixel minimum reprojection
    with auto-masking; edge-aware smoothness of the mean-normalised disparity at that scale
    weighted ``smoothness / 2^s``.
    """
    size = image.shape[-2:]
    total, info = 0.0, {}
    srcs = [frames[k] for k in sorted(frames)]
    for s, logit in sorted(disp_logits.items()):
        sig = torch.sigmoid(logit)
        depth = sigmoid_to_depth(F.interpolate(sig, size=size, mode="bilinear", align_corners=False))
        warped = [warp_frame(frames[k], depth, K, poses[k]) for k in sorted(frames)]
        reproj, mask = min_reprojection_loss(image, warped, srcs, automask=automask, generator=generator)
        img_s = F.interpolate(image, size=logit.shape[-2:], mode="bilinear", align_corners=False) if s else image
        smooth = edge_aware_smoothness(sig, img_s)
        total = total + reproj + smoothness / (2**s) * smooth
        info[f"photometric/{s}"] = float(reproj.detach())
        info[f"automask/{s}"] = float(mask.float().mean())
    return total / len(disp_logits), info
