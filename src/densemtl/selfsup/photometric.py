"""Monodepth2 photometric loss terms (Godard et al., ICCV 2019)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class SSIM(nn.Module):
    """``(1 - SSIM) / 2`` per pixel and channel, 3x3 windows with reflection padding, in [0, 1]."""

    C1, C2 = 0.01**2, 0.03**2

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
        mu_x, mu_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
        sigma_x = F.avg_pool2d(x * x, 3, 1) - mu_x**2
        sigma_y = F.avg_pool2d(y * y, 3, 1) - mu_y**2
        sigma_xy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
        n = (2 * mu_x * mu_y + self.C1) * (2 * sigma_xy + self.C2)
        d = (mu_x**2 + mu_y**2 + self.C1) * (sigma_x + sigma_y + self.C2)
        return torch.clamp((1 - n / d) / 2, 0, 1)


_SSIM = SSIM()


def photometric_error(pred: torch.Tensor, target: torch.Tensor, alpha: float = 0.85) -> torch.Tensor:
    """``alpha (1 - SSIM) / 2 + (1 - alpha) L1``, averaged over channels: ``(B, 1, H, W)``."""
    l1 = (pred - target).abs().mean(1, keepdim=True)
    return alpha * _SSIM(pred, target).mean(1, keepdim=True) + (1 - alpha) * l1


def min_reprojection_loss(target: torch.Tensor, warped: list[torch.Tensor], sources: list[torch.Tensor],
                          automask: bool = True, generator: torch.Generator | None = None):
    """Per-pixel minimum over source frames of the photometric error, with auto-masking.

    Auto-masking: the identity errors of the unwarped sources (plus tiny noise to break ties)
    compete in the minimum; pixels where an unwarped source wins (static scene, camera at rest,
    objects moving with the camera) contribute their (small) identity error and are reported
    as masked. Returns ``(loss scalar, mask (B, 1, H, W) bool: True where a warped frame won)``.
    """
    reproj = torch.cat([photometric_error(w, target) for w in warped], 1)
    if automask:
        ident = torch.cat([photometric_error(s, target) for s in sources], 1)
        noise = torch.randn(ident.shape, generator=generator, device=ident.device, dtype=ident.dtype) * 1e-5
        combined = torch.cat([ident + noise, reproj], 1)
    else:
        combined = reproj
    best, idx = combined.min(1, keepdim=True)
    mask = idx >= (len(sources) if automask else 0)
    return best.mean(), mask


def edge_aware_smoothness(disp: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Edge-aware smoothness of the mean-normalised disparity ``(B, 1, H, W)``."""
    d = disp / disp.mean((2, 3), keepdim=True).clamp_min(1e-7)
    dx, dy = (d[..., :, :-1] - d[..., :, 1:]).abs(), (d[..., :-1, :] - d[..., 1:, :]).abs()
    ix = (image[..., :, :-1] - image[..., :, 1:]).abs().mean(1, keepdim=True)
    iy = (image[..., :-1, :] - image[..., 1:, :]).abs().mean(1, keepdim=True)
    return (dx * torch.exp(-ix)).mean() + (dy * torch.exp(-iy)).mean()
