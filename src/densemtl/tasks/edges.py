"""Edges: one logit per pixel, weighted BCE (0.95 / 0.05), F1 and ODS/OIS F; derived from
semantic and depth boundaries when a dataset has no edge labels.

Also the ``paper`` protocol's variant (:class:`PaperEdges`): the released code's label
resizing, loss and metric (docs/fidelity.md).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .base import IGNORE_INDEX, Task, register_task, resize_label_array
from .boundary import boundary_counts, default_thresholds, f_score
from .meter import Meter
from .protocol import PAPER
from .render import to_numpy


def edges_loss(logit: torch.Tensor, edges: torch.Tensor, pos_weight: float = 0.95, neg_weight: float = 0.05) -> torch.Tensor:
    """Weighted BCE: 0.95 on edge pixels, 0.05 on the rest; ``(B, 1, H, W)``, 255 = ignore."""
    valid = edges != IGNORE_INDEX
    if not valid.any():
        return logit.sum() * 0.0
    target = (edges == 1).to(logit.dtype)
    weight = torch.where(target > 0, torch.full_like(target, pos_weight), torch.full_like(target, neg_weight))
    loss = F.binary_cross_entropy_with_logits(logit, target, weight=weight, reduction="none")
    return loss[valid].mean()


def edge_map(logit: torch.Tensor) -> torch.Tensor:
    """Edge logit ``(N, 1, H, W)`` -> edge probability (sigmoid)."""
    return torch.sigmoid(logit)


def edges_from_labels(semseg: np.ndarray | None = None, depth: np.ndarray | None = None,
                      depth_jump: float = 0.1) -> np.ndarray:
    """Edge map (uint8 0/1): semantic boundaries and relative depth discontinuities (> 10 %);
    comparisons with void labels (255) or missing depth (<= 0) are not edges."""
    ref = semseg if semseg is not None else depth
    edges = np.zeros(ref.shape, bool)
    if semseg is not None:
        s = semseg.astype(np.int32)
        ok = s != 255  # no boundary against void
        edges[:, 1:] |= (s[:, 1:] != s[:, :-1]) & ok[:, 1:] & ok[:, :-1]
        edges[1:, :] |= (s[1:, :] != s[:-1, :]) & ok[1:, :] & ok[:-1, :]
    if depth is not None:
        d = depth.astype(np.float64)
        ok = np.isfinite(d) & (d > 0)  # no discontinuity against missing depth
        rel_x = np.abs(d[:, 1:] - d[:, :-1]) / np.maximum(np.minimum(d[:, 1:], d[:, :-1]), 1e-6)
        rel_y = np.abs(d[1:, :] - d[:-1, :]) / np.maximum(np.minimum(d[1:, :], d[:-1, :]), 1e-6)
        edges[:, 1:] |= (rel_x > depth_jump) & ok[:, 1:] & ok[:, :-1]
        edges[1:, :] |= (rel_y > depth_jump) & ok[1:, :] & ok[:-1, :]
    return edges.astype(np.uint8)



def _edge_pair(meter, prob: torch.Tensor, label: torch.Tensor):
    """An edge meter's inputs as (B, H, W), checked (same shape, finite), and the valid mask."""
    prob = prob.reshape(prob.shape[0], *prob.shape[-2:])
    label = label.reshape(label.shape[0], *label.shape[-2:])
    if prob.shape != label.shape:
        raise ValueError(f"edges: prediction {tuple(prob.shape)} and label {tuple(label.shape)} differ in shape")
    meter._check(prediction=prob, label=label.float())
    return prob, label, label != meter.ignore_index

class EdgeMeter(Meter):
    """``update(prob (B, 1|-, H, W) edge probability, label (B, 1|-, H, W) {0, 1}, 255 = ignore)``.

    * ``f1``: F1 of the edge class at threshold 0.5, pixel-exact, pooled over the split.
    * ``odsF`` / ``oisF`` (when ``boundary=True``): F-measure at the best dataset-wide
      threshold / with each image's best threshold, matching within ``max_dist`` x image
      diagonal (0.011, the BSDS/SEISM setting used by MTI-Net, ATRC, InvPT) over
      ``num_thresholds`` thresholds, with thinning of predictions and labels
      (see :func:`densemtl.tasks.boundary.boundary_counts`).
    """

    task = "edges"

    def __init__(self, boundary: bool = True, num_thresholds: int = 25, max_dist: float = 0.011, ignore_index: int = 255):
        self.boundary = boundary
        self.thresholds = default_thresholds(num_thresholds)
        self.max_dist = float(max_dist)
        self.ignore_index = ignore_index
        super().__init__()

    def _init_state(self):
        n = len(self.thresholds)
        return {
            "tp": torch.zeros((), dtype=torch.float64),
            "fp": torch.zeros((), dtype=torch.float64),
            "fn": torch.zeros((), dtype=torch.float64),
            "ods": torch.zeros(n, 4, dtype=torch.float64),
            "ois": torch.zeros(4, dtype=torch.float64),
        }

    def update(self, prob: torch.Tensor, label: torch.Tensor) -> None:
        prob, label, valid = _edge_pair(self, prob, label)
        gt = (label == 1) & valid
        pos = (prob >= 0.5) & valid
        s = self.state
        s["tp"] += (pos & gt).sum().double().cpu()
        s["fp"] += (pos & ~gt).sum().double().cpu()
        s["fn"] += (~pos & gt).sum().double().cpu()
        if not self.boundary:
            return
        probs = torch.where(valid, prob.float(), torch.zeros_like(prob.float())).cpu().numpy()
        gts = gt.cpu().numpy()
        for p, g in zip(probs, gts):
            c = boundary_counts(p, g, self.thresholds, self.max_dist)
            s["ods"] += torch.from_numpy(c)
            _, _, f = f_score(c[:, 0], c[:, 1], c[:, 2], c[:, 3])
            s["ois"] += torch.from_numpy(c[int(np.argmax(f))])

    def compute(self) -> dict[str, float]:
        s = self.state
        tp, fp, fn = float(s["tp"]), float(s["fp"]), float(s["fn"])
        denom = 2 * tp + fp + fn
        out = {"f1": 2 * tp / denom * 100 if denom > 0 else float("nan")}
        if self.boundary:
            c = s["ods"].numpy()
            _, _, f = f_score(c[:, 0], c[:, 1], c[:, 2], c[:, 3])
            best = int(np.argmax(f))
            out["odsF"] = float(f[best]) * 100
            out["ods_threshold"] = float(self.thresholds[best])
            o = s["ois"].numpy()
            out["oisF"] = float(f_score(o[0], o[1], o[2], o[3])[2]) * 100
        return out


class Edges(Task):
    name, letter = "edges", "E"
    channels = 1
    higher_is_better, headline_metric = True, "f1"
    column = "F1 %"
    description = "edges (one logit per pixel)"
    label_format = "(B, 1, H, W) {0, 1}, 255 = ignore"
    derived_from = ("semseg", "depth")
    ignore_index = IGNORE_INDEX

    def derive(self, labels, image, K, **_):
        """Semantic boundaries and relative depth discontinuities of the available labels."""
        if "semseg" not in labels and "depth" not in labels:
            raise ValueError("edges are derived from semseg or depth labels, and this sample has neither")
        return edges_from_labels(labels.get("semseg"), labels.get("depth"))

    def loss(self, pred, label):
        return edges_loss(pred, label)

    def valid_mask(self, label):
        return (label != self.ignore_index).reshape(label.shape[0], *label.shape[-2:])

    def decode(self, pred):
        return torch.sigmoid(pred)

    def meter(self, boundary: bool = True, num_thresholds: int = 25, max_dist: float = 0.011, **_):
        return EdgeMeter(boundary, num_thresholds, max_dist, self.ignore_index)

    def alignment_channels(self, num_classes=None):
        return 1

    def alignment_map(self, pred, **_):
        return edge_map(pred)

    def render(self, value, **_):
        e = to_numpy(value).astype(np.float64)
        e = e[0] if e.ndim == 3 else e  # (1, H, W) -> (H, W)
        e = np.where(e == self.ignore_index, 0, e)
        g = (np.clip(e, 0, 1) * 255).round().astype(np.uint8)
        return np.repeat(g[..., None], 3, -1)


EDGES = register_task(Edges())


# --- protocol "paper": the authors' released label resizing, loss and metric ----------------

def release_edges_loss(logit: torch.Tensor, edges: torch.Tensor, pos_weight: float = 0.95,
                       neg_weight: float = 0.05) -> torch.Tensor:
    """Weighted BCE normalised by the sum of the pixels' weights (what the release's
    two-logit ``cross_entropy(weight=(0.05, 0.95))`` computes): ``sum_i w_i bce_i / sum_i w_i``
    over the labelled pixels (255 = ignore); ``(B, 1, H, W)``."""
    valid = edges != IGNORE_INDEX
    if not valid.any():
        return logit.sum() * 0.0
    target = (edges == 1).to(logit.dtype)
    weight = torch.where(target > 0, torch.full_like(target, pos_weight), torch.full_like(target, neg_weight)) * valid
    loss = F.binary_cross_entropy_with_logits(logit, target, reduction="none")
    return (loss * weight).sum() / weight.sum()


def release_resize_edges(label: np.ndarray, size: tuple[int, int], ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """The release's edge label resizing: the 0/1 map resized bilinearly (half-pixel centres, no
    antialiasing), then every pixel > 0 is an edge; ignored pixels (if any) follow by nearest
    neighbour. ``(H, W)`` uint8 -> ``size = (H, W)``."""
    h, w = size
    if label.shape[:2] == (h, w):
        return label
    edge = torch.from_numpy(np.ascontiguousarray(label == 1, dtype=np.float32))[None, None]
    out = (F.interpolate(edge, size=(h, w), mode="bilinear", align_corners=False)[0, 0] > 0).numpy().astype(label.dtype)
    ignored = resize_label_array(label, size) == ignore_index
    out[ignored] = ignore_index
    return out


class ReleaseEdgeMeter(Meter):
    """The released edge metric: edge where the probability is > 0.5 (the argmax of the
    release's two logits), one 2x2 confusion matrix over the split, per-class F1
    ``2 TP / (predicted + actual)``; ``f1`` is the mean of the background and edge F1 (%),
    also reported apart (``f1_edge``, ``f1_background``). 255 = ignore.
    ``update(prob (B, 1|-, H, W), label (B, 1|-, H, W))``."""

    task = "edges"

    def __init__(self, ignore_index: int = IGNORE_INDEX):
        self.ignore_index = ignore_index
        super().__init__()

    def _init_state(self):
        return {"confusion": torch.zeros(2, 2, dtype=torch.int64)}

    def update(self, prob: torch.Tensor, label: torch.Tensor) -> None:
        prob, label, valid = _edge_pair(self, prob, label)
        gt = (label[valid] == 1).long()
        pred = (prob[valid] > 0.5).long()
        self.state["confusion"] += torch.bincount((gt * 2 + pred).cpu(), minlength=4).view(2, 2)

    def compute(self) -> dict[str, float]:
        cm = self.state["confusion"].double()
        denom = cm.sum(0) + cm.sum(1)
        f1 = torch.where(denom > 0, 2 * cm.diag() / denom.clamp_min(1), torch.full_like(denom, float("nan")))
        known = ~torch.isnan(f1)
        return {
            "f1": float(f1[known].mean() * 100) if known.any() else float("nan"),
            "f1_edge": float(f1[1] * 100),
            "f1_background": float(f1[0] * 100),
        }


class PaperEdges(Edges):
    """Edges as the released code computes them (protocol ``paper``): labels read from files
    resized with :func:`release_resize_edges`, :func:`release_edges_loss`,
    :class:`ReleaseEdgeMeter`."""

    description = "edges, the released code's label resizing, loss and metric"

    def resize_label(self, label, size):
        return release_resize_edges(label, size, self.ignore_index)

    def loss(self, pred, label):
        return release_edges_loss(pred, label)

    def meter(self, **_):
        return ReleaseEdgeMeter(self.ignore_index)


PAPER_EDGES = PAPER.add_variant(PaperEdges())
