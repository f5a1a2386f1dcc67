"""Depth: the head regresses the inverse-depth code z = 655.36 / (d + 0.01); berHu loss."""

from __future__ import annotations

import numpy as np
import torch

from ..losses import functional as L
from .registry import Task, register_task
from .render import colormap, to_numpy


class Depth(Task):
    name, letter = "depth", "D"
    channels = 1
    higher_is_better, headline_metric = False, "rmse"
    description = "depth (inverse-depth code regression, metres at evaluation)"
    label_format = "(B, 1, H, W) float metres, <= 0 = invalid"
    # start predictions at a plausible depth (10 m, code 65.5) instead of code 0 (infinitely
    # far): the code spans ~8..650 for 1..80 m, which a zero-initialised head needs many
    # steps to reach
    head_bias = float(L.depth_to_code(torch.tensor(10.0)))

    def loss(self, pred, label):
        return L.depth_loss(pred, label)

    def valid_mask(self, label):
        return (label > 0).reshape(label.shape[0], *label.shape[-2:])

    def decode(self, pred):
        """Code -> metres (codes <= 0 are clamped to a tiny positive code, i.e. very far)."""
        return L.code_to_depth(pred.clamp_min(1e-3))

    def meter(self, min_depth: float = 1e-3, max_depth: float = 80.0, **_):
        from ..metrics import DepthMeter

        return DepthMeter(min_depth, max_depth)

    def render(self, value, vmin: float | None = None, vmax: float | None = None, **_):
        d = to_numpy(value).astype(np.float64)
        d = d[0] if d.ndim == 3 else d  # (1, H, W) -> (H, W)
        valid = np.isfinite(d) & (d > 0)
        if not valid.any():
            return np.zeros((*d.shape, 3), np.uint8)
        lo = float(np.percentile(d[valid], 1)) if vmin is None else vmin
        hi = float(np.percentile(d[valid], 99)) if vmax is None else vmax
        # near = bright: colour by inverse depth
        inv = np.where(valid, 1.0 / np.maximum(d, 1e-6), 0)
        return colormap(inv, 1.0 / max(hi, 1e-6), 1.0 / max(lo, 1e-6), "magma", invalid=~valid)


DEPTH = register_task(Depth())
