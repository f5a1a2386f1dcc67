"""Semantic segmentation: class logits, cross-entropy, confusion-matrix metrics."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .base import IGNORE_INDEX, Task, register_task
from .meter import Meter
from .render import class_palette, to_numpy


def semseg_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Cross-entropy; ``logits (B, K, H, W)``, ``labels (B, H, W)`` int64 with 255 = void."""
    if not (labels != ignore_index).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels.long(), ignore_index=ignore_index)


def self_information(logits: torch.Tensor) -> torch.Tensor:
    """Weighted self-information (ADVENT): ``-p log p / log C`` per class, ``p = softmax(logits)``.

    ``logits (N, C, H, W)`` -> ``(N, C, H, W)`` in [0, 1]; the sum over classes is the
    normalised entropy (1 for a uniform softmax, 0 for a one-hot one). Safe at ``p = 0``
    (``-inf`` logits included): those terms are exactly 0 with finite gradients.
    """
    if logits.dim() != 4:
        raise ValueError(f"expected logits (N, C, H, W), got {tuple(logits.shape)}")
    c = logits.shape[1]
    if c < 2:
        raise ValueError(f"self-information needs at least 2 classes, got {c}")
    logp = F.log_softmax(logits, dim=1)
    p = logp.exp()
    logp = logp.masked_fill(p == 0, 0.0)  # 0 log 0 = 0 (and no 0 * inf in backward)
    return -(p * logp) / math.log(c)


class SegmentationMeter(Meter):
    """Confusion matrix over the split.

    ``update(pred (B, H, W) int class ids, label (B, H, W) int, ignore_index = void)``.
    mIoU = mean over classes of TP / (TP + FP + FN), classes absent from both GT and
    prediction excluded; also pixel accuracy and per-class IoU (NaN for excluded classes).
    """

    task = "semseg"

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        super().__init__()

    def _init_state(self):
        return {"confusion": torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)}

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        if pred.shape != label.shape:
            raise ValueError(f"semseg: prediction {tuple(pred.shape)} and label {tuple(label.shape)} differ in shape")
        label = label.long()
        valid = label != self.ignore_index
        lab, prd = label[valid], pred.long()[valid]
        if lab.numel() and (lab.min() < 0 or lab.max() >= self.num_classes):
            bad = sorted(set(lab[(lab < 0) | (lab >= self.num_classes)].unique().tolist()))
            raise ValueError(f"semseg: label contains class id(s) {bad[:10]} outside 0..{self.num_classes - 1} (void = {self.ignore_index})")
        if prd.numel() and (prd.min() < 0 or prd.max() >= self.num_classes):
            raise ValueError(f"semseg: prediction has class ids outside 0..{self.num_classes - 1}")
        idx = (lab * self.num_classes + prd).cpu()
        self.state["confusion"] += torch.bincount(idx, minlength=self.num_classes**2).view(self.num_classes, -1)

    def compute(self) -> dict[str, float]:
        cm = self.state["confusion"].double()
        tp = cm.diag()
        union = cm.sum(0) + cm.sum(1) - tp
        iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
        present = union > 0
        total = cm.sum()
        out = {
            "mIoU": float(iou[present].mean() * 100) if present.any() else float("nan"),
            "pixel_acc": float(tp.sum() / total * 100) if total > 0 else float("nan"),
        }
        for c in range(self.num_classes):
            out[f"IoU_{c}"] = float(iou[c] * 100)
        return out




class SemanticSegmentation(Task):
    name, letter = "semseg", "S"
    channels = None  # = number of classes
    higher_is_better, headline_metric = True, "mIoU"
    column = "mIoU %"
    description = "semantic segmentation (class logits)"
    label_format = "(B, H, W) int64 class ids, 255 = void"
    export_name = "semseg_logits"
    ignore_index = IGNORE_INDEX

    def label_to_tensor(self, label):
        return torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))

    def loss(self, pred, label):
        return semseg_loss(pred, label, self.ignore_index)

    def valid_mask(self, label):
        return label != self.ignore_index

    def decode(self, pred):
        return pred.argmax(1)

    def meter(self, num_classes: int, **_):
        return SegmentationMeter(num_classes, self.ignore_index)

    def alignment_channels(self, num_classes=None):
        if num_classes is None or int(num_classes) < 2:
            raise ValueError(f"the 'semseg' alignment map needs num_classes >= 2, got {num_classes!r}")
        return int(num_classes)

    def alignment_map(self, pred, **_):
        return self_information(pred)

    def export_output(self, pred):
        return pred  # the logits: class probabilities stay available to the user

    def render(self, value, num_classes: int | None = None, palette=None, **_):
        """``palette``: ``(num_classes + 1, 3)`` uint8 colours, void last (e.g.
        :func:`~densemtl.tasks.render.dataset_palette`); default :func:`class_palette`."""
        ids = to_numpy(value).astype(np.int64)
        k = int(num_classes or (ids[ids != self.ignore_index].max(initial=0) + 1))
        pal = class_palette(k) if palette is None else np.asarray(palette, np.uint8)
        if pal.shape != (k + 1, 3):
            raise ValueError(f"a palette for {k} classes must be ({k + 1}, 3) (void last), got {pal.shape}")
        idx = np.where((ids >= 0) & (ids < k), ids, k)
        return pal[idx]


SEMSEG = register_task(SemanticSegmentation())
