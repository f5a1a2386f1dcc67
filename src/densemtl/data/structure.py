"""How much cross-task structure a labelled dataset carries: what semantics tells about depth
and normals (and back), and whether the tasks share their boundaries.

``cross_task_structure(samples)`` takes label dicts (``semseg (H, W)`` class ids, 255 = void;
``depth (H, W)`` metres, <= 0 or non-finite = invalid; ``normals (H, W, 3)`` unit vectors,
zero = invalid) and returns, pooled over every valid pixel:

* ``r2_depth_class`` / ``r2_normals_class``: the share of each task's variance a per-class
  constant explains, ``1 - sum |y - mean_c(y)|^2 / sum |y - mean(y)|^2`` (normals: vectors).
  ``r2_logdepth_class``: the same for log depth (scale-free).
* ``u_class_given_depth`` / ``u_class_given_normals`` / ``u_class_given_geometry``: the
  uncertainty coefficient ``I(C; X) / H(C)`` of the class given binned depth (``depth_bins``
  quantile bins), binned normals (the nearest of the 26 directions of a 3x3x3 grid) or both:
  the fraction of the class entropy the geometry removes.
* ``u_depth_given_class`` / ``u_normals_given_class``: ``I(C; X) / H(X)`` the other way.
* ``acc_class_from_geometry``: accuracy of the best per-(depth bin, normal bin) class guess
  (an upper bound for a pixel-wise classifier on those bins), against ``acc_majority``.
* ``boundary_geometric``: of the semantic boundary pixel pairs (4-neighbours of different
  classes), the fraction that are a depth discontinuity (relative jump > ``depth_jump``) or a
  normal discontinuity (angle > ``normal_angle`` degrees); ``boundary_depth`` /
  ``boundary_normals`` each alone. ``geometric_semantic``: of the geometric discontinuities,
  the fraction that are semantic boundaries.
"""

from __future__ import annotations

import numpy as np

_DIRS = np.array([(x, y, z) for x in (-1, 0, 1) for y in (-1, 0, 1) for z in (-1, 0, 1) if (x, y, z) != (0, 0, 0)], float)
_DIRS /= np.linalg.norm(_DIRS, axis=1, keepdims=True)


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """``I(A; B)`` in nats of two integer label arrays (same length)."""
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    joint = np.zeros((ia.max() + 1, ib.max() + 1))
    np.add.at(joint, (ia, ib), 1)
    return _entropy(joint.sum(1)) + _entropy(joint.sum(0)) - _entropy(joint.ravel())


def _r2(y: np.ndarray, groups: np.ndarray) -> float:
    """Share of the variance of ``y`` (N,) or (N, k) explained by the per-group mean."""
    y = y.reshape(len(y), -1)
    total = ((y - y.mean(0)) ** 2).sum()
    _, g = np.unique(groups, return_inverse=True)
    sums = np.zeros((g.max() + 1, y.shape[1]))
    np.add.at(sums, g, y)
    means = sums / np.bincount(g)[:, None]
    return float(1 - ((y - means[g]) ** 2).sum() / total)


def _pairs(a: np.ndarray):
    """Horizontal and vertical 4-neighbour pairs of a (H, W, ...) array, flattened."""
    return [(a[:, 1:], a[:, :-1]), (a[1:, :], a[:-1, :])]


def cross_task_structure(samples, depth_bins: int = 16, depth_jump: float = 0.05, normal_angle: float = 20.0) -> dict:
    cls_all, d_all, n_all = [], [], []
    sem_b = sem_geo = sem_depth = sem_norm = geo_b = geo_sem = 0
    cos_t = np.cos(np.radians(normal_angle))
    for s in samples:
        c, d, n = np.asarray(s["semseg"]).astype(np.int64), np.asarray(s["depth"], np.float64), np.asarray(s["normals"], np.float64)
        ok = (c != 255) & np.isfinite(d) & (d > 0) & (np.linalg.norm(n, axis=-1) > 0.5)
        cls_all.append(c[ok])
        d_all.append(d[ok])
        n_all.append(n[ok])
        for (c1, c2), (d1, d2), (n1, n2), (o1, o2) in zip(_pairs(c), _pairs(d), _pairs(n), _pairs(ok)):
            both = o1 & o2
            sem = (c1 != c2) & both
            with np.errstate(divide="ignore", invalid="ignore"):
                djump = np.abs(d1 - d2) / np.minimum(d1, d2) > depth_jump
            nangle = (n1 * n2).sum(-1) < cos_t
            geo = (djump | nangle) & both
            sem_b += int(sem.sum())
            sem_geo += int((sem & geo).sum())
            sem_depth += int((sem & djump).sum())
            sem_norm += int((sem & nangle).sum())
            geo_b += int(geo.sum())
            geo_sem += int((geo & sem).sum())
    c, d, n = np.concatenate(cls_all), np.concatenate(d_all), np.concatenate(n_all)
    edges = np.quantile(d, np.linspace(0, 1, depth_bins + 1)[1:-1])
    dbin = np.searchsorted(edges, d)
    nbin = np.argmax(n @ _DIRS.T, 1)
    geo = dbin * len(_DIRS) + nbin
    h_c = _entropy(np.bincount(c))
    joint = np.zeros((geo.max() + 1, c.max() + 1))
    np.add.at(joint, (geo, c), 1)
    return {
        "pixels": int(len(c)),
        "r2_depth_class": _r2(d, c),
        "r2_logdepth_class": _r2(np.log(d), c),
        "r2_normals_class": _r2(n, c),
        "u_class_given_depth": mutual_information(c, dbin) / h_c,
        "u_class_given_normals": mutual_information(c, nbin) / h_c,
        "u_class_given_geometry": mutual_information(c, geo) / h_c,
        "u_depth_given_class": mutual_information(c, dbin) / _entropy(np.bincount(dbin)),
        "u_normals_given_class": mutual_information(c, nbin) / _entropy(np.bincount(nbin)),
        "acc_class_from_geometry": float(joint.max(1).sum() / len(c)),
        "acc_majority": float(np.bincount(c).max() / len(c)),
        "boundary_geometric": sem_geo / max(sem_b, 1),
        "boundary_depth": sem_depth / max(sem_b, 1),
        "boundary_normals": sem_norm / max(sem_b, 1),
        "geometric_semantic": geo_sem / max(geo_b, 1),
    }
