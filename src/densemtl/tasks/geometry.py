"""Pure camera geometry for labels: back-projection and surface normals from depth.

Conventions: pinhole camera, OpenCV frame (x right, y down, z forward), pixel centres at
integer coordinates. Intrinsics are 3x3 matrices ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``.
NumPy only; the normals task derives its labels with :func:`normals_from_depth`.
"""

from __future__ import annotations

import numpy as np


def backproject(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Metric depth ``(H, W)`` (z-depth, metres) -> camera-frame points ``(H, W, 3)``."""
    h, w = depth.shape
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    z = depth.astype(np.float64)
    x = (u - K[0, 2]) / K[0, 0] * z
    y = (v - K[1, 2]) / K[1, 1] * z
    return np.stack([x, y, z], -1)


# neighbour offsets (dy, dx) and the 4 pairs whose cross product gives a normal facing
# the camera for a fronto-parallel plane: (E, S), (W, N), (SE, SW), (NW, NE)
_OFFSETS = {"N": (-1, 0), "S": (1, 0), "E": (0, 1), "W": (0, -1), "NE": (-1, 1), "NW": (-1, -1), "SE": (1, 1), "SW": (1, -1)}
_PAIRS = (("S", "E"), ("N", "W"), ("SW", "SE"), ("NE", "NW"))


def _shift(a: np.ndarray, dy: int, dx: int, fill) -> np.ndarray:
    """``out[y, x] = a[y + dy, x + dx]`` with ``fill`` outside the image."""
    out = np.full_like(a, fill)
    h, w = a.shape[:2]
    ys, yd = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))
    xs, xd = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
    out[yd, xd] = a[ys, xs]
    return out


def smooth_depth(depth: np.ndarray, sigma: float, valid: np.ndarray) -> np.ndarray:
    """Mask-aware Gaussian smoothing (``sigma`` in pixels); invalid pixels stay 0."""
    from scipy.ndimage import gaussian_filter

    m = valid.astype(np.float64)
    num = gaussian_filter(np.where(valid, depth, 0.0), sigma)
    den = gaussian_filter(m, sigma)
    return np.where(valid, num / np.maximum(den, 1e-12), 0.0)


def normals_from_depth(depth: np.ndarray, K: np.ndarray, image: np.ndarray | None = None,
                       edge_aware: bool = False, valid: np.ndarray | None = None,
                       smooth_sigma: float = 0.0) -> np.ndarray:
    """Surface normals from metric depth (Yang et al., AAAI 2018).

    Back-project with ``K``; at each pixel take the cross products of the difference vectors
    to 4 pairs of perpendicular neighbours of the 8-neighbourhood, optionally weighted by
    colour similarity ``exp(-0.1 |dRGB|)`` (``image`` uint8-range RGB, ``edge_aware=True``),
    sum, normalise and orient towards the camera. ``smooth_sigma > 0`` first smooths the
    depth (mask-aware Gaussian, pixels): useful for noisy sensor depth (Kinect, stereo);
    leave 0 for rendered depth, where the result is exact on planes.

    Returns ``(H, W, 3)`` float32 unit normals in the camera frame (x right, y down, z
    forward); zero vectors where depth is invalid (``<= 0`` or ``~valid``) and on the eroded
    1-pixel border of the valid region.
    """
    d = np.asarray(depth, dtype=np.float64)
    ok = np.isfinite(d) & (d > 0)
    if valid is not None:
        ok &= valid
    d = np.where(ok, d, 0.0)
    if smooth_sigma > 0:
        d = smooth_depth(d, smooth_sigma, ok)
    P = backproject(d, K)
    img = None if image is None else np.asarray(image, dtype=np.float64)
    acc = np.zeros_like(P)
    for a, b in _PAIRS:
        (ya, xa), (yb, xb) = _OFFSETS[a], _OFFSETS[b]
        va, vb = _shift(ok, ya, xa, False), _shift(ok, yb, xb, False)
        da, db = _shift(P, ya, xa, 0.0) - P, _shift(P, yb, xb, 0.0) - P
        n = np.cross(da, db)
        use = ok & va & vb
        wgt = use.astype(np.float64)
        if edge_aware and img is not None:
            ca = np.abs(_shift(img, ya, xa, 0.0) - img).mean(-1)
            cb = np.abs(_shift(img, yb, xb, 0.0) - img).mean(-1)
            wgt = wgt * np.exp(-0.1 * ca) * np.exp(-0.1 * cb)
        norm = np.linalg.norm(n, axis=-1, keepdims=True)
        acc += np.where(norm > 0, n / np.maximum(norm, 1e-300), 0.0) * wgt[..., None]
    length = np.linalg.norm(acc, axis=-1, keepdims=True)
    out = np.where(length > 1e-12, acc / np.maximum(length, 1e-300), 0.0)
    # orient towards the camera (camera at the origin looks along +z)
    facing = (out * P).sum(-1, keepdims=True)
    out = np.where(facing > 0, -out, out)
    # erode the valid mask by one pixel (the differences there are unreliable)
    eroded = ok.copy()
    for dy, dx in _OFFSETS.values():
        eroded &= _shift(ok, dy, dx, False)
    out[~eroded] = 0.0
    return out.astype(np.float32)


def angle_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel angle in degrees between two ``(..., 3)`` vector fields."""
    an = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return np.degrees(np.arccos(np.clip((an * bn).sum(-1), -1.0, 1.0)))


# --- the authors' released normals target (protocol "paper", docs/fidelity.md) --------------

# neighbour bases of the release, as (dw, dh) offsets: the normal of a basis is the cross
# product of the differences to the neighbours at (x + dw1, y + dh1) and (x + dw0, y + dh0)
RELEASE_BASES = (((1, 0), (0, -1)), ((-1, 0), (0, 1)), ((1, 1), (1, -1)), ((-1, -1), (-1, 1)))


def release_normals(code: np.ndarray, K: np.ndarray) -> np.ndarray:
    """The released code's normals target from a map ``code (H, W)`` (the inverse-depth code,
    not metric depth) and intrinsics ``K`` as the release builds them (see
    :func:`densemtl.data.geometry.release_intrinsics`).

    Points ``P = code * K^-1 (u, v, 1)``; for each basis of :data:`RELEASE_BASES` the cross
    product of the differences to its two neighbours, taken cyclically at the image borders
    (the release rolls the tensor); the four (unnormalised) products are summed, normalised
    (``x / max(|x|, 1e-12)``) and the z component replaced by its absolute value.
    Returns ``(H, W, 3)`` float64.
    """
    code = np.asarray(code, dtype=np.float64)
    h, w = code.shape
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(np.asarray(K, dtype=np.float64)).T
    P = code[..., None] * rays

    def diff(dw: int, dh: int) -> np.ndarray:  # P[y + dh, x + dw] - P[y, x], cyclic
        return np.roll(P, (-dh, -dw), axis=(0, 1)) - P

    acc = np.zeros_like(P)
    for (w1, h1), (w0, h0) in RELEASE_BASES:
        acc += np.cross(diff(w1, h1), diff(w0, h0))
    out = acc / np.maximum(np.linalg.norm(acc, axis=-1, keepdims=True), 1e-12)
    out[..., 2] = np.abs(out[..., 2])
    return out


def release_normals_mask(valid: np.ndarray) -> np.ndarray:
    """The release's normals loss mask from the valid-depth mask ``(H, W)``: the 1-pixel image
    border removed, then eroded by a 3x3 window (a pixel stays only if its whole window,
    inside the image, is valid)."""
    m = np.asarray(valid, dtype=bool).copy()
    m[[0, -1], :] = False
    m[:, [0, -1]] = False
    out = m.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out &= _shift(m, dy, dx, True)
    return out
