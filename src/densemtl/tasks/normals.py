"""Surface normals: 3 channels, 1 - cosine loss, angular metrics."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..losses import functional as L
from .registry import Task, register_task
from .render import to_numpy


class Normals(Task):
    name, letter = "normals", "N"
    channels = 3
    higher_is_better, headline_metric = False, "mean_angle"
    description = "surface normals (unnormalised xyz, normalised at evaluation)"
    label_format = "(B, 3, H, W) float unit vectors, zero vector = invalid"

    def loss(self, pred, label):
        return L.normals_loss(pred, label)

    def valid_mask(self, label):
        return label.abs().sum(1) > 0

    def decode(self, pred):
        return F.normalize(pred, dim=1, eps=1e-12)

    def meter(self, **_):
        from ..metrics import NormalsMeter

        return NormalsMeter()

    def render(self, value, **_):
        n = to_numpy(value).astype(np.float64)
        if n.ndim == 3 and n.shape[0] == 3:
            n = n.transpose(1, 2, 0)
        invalid = np.abs(n).sum(-1) == 0
        rgb = ((np.clip(n, -1, 1) + 1) * 127.5).round().astype(np.uint8)
        rgb[invalid] = 0
        return rgb


NORMALS = register_task(Normals())
