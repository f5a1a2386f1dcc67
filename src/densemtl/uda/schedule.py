"""Polynomial learning-rate decay (power 0.9), as in ADVENT / DeepLab."""

from __future__ import annotations

import torch


def poly_factor(step: int, max_steps: int, power: float = 0.9) -> float:
    """``(1 - step / max_steps) ** power``, 0 from ``max_steps`` on."""
    if max_steps <= 0:
        raise ValueError(f"max_steps must be > 0, got {max_steps}")
    return max(0.0, 1.0 - float(step) / float(max_steps)) ** float(power)


def poly_lr(base_lr: float, step: int, max_steps: int, power: float = 0.9) -> float:
    """``base_lr * (1 - step / max_steps) ** power``."""
    return float(base_lr) * poly_factor(step, max_steps, power)


class PolyDecay:
    """Picklable ``LambdaLR`` factor (a callable object, so ``LambdaLR.state_dict`` keeps it)."""

    def __init__(self, max_steps: int, power: float = 0.9):
        self.max_steps, self.power = int(max_steps), float(power)
        poly_factor(0, self.max_steps, self.power)  # validate

    def __call__(self, step: int) -> float:
        return poly_factor(step, self.max_steps, self.power)


def build_poly_scheduler(optimizer: torch.optim.Optimizer, max_steps: int, power: float = 0.9):
    """``LambdaLR`` giving every group ``lr = initial_lr * (1 - t / max_steps) ** power`` after
    ``t`` calls of ``scheduler.step()`` (closed form: exact after ``load_state_dict``)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, PolyDecay(max_steps, power))
