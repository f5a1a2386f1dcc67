"""The self-supervised depth task: sigmoid disparity -> depth in [0.1, 100] m."""

from __future__ import annotations

import torch

from .base import Task, register_task
from .depth import DEPTH_LOWER_IS_BETTER, DepthMeter, depth_display_range, render_depth

MIN_DEPTH, MAX_DEPTH = 0.1, 100.0


def sigmoid_to_depth(sig: torch.Tensor, min_depth: float = MIN_DEPTH, max_depth: float = MAX_DEPTH) -> torch.Tensor:
    """``depth = 1 / (1/max + (1/min - 1/max) * sigmoid)``."""
    min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
    return 1.0 / (min_disp + (max_disp - min_disp) * sig)


class Disparity(Task):
    """Depth learned without labels from video (Monodepth2). The head outputs a logit; its
    loss needs neighbour frames and poses (the self-supervised objective of
    :mod:`densemtl.selfsup`), so ``loss`` is not a per-pixel supervised loss. Evaluated
    against depth labels with per-image median scaling."""

    name, letter = "disparity", "P"
    channels = 1
    higher_is_better, headline_metric = False, "abs_rel"
    lower_is_better = DEPTH_LOWER_IS_BETTER
    column, digits = "AbsRel", 3
    description = "self-supervised depth (sigmoid disparity, 0.1-100 m)"
    label_format = "no label for training; (B, 1, H, W) metres for evaluation"
    label_source = "depth"  # datasets provide the depth labels under this task's name
    export_name = "disparity_depth"

    def loss(self, pred, label):
        raise TypeError("the disparity task is self-supervised: use densemtl.selfsup's photometric loss with neighbour frames")

    def valid_mask(self, label):
        return (label > 0).reshape(label.shape[0], *label.shape[-2:])

    def decode(self, pred):
        return sigmoid_to_depth(torch.sigmoid(pred))

    def meter(self, min_depth: float = 1e-3, max_depth: float = 80.0, **_):
        return DepthMeter(min_depth, max_depth, median_scaling=True)

    def render(self, value, vmin: float | None = None, vmax: float | None = None, **_):
        return render_depth(value, vmin, vmax)

    def shared_render_options(self, label, predictions):
        return depth_display_range(label, predictions)


DISPARITY = register_task(Disparity())
