"""Meters for semantic segmentation, depth and surface normals (DESIGN section 7)."""

from __future__ import annotations

import math

import torch

from .base import Meter


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


class DepthMeter(Meter):
    """Depth metrics in metres.

    ``update(pred (B, 1|-, H, W) metres, label (B, 1|-, H, W) metres)``; valid pixels have GT
    in ``(min_depth, max_depth]``; predictions are clamped to ``[min_depth, max_depth]``.
    ``rmse`` = sqrt(mean over images of the per-image MSE) (the paper's protocol; images with
    no valid pixel are skipped); ``rmse_pixel`` pools all pixels; plus ``abs_rel``, ``sq_rel``,
    ``rmse_log``, ``delta1..3`` (% of pixels with max(p/g, g/p) < 1.25^k). With
    ``median_scaling`` each prediction is first multiplied by median(GT) / median(prediction)
    over its valid pixels (the self-supervised depth protocol).
    """

    task = "depth"
    _KEYS = ("sq", "abs_rel", "sq_rel", "log_sq", "d1", "d2", "d3")

    def __init__(self, min_depth: float = 1e-3, max_depth: float = 80.0, median_scaling: bool = False):
        self.median_scaling = bool(median_scaling)
        if not 0 <= min_depth < max_depth:
            raise ValueError(f"depth range must satisfy 0 <= min_depth < max_depth, got {min_depth}, {max_depth}")
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        super().__init__()

    def _init_state(self):
        s = {k: torch.zeros((), dtype=torch.float64) for k in self._KEYS}
        s.update(pixels=torch.zeros((), dtype=torch.float64), image_mse=torch.zeros((), dtype=torch.float64),
                 images=torch.zeros((), dtype=torch.float64))
        return s

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        pred, label = pred.reshape(pred.shape[0], -1), label.reshape(label.shape[0], -1)
        if pred.shape != label.shape:
            raise ValueError(f"depth: prediction and label sizes differ ({pred.shape[1]} vs {label.shape[1]} pixels)")
        self._check(prediction=pred, label=label)
        g = label.double()
        valid = (g > self.min_depth) & (g <= self.max_depth)
        p = pred.double()
        if self.median_scaling:  # scale-ambiguous (self-supervised) depth: per-image median ratio
            for b in range(p.shape[0]):
                if valid[b].any():
                    p[b] = p[b] * g[b][valid[b]].median() / p[b][valid[b]].median().clamp_min(1e-12)
        p = p.clamp(self.min_depth, self.max_depth)
        g = torch.where(valid, g, torch.ones_like(g))
        p = torch.where(valid, p, torch.ones_like(p))
        v = valid.double()
        sq = (p - g).square() * v
        n_img = v.sum(1)
        has = n_img > 0
        self.state["image_mse"] += (sq.sum(1)[has] / n_img[has]).sum().cpu()
        self.state["images"] += has.sum().cpu().double()
        ratio = torch.maximum(p / g, g / p)
        s = self.state
        s["pixels"] += v.sum().cpu()
        s["sq"] += sq.sum().cpu()
        s["abs_rel"] += ((p - g).abs() / g * v).sum().cpu()
        s["sq_rel"] += ((p - g).square() / g * v).sum().cpu()
        s["log_sq"] += ((p.log() - g.log()).square() * v).sum().cpu()
        for k in (1, 2, 3):
            s[f"d{k}"] += ((ratio < 1.25**k).double() * v).sum().cpu()

    def compute(self) -> dict[str, float]:
        s = self.state
        n = float(s["pixels"])
        if n == 0:
            return {k: float("nan") for k in ("rmse", "rmse_pixel", "abs_rel", "sq_rel", "rmse_log", "delta1", "delta2", "delta3")}
        return {
            "rmse": math.sqrt(float(s["image_mse"]) / float(s["images"])),
            "rmse_pixel": math.sqrt(float(s["sq"]) / n),
            "abs_rel": float(s["abs_rel"]) / n,
            "sq_rel": float(s["sq_rel"]) / n,
            "rmse_log": math.sqrt(float(s["log_sq"]) / n),
            "delta1": float(s["d1"]) / n * 100,
            "delta2": float(s["d2"]) / n * 100,
            "delta3": float(s["d3"]) / n * 100,
        }


class NormalsMeter(Meter):
    """Per-pixel angle (degrees) between normalised prediction and GT over valid pixels.

    ``update(pred (B, 3, H, W), label (B, 3, H, W))``, a zero GT vector is invalid.
    The median comes from a histogram with ``bin_width`` degrees (default 0.01).
    """

    task = "normals"
    THRESHOLDS = (11.25, 22.5, 30.0)

    def __init__(self, bin_width: float = 0.01):
        self.bin_width = float(bin_width)
        self.bins = int(math.ceil(180.0 / self.bin_width))
        super().__init__()

    def _init_state(self):
        s = {k: torch.zeros((), dtype=torch.float64) for k in ("sum", "sum_sq", "count", "t1", "t2", "t3")}
        s["hist"] = torch.zeros(self.bins, dtype=torch.int64)
        return s

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        if pred.shape != label.shape or pred.dim() != 4 or pred.shape[1] != 3:
            raise ValueError(f"normals: expected matching (B, 3, H, W) tensors, got {tuple(pred.shape)} and {tuple(label.shape)}")
        self._check(prediction=pred, label=label)
        p, g = pred.double(), label.double()
        gn = g.norm(dim=1)
        valid = gn > 0
        pn = torch.nn.functional.normalize(p, dim=1, eps=1e-12)
        gu = g / gn.clamp_min(1e-12).unsqueeze(1)
        cos = (pn * gu).sum(1).clamp(-1, 1)[valid]
        ang = torch.rad2deg(torch.acos(cos))
        s = self.state
        s["sum"] += ang.sum().cpu()
        s["sum_sq"] += ang.square().sum().cpu()
        s["count"] += float(ang.numel())
        for i, t in enumerate(self.THRESHOLDS, 1):
            s[f"t{i}"] += (ang < t).sum().cpu().double()
        idx = (ang / self.bin_width).long().clamp_(0, self.bins - 1).cpu()
        s["hist"] += torch.bincount(idx, minlength=self.bins)

    def compute(self) -> dict[str, float]:
        s = self.state
        n = float(s["count"])
        if n == 0:
            return {k: float("nan") for k in ("mean_angle", "median_angle", "rmse_angle", "within_11.25", "within_22.5", "within_30")}
        cdf = torch.cumsum(s["hist"], 0)
        median_bin = int(torch.searchsorted(cdf, torch.tensor(math.ceil(n / 2))))
        return {
            "mean_angle": float(s["sum"]) / n,
            "median_angle": (median_bin + 0.5) * self.bin_width,
            "rmse_angle": math.sqrt(float(s["sum_sq"]) / n),
            "within_11.25": float(s["t1"]) / n * 100,
            "within_22.5": float(s["t2"]) / n * 100,
            "within_30": float(s["t3"]) / n * 100,
        }
