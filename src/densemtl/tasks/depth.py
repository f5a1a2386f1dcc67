"""Depth: the head regresses the inverse-depth code ``z = 655.36 / (d + 0.01)``; berHu loss.

This module is the one place where the depth code is defined (:func:`depth_to_code`,
:func:`code_to_depth`); everything else (losses, metrics, export, domain maps, warm start)
goes through it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .base import Task, register_task
from .meter import Meter
from .protocol import PAPER
from .render import colormap, to_numpy

D_FAR = 655.36  # metres; inverse-depth code z = D_FAR / (d + EPS)
EPS = 0.01  # metres


def depth_to_code(depth: torch.Tensor) -> torch.Tensor:
    """Metric depth (m) -> inverse-depth code ``z = 655.36 / (d + 0.01)``."""
    return D_FAR / (depth + EPS)


def code_to_depth(code: torch.Tensor) -> torch.Tensor:
    """Inverse-depth code -> metric depth (m), the exact inverse ``d = 655.36 / z - 0.01``."""
    return D_FAR / code - EPS


def berhu(residual: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """Reverse Huber, elementwise: ``|r|`` if ``|r| <= c`` else ``(r^2 + c^2) / (2c)``."""
    a = residual.abs()
    c = torch.as_tensor(threshold, dtype=a.dtype, device=a.device)
    quad = (residual.square() + c.square()) / (2 * c).clamp_min(torch.finfo(a.dtype).tiny)
    return torch.where(a <= c, a, quad)


def depth_loss(code_pred: torch.Tensor, depth: torch.Tensor, threshold_ratio: float = 0.2) -> torch.Tensor:
    """berHu on the inverse-depth code, mean over valid pixels.

    ``code_pred (B, 1, H, W)`` predicted code; ``depth (B, 1, H, W)`` metres, ``<= 0`` invalid.
    The threshold is ``0.2 * max |residual|`` over the valid pixels of the batch (detached).
    """
    valid = depth > 0
    if not valid.any():
        return code_pred.sum() * 0.0
    r = code_pred[valid] - depth_to_code(depth[valid])
    c = threshold_ratio * r.detach().abs().max()
    return berhu(r, c).mean()


def depth_map(code: torch.Tensor, ref_depth: float = 10.0) -> torch.Tensor:
    """Depth prediction -> ``[0, 1]`` with a fixed, label-free squashing of the inverse-depth code.

    With ``z_ref`` the code of ``ref_depth``::

        n = max(z, 0) / (max(z, 0) + z_ref) = (ref + 0.01) / (ref + d + 0.02)

    so n = 0.5 at ``ref_depth``, -> 1 near the camera, -> 0 far away (z <= 0, "infinitely
    far", gives 0). With the default 10 m (the depth head's initial value) the outdoor range
    1..80 m spans ~0.91..0.11. ``code (N, 1, H, W)`` -> ``(N, 1, H, W)``.

    Why this rather than per-image min-max or the source labels' range (the released code
    divided by the min/max of the *source batch's ground truth*): it is a fixed per-pixel
    function, so a map depends neither on the other pixels, the other images of the batch
    nor on any label (target maps never see source labels); it keeps absolute scale, the
    quantity the depth metrics measure, so the discriminators can penalise a global scale
    shift that min-max would hide; it is smooth and bounded without clamping (every pixel
    with a positive code gets a gradient, none saturates at 0/1 as a clamp of metres to
    [0, 80] would) and monotone in inverse depth, the network's own parametrisation.
    Use a smaller ``ref_depth`` (e.g. 3 m) for indoor data.
    """
    if code.dim() != 4 or code.shape[1] != 1:
        raise ValueError(f"expected a depth code (N, 1, H, W), got {tuple(code.shape)}")
    if not ref_depth > 0:
        raise ValueError(f"ref_depth must be > 0, got {ref_depth}")
    z = code.clamp_min(0.0)
    return z / (z + D_FAR / (float(ref_depth) + EPS))


def minmax_depth_map(code: torch.Tensor, code_range) -> torch.Tensor:
    """Depth prediction -> ``(max(z, 0) - z_lo) / (z_hi - z_lo)`` with ``code_range = (z_lo, z_hi)``
    the smallest and largest inverse-depth code of the *source batch's labels*
    (:func:`label_code_range`): the map of the released UDA code. Not clamped: a prediction
    farther than the farthest label (or with ``z <= 0``) maps below 0, a nearer one above 1.
    ``code (N, 1, H, W)`` -> ``(N, 1, H, W)``; ``z_lo``, ``z_hi`` floats or 0-d tensors."""
    if code.dim() != 4 or code.shape[1] != 1:
        raise ValueError(f"expected a depth code (N, 1, H, W), got {tuple(code.shape)}")
    lo, hi = (torch.as_tensor(v, dtype=code.dtype, device=code.device) for v in code_range)
    return (code.clamp_min(0.0) - lo) / (hi - lo).clamp_min(torch.finfo(code.dtype).eps)


def label_code_range(depth: torch.Tensor, fallback=(1e-3, 80.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z_lo, z_hi)``: the smallest and largest inverse-depth code over the valid pixels
    (``> 0``) of a batch of depth labels in metres; a batch without any valid pixel gives the
    codes of ``fallback = (min_depth, max_depth)`` instead. 0-d tensors, computed without a
    host synchronisation."""
    valid = depth > 0
    code = depth_to_code(torch.where(valid, depth, torch.ones_like(depth)))
    inf = torch.full((), float("inf"), dtype=code.dtype, device=code.device)
    lo = torch.where(valid, code, inf).amin()
    hi = torch.where(valid, code, -inf).amax()
    any_valid = valid.any()
    far, near = (depth_to_code(torch.tensor(float(v), dtype=code.dtype, device=code.device)) for v in (fallback[1], fallback[0]))
    return torch.where(any_valid, lo, far), torch.where(any_valid, hi, near)


DEPTH_MAPS = ("ratio", "minmax")  # uda.depth_map


def depth_display_range(label, predictions: list) -> dict:
    """One colour range (``vmin``, ``vmax`` in metres) for a label and predictions of one image:
    the 1st..99th percentile of the label's valid depths, or of the predictions' pooled valid
    depths when there is no label (or it has no valid pixel)."""
    for maps in ([label] if label is not None else [], predictions):
        vals = [d[np.isfinite(d) & (d > 0)] for d in (to_numpy(m).astype(np.float64) for m in maps)]
        vals = np.concatenate([v.ravel() for v in vals]) if vals else np.empty(0)
        if vals.size:
            return {"vmin": float(np.percentile(vals, 1)), "vmax": float(np.percentile(vals, 99))}
    return {}


def render_depth(value, vmin: float | None = None, vmax: float | None = None, **_) -> np.ndarray:
    """Metric depth ``(H, W)`` or ``(1, H, W)`` -> RGB, near = bright (coloured by inverse depth);
    the range is the 1st..99th percentile unless ``vmin``/``vmax`` (metres) are given."""
    d = to_numpy(value).astype(np.float64)
    d = d[0] if d.ndim == 3 else d  # (1, H, W) -> (H, W)
    valid = np.isfinite(d) & (d > 0)
    if not valid.any():
        return np.zeros((*d.shape, 3), np.uint8)
    lo = float(np.percentile(d[valid], 1)) if vmin is None else vmin
    hi = float(np.percentile(d[valid], 99)) if vmax is None else vmax
    inv = np.where(valid, 1.0 / np.maximum(d, 1e-6), 0)
    return colormap(inv, 1.0 / max(hi, 1e-6), 1.0 / max(lo, 1e-6), "magma", invalid=~valid)


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
                 images=torch.zeros((), dtype=torch.float64), clamped=torch.zeros((), dtype=torch.float64),
                 clamped_images=torch.zeros((), dtype=torch.float64))
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
        v = valid.double()
        n_img = v.sum(1)
        has = n_img > 0
        outside = ((p < self.min_depth) | (p > self.max_depth)) & valid  # clamped below: counted for diagnostics()
        n_out = outside.double().sum(1)
        self.state["clamped"] += n_out.sum().cpu()
        self.state["clamped_images"] += (has & (n_out > 0.5 * n_img)).double().sum().cpu()
        p = p.clamp(self.min_depth, self.max_depth)
        g = torch.where(valid, g, torch.ones_like(g))
        p = torch.where(valid, p, torch.ones_like(p))
        sq = (p - g).square() * v
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

    def diagnostics(self) -> list[str]:
        """Images whose prediction is mostly outside ``[min_depth, max_depth]``: the clamp keeps
        the metrics finite, but such an image (a blown-up depth map) dominates the RMSE."""
        s = self.state
        bad = int(s["clamped_images"])
        if not bad:
            return []
        return [f"depth: {bad} of {int(s['images'])} images {'has' if bad == 1 else 'have'} more than half of their valid pixels predicted "
                f"outside [{self.min_depth:g}, {self.max_depth:g}] m ({int(s['clamped'])} pixels in all, clamped "
                f"to that range): the depth metrics are dominated by them"]




DEPTH_LOWER_IS_BETTER = frozenset({"rmse", "rmse_pixel", "abs_rel", "sq_rel", "rmse_log"})


class Depth(Task):
    name, letter = "depth", "D"
    channels = 1
    higher_is_better, headline_metric = False, "rmse"
    lower_is_better = DEPTH_LOWER_IS_BETTER
    column, digits = "RMSE m", 3
    description = "depth (inverse-depth code regression, metres at evaluation)"
    label_format = "(B, 1, H, W) float metres, <= 0 = invalid"
    # start predictions at a plausible depth (10 m, code 65.5) instead of code 0 (infinitely
    # far): the code spans ~8..650 for 1..80 m, which a zero-initialised head needs many
    # steps to reach
    head_bias = float(depth_to_code(torch.tensor(10.0)))

    def loss(self, pred, label):
        return depth_loss(pred, label)

    def valid_mask(self, label):
        return (label > 0).reshape(label.shape[0], *label.shape[-2:])

    def initial_bias(self, labels, min_depth: float = 0.0, max_depth: float = math.inf, **_):
        """The code of the median over images of each image's median valid depth."""
        vals = []
        for d in labels:
            d = np.asarray(d)
            d = d[(d > min_depth) & (d <= max_depth)]
            if d.size:
                vals.append(np.median(d))
        return float(depth_to_code(torch.tensor(float(np.median(vals))))) if vals else None

    def decode(self, pred):
        """Code -> metres (codes <= 0 are clamped to a tiny positive code, i.e. very far)."""
        return code_to_depth(pred.clamp_min(1e-3))

    def meter(self, min_depth: float = 1e-3, max_depth: float = 80.0, median_scaling: bool = False, **_):
        """``median_scaling``: per-image median scaling before the metrics (``eval.depth_median_scaling``)."""
        return DepthMeter(min_depth, max_depth, median_scaling=median_scaling)

    def alignment_channels(self, num_classes=None):
        return 1

    def alignment_map(self, pred, mode: str = "ratio", ref_depth: float = 10.0, code_range=None, **_):
        """``mode="ratio"``: :func:`depth_map` (fixed, label-free); ``"minmax"``:
        :func:`minmax_depth_map` with the source batch's ``code_range`` (from :meth:`alignment_options`)."""
        if mode == "ratio":
            return depth_map(pred, ref_depth)
        if mode == "minmax":
            if code_range is None:
                raise ValueError("the minmax depth map needs the source batch's label code range (code_range)")
            return minmax_depth_map(pred, code_range)
        raise ValueError(f"unknown depth map {mode!r}; choose from {', '.join(DEPTH_MAPS)}")

    def alignment_options(self, label, mode: str = "ratio", min_depth: float = 1e-3, max_depth: float = 80.0, **_):
        """``minmax``: the code range of this source batch's valid depth labels; else nothing."""
        return {"code_range": label_code_range(label, (min_depth, max_depth))} if mode == "minmax" else {}

    def render(self, value, vmin: float | None = None, vmax: float | None = None, **_):
        return render_depth(value, vmin, vmax)

    def shared_render_options(self, label, predictions):
        return depth_display_range(label, predictions)


DEPTH = register_task(Depth())


# --- protocol "paper": the authors' released loss, decoding and metric ----------------------

RELEASE_OFFSET = 1.0  # metres: the release decodes the code as 655.36 / z - 1 (not - 0.01)
RELEASE_RANGE = (1e-3, 80.0)  # metres, every dataset


def release_decode(code: torch.Tensor) -> torch.Tensor:
    """The release's decoding of the inverse-depth code: ``655.36 / z - 1`` (metres - 0.99 m)."""
    return D_FAR / code - RELEASE_OFFSET


def release_berhu(code_pred: torch.Tensor, depth: torch.Tensor, threshold_ratio: float = 0.2) -> torch.Tensor:
    """The release's berHu: ``a = |target code - predicted code| * mask`` (mask: depth > 0),
    threshold ``0.2 * max(a)`` over the batch (detached), averaged over *all* pixels (masked
    ones count as zero). ``code_pred, depth (B, 1, H, W)``, depth in metres."""
    valid = depth > 0
    target = torch.where(valid, depth_to_code(torch.where(valid, depth, torch.ones_like(depth))), torch.zeros_like(depth))
    a = (target - code_pred).abs() * valid
    c = threshold_ratio * a.detach().max()
    return berhu(a, c).mean()


class ReleaseDepthMeter(Meter):
    """The released depth metric, per image then averaged over the images.

    ``update(pred (B, 1|-, H, W) metres as decoded by :func:`release_decode`, label (B, 1|-, H, W)
    metric depth, <= 0 invalid)``. The label is encoded to the inverse-depth code and decoded
    like the prediction (``655.36 / z - 1``); pixels count where the label is valid and
    ``1e-3 < decoded label < 80``. With ``median_scaling`` the prediction is first multiplied
    by median(label) / median(prediction) over those pixels (lower middle values); it is then
    clamped to [1e-3, 80]. Per image: MSE, AbsRel, SqRel and the fractions with
    max(p/g, g/p) < 1.25^k; each averaged over the images (``delta*`` in %), ``rmse`` =
    sqrt(mean MSE). An image without a counted pixel is skipped (the release would give NaN).
    """

    task = "depth"
    _KEYS = ("mse", "abs_rel", "sq_rel", "d1", "d2", "d3", "images")

    def __init__(self, median_scaling: bool = False):
        self.median_scaling = bool(median_scaling)
        self.min_depth, self.max_depth = RELEASE_RANGE
        super().__init__()

    def _init_state(self):
        return {k: torch.zeros((), dtype=torch.float64) for k in self._KEYS}

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        pred, label = pred.reshape(pred.shape[0], -1), label.reshape(label.shape[0], -1)
        if pred.shape != label.shape:
            raise ValueError(f"depth: prediction and label sizes differ ({pred.shape[1]} vs {label.shape[1]} pixels)")
        self._check(label=label)
        if torch.isnan(pred).any():  # +-inf (a code of 0) is clamped below, as in the release
            self._check(prediction=pred)
        d = label.double()
        valid = d > 0
        g = release_decode(depth_to_code(torch.where(valid, d, torch.ones_like(d))))
        valid &= (g > self.min_depth) & (g < self.max_depth)
        p_all = pred.double()
        s = self.state
        for b in range(d.shape[0]):
            m = valid[b]
            if not m.any():
                continue
            p, t = p_all[b][m], g[b][m]
            if self.median_scaling:
                p = p * t.median() / p.median()
            p = p.clamp(self.min_depth, self.max_depth)
            ratio = torch.maximum(t / p, p / t)
            s["mse"] += (p - t).square().mean().cpu()
            s["abs_rel"] += ((p - t).abs() / t).mean().cpu()
            s["sq_rel"] += ((p - t).square() / t).mean().cpu()
            for k in (1, 2, 3):
                s[f"d{k}"] += (ratio < 1.25**k).double().mean().cpu()
            s["images"] += 1.0

    def compute(self) -> dict[str, float]:
        s = self.state
        n = float(s["images"])
        if n == 0:
            return {k: float("nan") for k in ("rmse", "abs_rel", "sq_rel", "delta1", "delta2", "delta3")}
        return {
            "rmse": math.sqrt(float(s["mse"]) / n),
            "abs_rel": float(s["abs_rel"]) / n,
            "sq_rel": float(s["sq_rel"]) / n,
            "delta1": float(s["d1"]) / n * 100,
            "delta2": float(s["d2"]) / n * 100,
            "delta3": float(s["d3"]) / n * 100,
        }


class PaperDepth(Depth):
    """Depth as the released code computes it (protocol ``paper``): :func:`release_berhu`,
    :func:`release_decode` and :class:`ReleaseDepthMeter` (range 1e-3..80 m on every
    dataset; median scaling only with the meter option ``median_scaling``)."""

    description = "depth, the released code's loss, decoding and metric"

    def loss(self, pred, label):
        return release_berhu(pred, label)

    def decode(self, pred):
        return release_decode(pred)

    def meter(self, median_scaling: bool = False, **_):
        return ReleaseDepthMeter(median_scaling=median_scaling)


PAPER_DEPTH = PAPER.add_variant(PaperDepth())
