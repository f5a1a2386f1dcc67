"""Semantic segmentation: class logits, cross-entropy, confusion-matrix metrics."""

from __future__ import annotations

import numpy as np
import torch

from ..losses import functional as L
from .registry import Task, register_task
from .render import class_palette, to_numpy


class SemanticSegmentation(Task):
    name, letter = "semseg", "S"
    channels = None  # = number of classes
    higher_is_better, headline_metric = True, "mIoU"
    description = "semantic segmentation (class logits)"
    label_format = "(B, H, W) int64 class ids, 255 = void"
    ignore_index = L.IGNORE_INDEX

    def loss(self, pred, label):
        return L.semseg_loss(pred, label, self.ignore_index)

    def valid_mask(self, label):
        return label != self.ignore_index

    def decode(self, pred):
        return pred.argmax(1)

    def meter(self, num_classes: int, **_):
        from ..metrics import SegmentationMeter

        return SegmentationMeter(num_classes, self.ignore_index)

    def render(self, value, num_classes: int | None = None, **_):
        ids = to_numpy(value).astype(np.int64)
        k = int(num_classes or (ids[ids != self.ignore_index].max(initial=0) + 1))
        pal = class_palette(k)
        idx = np.where((ids >= 0) & (ids < k), ids, k)
        return pal[idx]


SEMSEG = register_task(SemanticSegmentation())
