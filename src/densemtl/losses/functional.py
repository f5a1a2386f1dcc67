"""Loss functions of the four tasks (DESIGN section 6). Tensors only, no task registry.

Shapes: predictions ``(B, C, H, W)`` at the label size; labels as documented per function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255
D_FAR = 655.36  # metres; inverse-depth code z = D_FAR / (d + EPS)
EPS = 0.01  # metres


def depth_to_code(depth: torch.Tensor) -> torch.Tensor:
    """Metric depth (m) -> inverse-depth code ``z = 655.36 / (d + 0.01)``."""
    return D_FAR / (depth + EPS)


def code_to_depth(code: torch.Tensor) -> torch.Tensor:
    """Inverse-depth code -> metric depth (m), the exact inverse ``d = 655.36 / z - 0.01``."""
    return D_FAR / code - EPS


def check_finite(name: str, **tensors: torch.Tensor) -> None:
    """Raise ``FloatingPointError`` naming the task if any tensor holds NaN or Inf."""
    for what, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            bad = (~torch.isfinite(t)).sum().item()
            raise FloatingPointError(f"task '{name}': {what} contains {bad} NaN/Inf value(s)")


def semseg_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Cross-entropy; ``logits (B, K, H, W)``, ``labels (B, H, W)`` int64 with 255 = void."""
    if not (labels != ignore_index).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels.long(), ignore_index=ignore_index)


def berhu(residual: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """Reverse Huber, elementwise: ``|r|`` if ``|r| <= c`` else ``(r^2 + c^2) / (2c)``."""
    a = residual.abs()
    c = torch.as_tensor(threshold, dtype=a.dtype, device=a.device)
    quad = (residual.square() + c.square()) / (2 * c).clamp_min(torch.finfo(a.dtype).tiny)
    return torch.where(a <= c, a, quad)


def depth_loss(code_pred: torch.Tensor, depth: torch.Tensor, threshold_ratio: float = 0.2) -> torch.Tensor:
    """berHu on the inverse-depth code, mean over valid pixels.

    ``code_pred (B, 1, H, W)`` predicted code; ``depth (B, 1, H, W)`` metres, ``<= 0`` invalid.
    The threshold is ``0.2 * max |residual|`` over the valid pixels of the batch (detached).
    """
    valid = depth > 0
    if not valid.any():
        return code_pred.sum() * 0.0
    r = code_pred[valid] - depth_to_code(depth[valid])
    c = threshold_ratio * r.detach().abs().max()
    return berhu(r, c).mean()


def normals_loss(pred: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """``1 - cos(n_hat, n)`` over valid pixels; ``(B, 3, H, W)``, zero GT vector = invalid."""
    valid = normals.abs().sum(1) > 0
    if not valid.any():
        return pred.sum() * 0.0
    cos = F.cosine_similarity(pred, normals, dim=1, eps=1e-8)
    return (1 - cos[valid]).mean()


def edges_loss(logit: torch.Tensor, edges: torch.Tensor, pos_weight: float = 0.95, neg_weight: float = 0.05) -> torch.Tensor:
    """Weighted BCE: 0.95 on edge pixels, 0.05 on the rest; ``(B, 1, H, W)``, 255 = ignore."""
    valid = edges != IGNORE_INDEX
    if not valid.any():
        return logit.sum() * 0.0
    target = (edges == 1).to(logit.dtype)
    weight = torch.where(target > 0, torch.full_like(target, pos_weight), torch.full_like(target, neg_weight))
    loss = F.binary_cross_entropy_with_logits(logit, target, weight=weight, reduction="none")
    return loss[valid].mean()
