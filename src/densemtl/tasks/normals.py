"""Surface normals: 3 channels, 1 - cosine loss, angular metrics; derived from depth."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .base import Task, register_task
from .geometry import normals_from_depth
from .meter import Meter
from .render import to_numpy


def normals_loss(pred: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """``1 - cos(n_hat, n)`` over valid pixels; ``(B, 3, H, W)``, zero GT vector = invalid."""
    valid = normals.abs().sum(1) > 0
    if not valid.any():
        return pred.sum() * 0.0
    cos = F.cosine_similarity(pred, normals, dim=1, eps=1e-8)
    return (1 - cos[valid]).mean()


def normals_map(pred: torch.Tensor) -> torch.Tensor:
    """Unnormalised normals ``(N, 3, H, W)`` -> unit vectors mapped to [0, 1]: ``(n + 1) / 2``."""
    return (F.normalize(pred, dim=1, eps=1e-6) + 1.0) / 2.0


NORMALS_MAPS = ("shifted", "unit")  # uda.normals_map


def render_normals(value) -> np.ndarray:
    """Normals ``(3, H, W)`` or ``(H, W, 3)`` -> RGB ``(n + 1) / 2``; zero vectors black."""
    n = to_numpy(value).astype(np.float64)
    if n.ndim == 3 and n.shape[0] == 3:
        n = n.transpose(1, 2, 0)
    invalid = np.abs(n).sum(-1) == 0
    rgb = ((np.clip(n, -1, 1) + 1) * 127.5).round().astype(np.uint8)
    rgb[invalid] = 0
    return rgb


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


class Normals(Task):
    name, letter = "normals", "N"
    channels = 3
    higher_is_better, headline_metric = False, "mean_angle"
    lower_is_better = frozenset({"mean_angle", "median_angle", "rmse_angle"})
    column = "mErr deg"
    description = "surface normals (unnormalised xyz, normalised at evaluation)"
    label_format = "(B, 3, H, W) float unit vectors, zero vector = invalid"
    derived_from = ("depth",)

    def flip_label(self, label):
        out = label[:, ::-1].copy()
        out[..., 0] *= -1  # a mirrored surface faces the other way along x
        return out

    def derive(self, labels, image, K, edge_aware_normals: bool = False, normals_smooth_sigma: float = 0.0, **_):
        """Normals from metric depth with the working-resolution intrinsics (optionally
        colour-weighted and depth-smoothed; see :func:`densemtl.tasks.geometry.normals_from_depth`)."""
        if "depth" not in labels:
            raise ValueError("normals are derived from depth, and this sample has no depth label")
        return normals_from_depth(labels["depth"], K, image * 255.0, edge_aware_normals, smooth_sigma=normals_smooth_sigma)

    def label_to_tensor(self, label):
        return torch.from_numpy(np.ascontiguousarray(label).transpose(2, 0, 1).astype(np.float32))

    def loss(self, pred, label):
        return normals_loss(pred, label)

    def valid_mask(self, label):
        return label.abs().sum(1) > 0

    def decode(self, pred):
        return F.normalize(pred, dim=1, eps=1e-12)

    def meter(self, **_):
        return NormalsMeter()

    def alignment_map(self, pred, mode: str = "shifted", **_):
        """``shifted``: unit vectors mapped to [0, 1] (:func:`normals_map`); ``unit``: the unit
        vectors themselves, in [-1, 1] (the released UDA code)."""
        if mode == "shifted":
            return normals_map(pred)
        if mode == "unit":
            return F.normalize(pred, dim=1, eps=1e-6)
        raise ValueError(f"unknown normals map {mode!r}; choose from {', '.join(NORMALS_MAPS)}")

    def render(self, value, **_):
        return render_normals(value)


NORMALS = register_task(Normals())
