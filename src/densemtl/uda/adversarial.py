"""Adversarial losses and optimiser of the discriminators (labels: source 0, target 1)."""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

SOURCE_LABEL = 0.0
TARGET_LABEL = 1.0


def bce_to_label(logits: torch.Tensor, label: float) -> torch.Tensor:
    """Mean binary cross-entropy of patch ``logits (B, 1, h, w)`` against a constant label."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(label)))


def set_requires_grad(modules: nn.Module | Iterable[nn.Module], flag: bool) -> None:
    """Freeze (``False``) or unfreeze (``True``) every parameter of ``modules``."""
    for m in [modules] if isinstance(modules, nn.Module) else modules:
        for p in m.parameters():
            p.requires_grad_(flag)


def build_discriminator_optimizer(discriminators: nn.Module, lr: float = 1e-4, betas=(0.9, 0.99),
                                  weight_decay: float = 0.0) -> torch.optim.Adam:
    """One Adam over all discriminators (Adam is per-parameter, so this equals one Adam each)."""
    return torch.optim.Adam(discriminators.parameters(), lr=float(lr), betas=tuple(betas), weight_decay=float(weight_decay))
