"""Surface normals: 3 channels, 1 - cosine loss, angular metrics; derived from depth.

Also the ``paper`` protocol's variant (:class:`PaperNormals`): the released code's target,
loss and metric (docs/fidelity.md).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .base import Task, register_task
from .depth import depth_to_code
from .geometry import normals_from_depth, release_normals, release_normals_mask
from .meter import Meter
from .protocol import PAPER
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

    def from_native(self, label):
        """Normals read from files (``(H, W, 3)`` vectors, e.g. ``2 v / 255 - 1`` of a PNG): a
        black PNG pixel (all components -1) or a vector shorter than 0.5 becomes the zero
        (invalid) vector."""
        n = np.array(label, dtype=np.float32, copy=True)
        invalid = (n == -1.0).all(-1) | (np.linalg.norm(n, axis=-1) < 0.5)
        n[invalid] = 0
        return n

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


# --- protocol "paper": the authors' released target, loss and metric ------------------------

def release_normals_loss(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """``1 - cos(pred, target)`` averaged over the pixels of the label's mask channel;
    ``label (B, 4, H, W)`` = target xyz + mask (all ones for normals read from files)."""
    mask = label[:, 3] > 0.5
    if not mask.any():
        return pred.sum() * 0.0
    cos = F.cosine_similarity(pred, label[:, :3], dim=1, eps=1e-8)
    return (1 - cos)[mask].mean()


class ReleaseNormalsMeter(Meter):
    """The released normals metric, computed per image and averaged over the images.

    For one image, ``p`` (the prediction, unit-normalised first when ``normalize_prediction``)
    and ``g`` (the target) are ``(3, H, W)``; the error is
    ``deg(2 atan2(|p - g|, |p + g|))`` with the norms taken over dimension 1 (the image rows),
    a ``(3, W)`` array. Its mean, median (the lower middle value), mean square and the
    fractions below 11.25 / 22.5 / 30 degrees are averaged over the images; ``rmse_angle`` is
    the square root of the averaged mean square. No mask: every entry counts.
    ``update(pred (B, 3, H, W), label (B, 3|4, H, W))`` (a 4th label channel, the loss mask,
    is not used).
    """

    task = "normals"
    THRESHOLDS = (11.25, 22.5, 30.0)
    _KEYS = ("mean", "median", "mse", "t1", "t2", "t3", "images")

    def __init__(self, normalize_prediction: bool = False):
        self.normalize_prediction = bool(normalize_prediction)
        super().__init__()

    def _init_state(self):
        return {k: torch.zeros((), dtype=torch.float64) for k in self._KEYS}

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        if pred.dim() != 4 or pred.shape[1] != 3 or label.dim() != 4 or label.shape[1] not in (3, 4) \
                or pred.shape[-2:] != label.shape[-2:] or pred.shape[0] != label.shape[0]:
            raise ValueError(f"normals: expected a (B, 3, H, W) prediction and a (B, 3|4, H, W) label, "
                             f"got {tuple(pred.shape)} and {tuple(label.shape)}")
        p, g = pred.double(), label[:, :3].double()
        self._check(prediction=p, label=g)
        if self.normalize_prediction:
            p = F.normalize(p, dim=1)
        err = torch.rad2deg(2 * torch.atan2((p - g).norm(dim=2), (p + g).norm(dim=2))).flatten(1)  # (B, 3 W)
        s = self.state
        s["mean"] += err.mean(1).sum().cpu()
        s["median"] += err.median(1).values.sum().cpu()
        s["mse"] += err.square().mean(1).sum().cpu()
        for i, t in enumerate(self.THRESHOLDS, 1):
            s[f"t{i}"] += (err < t).double().mean(1).sum().cpu()
        s["images"] += float(err.shape[0])

    def compute(self) -> dict[str, float]:
        s = self.state
        n = float(s["images"])
        if n == 0:
            return {k: float("nan") for k in ("mean_angle", "median_angle", "rmse_angle", "within_11.25", "within_22.5", "within_30")}
        return {
            "mean_angle": float(s["mean"]) / n,
            "median_angle": float(s["median"]) / n,
            "rmse_angle": math.sqrt(float(s["mse"]) / n),
            "within_11.25": float(s["t1"]) / n * 100,
            "within_22.5": float(s["t2"]) / n * 100,
            "within_30": float(s["t3"]) / n * 100,
        }


class PaperNormals(Normals):
    """Normals as the released code computes them (protocol ``paper``).

    Target: from files (NYUDv2), the vectors unit-normalised, every pixel used; derived (the
    other datasets), :func:`densemtl.tasks.geometry.release_normals` of the inverse-depth code
    with the release's intrinsics (``release_K``: full-resolution, not rescaled, shifted by the
    crop, mirrored on a flip), derived after the augmentation; invalid depth is first filled
    with the image's farthest valid depth (what the release's Cityscapes loader stores there).
    The label carries a 4th channel, the loss mask (all ones for normals read from files).
    Loss: ``1 - cos`` over the mask. Metric: :class:`ReleaseNormalsMeter` on the raw
    prediction, unit-normalised first for normals read from files (meter option
    ``normals_from_files``).
    """

    description = "surface normals, the released code's target, loss and metric"
    label_format = "(B, 4, H, W) float: target xyz (no invalid value) + loss mask"
    derive_after_augmentation = True

    def from_native(self, label):
        n = np.asarray(label, dtype=np.float32)
        n = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), np.float32(1e-12))
        return np.concatenate([n, np.ones(n.shape[:2] + (1,), np.float32)], -1)

    def derive(self, labels, image, K, release_K=None, **_):
        if "depth" not in labels:
            raise ValueError("normals are derived from depth, and this sample has no depth label")
        if release_K is None:
            raise ValueError("the paper normals target needs the release's intrinsics (release_K), "
                             "given by the dataset after the augmentation")
        d = np.asarray(labels["depth"], dtype=np.float64)
        valid = np.isfinite(d) & (d > 0)
        filled = np.where(valid, d, d[valid].max() if valid.any() else 0.0)
        n = release_normals(depth_to_code(filled), release_K)
        mask = release_normals_mask(valid) & np.isfinite(n).all(-1)
        return np.concatenate([n, mask[..., None]], -1).astype(np.float32)

    def loss(self, pred, label):
        return release_normals_loss(pred, label)

    def valid_mask(self, label):
        return label[:, 3] > 0.5

    def decode(self, pred):
        return pred  # the metric uses the raw output

    def meter(self, normals_from_files: bool = False, **_):
        return ReleaseNormalsMeter(normalize_prediction=normals_from_files)

    def render(self, value, **_):
        n = torch.as_tensor(to_numpy(value)).double()
        n = n if n.shape[0] in (3, 4) else n.permute(2, 0, 1)
        out = F.normalize(n[:3], dim=0)
        if n.shape[0] == 4:
            out = out * (n[3:] > 0.5)
        return render_normals(out)


PAPER_NORMALS = PAPER.add_variant(PaperNormals())
