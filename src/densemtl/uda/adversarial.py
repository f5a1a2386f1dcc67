"""Adversarial losses and optimiser of the discriminators (labels: source 0, target 1)."""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

SOURCE_LABEL = 0.0
TARGET_LABEL = 1.0


def bce_to_label(logits: torch.Tensor, label: float) -> torch.Tensor:
    """Mean binary cross-entropy of patch ``logits (B, 1, h, w)`` against a constant label."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(label)))


def domain_losses(discriminators: nn.ModuleDict, maps: Mapping[str, torch.Tensor], label: float) -> dict[str, torch.Tensor]:
    """``{key: BCE(D_key(maps[key]), label)}`` for every key of ``maps``.

    Generator step: target maps (not detached), ``label=SOURCE_LABEL``, discriminators frozen
    (:func:`set_requires_grad`). Discriminator step: ``detached`` maps with their own domain's label.
    """
    missing = [k for k in maps if k not in discriminators]
    if missing:
        raise KeyError(f"no discriminator for {missing} (have {list(discriminators)})")
    return {k: bce_to_label(discriminators[k](m), label) for k, m in maps.items()}


def detached(maps: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in maps.items()}


def set_requires_grad(modules: nn.Module | Iterable[nn.Module], flag: bool) -> None:
    """Freeze (``False``) or unfreeze (``True``) every parameter of ``modules``."""
    for m in [modules] if isinstance(modules, nn.Module) else modules:
        for p in m.parameters():
            p.requires_grad_(flag)


def build_discriminator_optimizer(discriminators: nn.Module, lr: float = 1e-4, betas=(0.9, 0.99),
                                  weight_decay: float = 0.0) -> torch.optim.Adam:
    """One Adam over all discriminators (Adam is per-parameter, so this equals one Adam each)."""
    return torch.optim.Adam(discriminators.parameters(), lr=float(lr), betas=tuple(betas), weight_decay=float(weight_decay))
