"""Edge metrics: edge-class F1 at 0.5 (the paper's "F1") and ODS/OIS F with tolerance."""

from __future__ import annotations

import numpy as np
import torch

from .base import Meter
from .boundary import boundary_counts, default_thresholds, f_score


class EdgeMeter(Meter):
    """``update(prob (B, 1|-, H, W) edge probability, label (B, 1|-, H, W) {0, 1}, 255 = ignore)``.

    * ``f1``: F1 of the edge class at threshold 0.5, pixel-exact, pooled over the split.
    * ``odsF`` / ``oisF`` (when ``boundary=True``): F-measure at the best dataset-wide
      threshold / with each image's best threshold, matching within ``max_dist`` x image
      diagonal (0.011, the BSDS/SEISM setting used by MTI-Net, ATRC, InvPT) over
      ``num_thresholds`` thresholds, with thinning of predictions and labels
      (see :func:`densemtl.metrics.boundary.boundary_counts`).
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
        prob = prob.reshape(prob.shape[0], *prob.shape[-2:])
        label = label.reshape(label.shape[0], *label.shape[-2:])
        if prob.shape != label.shape:
            raise ValueError(f"edges: prediction {tuple(prob.shape)} and label {tuple(label.shape)} differ in shape")
        self._check(prediction=prob, label=label.float())
        valid = label != self.ignore_index
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
