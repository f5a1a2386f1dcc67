"""Edges: one logit per pixel, weighted BCE (0.95 / 0.05), F1 and ODS/OIS F."""

from __future__ import annotations

import numpy as np
import torch

from ..losses import functional as L
from .registry import Task, register_task
from .render import to_numpy


class Edges(Task):
    name, letter = "edges", "E"
    channels = 1
    higher_is_better, headline_metric = True, "f1"
    description = "edges (one logit per pixel)"
    label_format = "(B, 1, H, W) {0, 1}, 255 = ignore"
    ignore_index = L.IGNORE_INDEX

    def loss(self, pred, label):
        return L.edges_loss(pred, label)

    def valid_mask(self, label):
        return (label != self.ignore_index).reshape(label.shape[0], *label.shape[-2:])

    def decode(self, pred):
        return torch.sigmoid(pred)

    def meter(self, boundary: bool = True, num_thresholds: int = 25, max_dist: float = 0.011, **_):
        from ..metrics import EdgeMeter

        return EdgeMeter(boundary, num_thresholds, max_dist, self.ignore_index)

    def render(self, value, **_):
        e = to_numpy(value).astype(np.float64)
        e = e[0] if e.ndim == 3 else e  # (1, H, W) -> (H, W)
        e = np.where(e == self.ignore_index, 0, e)
        g = (np.clip(e, 0, 1) * 255).round().astype(np.uint8)
        return np.repeat(g[..., None], 3, -1)


EDGES = register_task(Edges())
