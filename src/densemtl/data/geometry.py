"""Camera geometry: intrinsics scaling, flipping and cropping (plus the label geometry of
:mod:`densemtl.tasks.geometry`, re-exported here).

Conventions: pinhole camera, OpenCV frame (x right, y down, z forward), pixel centres at
integer coordinates. Intrinsics are 3x3 matrices ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``.
"""

from __future__ import annotations

import numpy as np

from ..tasks.geometry import angle_between, backproject, normals_from_depth, smooth_depth

__all__ = ["intrinsics_matrix", "scale_intrinsics", "flip_intrinsics", "crop_intrinsics", "release_intrinsics",
           "backproject", "normals_from_depth", "smooth_depth", "angle_between"]


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def scale_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Intrinsics after resizing the image by ``sx`` (width) and ``sy`` (height).

    With pixel centres at integers and ``align_corners=False`` resizing, a pixel ``u`` maps to
    ``(u + 0.5) * s - 0.5``, so ``cx' = (cx + 0.5) * sx - 0.5`` and ``fx' = fx * sx``.
    """
    K2 = np.array(K, dtype=np.float64, copy=True)
    K2[0, 0] *= sx
    K2[1, 1] *= sy
    K2[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K2[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return K2


def flip_intrinsics(K: np.ndarray, width: int) -> np.ndarray:
    """Intrinsics of the horizontally mirrored image: ``cx' = W - 1 - cx``."""
    K2 = np.array(K, dtype=np.float64, copy=True)
    K2[0, 2] = width - 1 - K[0, 2]
    return K2


def crop_intrinsics(K: np.ndarray, top: int, left: int) -> np.ndarray:
    K2 = np.array(K, dtype=np.float64, copy=True)
    K2[0, 2] -= left
    K2[1, 2] -= top
    return K2


def release_intrinsics(camera: dict, x1: int, y1: int, flip: bool) -> np.ndarray:
    """Intrinsics as the authors' released code builds them for a training sample:
    ``[[fx, 0, u0 - x1], [0, fy, v0 - y1], [0, 0, 1]]`` from the *full-resolution* camera
    ``{fx, fy, u0, v0, width, height}`` (not rescaled to the working size), ``(x1, y1)`` the
    crop offset in the (flipped) working-size image; on a horizontal flip ``u0 -> width - u0``
    and also ``v0 -> height - v0``."""
    u0, v0 = float(camera["u0"]), float(camera["v0"])
    if flip:
        u0, v0 = float(camera["width"]) - u0, float(camera["height"]) - v0
    return intrinsics_matrix(float(camera["fx"]), float(camera["fy"]), u0 - x1, v0 - y1)
