"""Boundary matching with a distance tolerance, for ODS/OIS edge F-scores.

The BSDS / SEISM protocol: binarise the edge probability at each threshold, thin it to
one-pixel-wide edges, match predicted and ground-truth edge pixels one-to-one within
``max_dist * image diagonal`` pixels, and count matches. ``pyEdgeEval`` (the packaged port of
that protocol) needs OpenCV and SciPy without declaring them, so we implement the matching
here: a maximum-cardinality bipartite matching (Hopcroft-Karp, ``scipy.sparse.csgraph``)
between the two pixel sets, with an edge between every pair closer than the tolerance. It
maximises the number of matched pairs, which is what the precision/recall counts use.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching
from scipy.spatial import cKDTree


def thin(mask: np.ndarray) -> np.ndarray:
    """Morphological thinning of a boolean edge map to one-pixel-wide curves."""
    from skimage.morphology import thin as _thin

    return _thin(mask) if mask.any() else mask


def match_count(pred: np.ndarray, gt: np.ndarray, max_dist_px: float) -> int:
    """Number of one-to-one matched pixel pairs within ``max_dist_px`` (Euclidean)."""
    p = np.argwhere(pred)
    g = np.argwhere(gt)
    if len(p) == 0 or len(g) == 0:
        return 0
    pairs = cKDTree(p).sparse_distance_matrix(cKDTree(g), max_dist_px, output_type="ndarray")
    if len(pairs) == 0:
        return 0
    graph = csr_matrix((np.ones(len(pairs), dtype=np.int8), (pairs["i"], pairs["j"])), shape=(len(p), len(g)))
    matched = maximum_bipartite_matching(graph, perm_type="column")
    return int((matched >= 0).sum())


def default_thresholds(n: int) -> np.ndarray:
    """``n`` thresholds strictly inside (0, 1), as in the BSDS benchmark (n = 99 there)."""
    return np.linspace(1.0 / (n + 1), n / (n + 1.0), n)


def boundary_counts(prob: np.ndarray, gt: np.ndarray, thresholds: np.ndarray, max_dist: float = 0.011,
                    apply_thinning: bool = True, thin_gt: bool = True) -> np.ndarray:
    """Counts for one image: ``(len(thresholds), 4)`` = matched GT, GT total, matched pred, pred total.

    ``prob (H, W)`` edge probability, ``gt (H, W)`` bool. ``max_dist`` is a fraction of the
    image diagonal. Predictions are thinned at every threshold; with ``thin_gt`` the ground
    truth is thinned by the same operator, so that a prediction equal to the label scores
    1.0 even where label edges are more than one pixel wide (set ``thin_gt=False`` for the
    SEISM behaviour, which leaves the label as is).
    """
    h, w = gt.shape
    tol = max_dist * float(np.hypot(h, w))
    gt = gt.astype(bool)
    if apply_thinning and thin_gt:
        gt = thin(gt)
    out = np.zeros((len(thresholds), 4), dtype=np.float64)
    n_gt = float(gt.sum())
    for i, t in enumerate(thresholds):
        binary = prob >= t
        if apply_thinning:
            binary = thin(binary)
        m = match_count(binary, gt, tol)
        out[i] = (m, n_gt, m, float(binary.sum()))
    return out


def f_score(count_r, sum_r, count_p, sum_p):
    """Precision, recall and F from counts (0 where undefined, as in BSDS)."""
    r = np.asarray(count_r, float) / np.maximum(np.asarray(sum_r, float), 1e-12) * (np.asarray(sum_r) > 0)
    p = np.asarray(count_p, float) / np.maximum(np.asarray(sum_p, float), 1e-12) * (np.asarray(sum_p) > 0)
    f = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
    return p, r, f
