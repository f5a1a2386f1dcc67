"""Joint transforms on samples: resize, horizontal flip, crop, random scale-crop.

A raw sample is a dict: ``image (H, W, 3) float32 [0, 1]``, ``labels {task: array}`` with
``semseg (H, W) uint8`` (255 void), ``depth (H, W) float32`` metres (0 invalid),
``normals (H, W, 3) float32`` (zero = invalid), ``edges (H, W) uint8`` (0/1, 255 ignore),
``K (3, 3)`` intrinsics and ``id``. How a label is resized, mirrored and turned into a tensor
is its task's business (:class:`densemtl.tasks.Task`, looked up with ``task_of``: the
dataset's protocol's :meth:`~densemtl.tasks.Protocol.task`); this module moves whole samples.

A sample may carry a ``view`` (:func:`new_view`): where the current image lies in the
working-size image as the released code would have produced it (flip first, then a crop at
``(x1, y1)``), kept up to date by the crop and the flip, for targets that need the released
camera (:func:`densemtl.data.geometry.release_intrinsics`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..tasks import get_task
from .geometry import crop_intrinsics, flip_intrinsics, scale_intrinsics


def new_view(native_K: np.ndarray, native_size: tuple[int, int], work_size: tuple[int, int]) -> dict:
    """The view of a freshly loaded sample: native camera and size, the working size, no crop
    (``x1 = y1 = 0``), no flip, not rescaled by an augmentation."""
    return {"native_K": np.asarray(native_K, dtype=np.float64), "native_size": tuple(native_size),
            "work_size": tuple(work_size), "x1": 0, "y1": 0, "flip": False, "rescaled": False}


def _resize_image(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H, W, 3)`` image -> ``size = (H, W)``, bilinear with antialiasing."""
    h, w = size
    if arr.shape[:2] == (h, w):
        return arr
    chw = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None]
    out = F.interpolate(chw.float(), size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return out[0].permute(1, 2, 0).numpy().astype(arr.dtype)


def resize_sample(sample: dict, size: tuple[int, int], task_of=get_task) -> dict:
    """Resize to ``size = (H, W)``: image bilinear (antialiased), labels by their task (nearest), K scaled."""
    h0, w0 = sample["image"].shape[:2]
    if (h0, w0) == tuple(size):
        return sample
    out = dict(sample)
    out["image"] = _resize_image(sample["image"], size)
    if "frames" in sample:
        out["frames"] = {k: _resize_image(v, size) for k, v in sample["frames"].items()}
    out["labels"] = {t: task_of(t).resize_label(v, size) for t, v in sample["labels"].items()}
    out["K"] = scale_intrinsics(sample["K"], size[1] / w0, size[0] / h0)
    if "view" in sample:
        out["view"] = {**sample["view"], "rescaled": True}
    return out


def hflip_sample(sample: dict, task_of=get_task) -> dict:
    """Mirror horizontally: labels by their task (normals' x negated), principal point mirrored."""
    out = dict(sample)
    out["image"] = sample["image"][:, ::-1].copy()
    if "frames" in sample:
        out["frames"] = {k: v[:, ::-1].copy() for k, v in sample["frames"].items()}
    if "poses" in sample:  # mirror the rigid motions: S T S with S = diag(-1, 1, 1, 1)
        S = np.diag([-1.0, 1.0, 1.0, 1.0])
        out["poses"] = {k: S @ T @ S for k, T in sample["poses"].items()}
    out["labels"] = {t: task_of(t).flip_label(v) for t, v in sample["labels"].items()}
    out["K"] = flip_intrinsics(sample["K"], sample["image"].shape[1])
    if "view" in sample:  # the mirrored crop of the mirrored working image
        v = sample["view"]
        out["view"] = {**v, "x1": v["work_size"][1] - v["x1"] - sample["image"].shape[1], "flip": not v["flip"]}
    return out


def crop_sample(sample: dict, top: int, left: int, size: tuple[int, int]) -> dict:
    """Window ``size = (H, W)`` at ``(top, left)`` of the image, frames and labels; K shifted."""
    h, w = size
    H, W = sample["image"].shape[:2]
    if not (0 <= top and top + h <= H and 0 <= left and left + w <= W):
        raise ValueError(f"crop {h}x{w} at ({top}, {left}) does not fit in {H}x{W} (HxW)")
    out = dict(sample)
    out["image"] = sample["image"][top:top + h, left:left + w]
    if "frames" in sample:
        out["frames"] = {k: v[top:top + h, left:left + w] for k, v in sample["frames"].items()}
    out["labels"] = {t: v[top:top + h, left:left + w] for t, v in sample["labels"].items()}
    out["K"] = crop_intrinsics(sample["K"], top, left)
    if "view" in sample:
        v = sample["view"]
        out["view"] = {**v, "x1": v["x1"] + left, "y1": v["y1"] + top}
    return out


def random_crop(sample: dict, rng: np.random.Generator, size: tuple[int, int]) -> dict:
    """Uniformly placed ``size = (H, W)`` window, no rescaling (e.g. 512x1696 -> 512x1024)."""
    h, w = size
    H, W = sample["image"].shape[:2]
    if h > H or w > W:
        raise ValueError(f"crop {h}x{w} is larger than the {H}x{W} image (HxW)")
    top, left = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
    return crop_sample(sample, top, left, (h, w))


def random_scale_crop(sample: dict, rng: np.random.Generator, scale_range=(1.0, 1.5), task_of=get_task) -> dict:
    """Zoom in by a random factor, then crop back to the original size.

    The camera model follows the image: focal lengths are scaled and the principal point is
    shifted by the crop; metric depth is unchanged (the scene is the same, seen through a
    longer lens), so depth, normals and intrinsics stay consistent.
    """
    h, w = sample["image"].shape[:2]
    s = float(rng.uniform(*scale_range))
    nh, nw = max(h, int(round(h * s))), max(w, int(round(w * s)))
    big = resize_sample(sample, (nh, nw), task_of)
    top, left = int(rng.integers(0, nh - h + 1)), int(rng.integers(0, nw - w + 1))
    return crop_sample(big, top, left, (h, w))


def to_tensors(sample: dict, task_of=get_task) -> dict:
    """Numpy sample -> tensors in the label formats of :mod:`densemtl.tasks` (``Task.label_to_tensor``)."""
    out = {
        "image": torch.from_numpy(np.ascontiguousarray(sample["image"].transpose(2, 0, 1))).float(),
        "K": torch.from_numpy(np.asarray(sample["K"], dtype=np.float32)),
        "id": sample["id"],
        "labels": {},
    }
    if "frames" in sample:  # neighbour frames of a video sample, e.g. {-1: prev, 1: next}
        out["frames"] = {k: torch.from_numpy(np.ascontiguousarray(v.transpose(2, 0, 1))).float() for k, v in sample["frames"].items()}
    if "poses" in sample:  # ground-truth 4x4 transforms, camera t -> camera t+k
        out["poses"] = {k: torch.from_numpy(np.asarray(T, dtype=np.float32)) for k, T in sample["poses"].items()}
    out["labels"] = {t: task_of(t).label_to_tensor(v) for t, v in sample["labels"].items()}
    return out
