"""Convert the official NYU Depth v2 labeled set into the NYUDv2 layout of :mod:`.nyud`.

Inputs: ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3 = HDF5; variables ``images``, ``depths``,
``labels`` stored transposed: h5py sees ``(N, 3, W, H)``, ``(N, W, H)``), ``splits.mat``
(``trainNdxs``, ``testNdxs``, 1-based) and ``classMapping40.mat`` (``mapClass``: 894 NYU
classes -> the 40 classes of Gupta et al.). Normals are computed from depth (Kinect
intrinsics) and edges from the 40-class label boundaries.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..tasks.edges import edges_from_labels
from .geometry import intrinsics_matrix, normals_from_depth
from .io import DataError, write_png
from .nyud import KINECT, encode_normals_png


def _loadmat(path: Path, what: str) -> dict:
    import scipy.io as sio

    if not Path(path).is_file():
        raise DataError(f"{path}: missing {what}")
    try:
        return sio.loadmat(str(path))
    except NotImplementedError:  # v7.3 file
        import h5py

        with h5py.File(path, "r") as f:
            return {k: np.array(f[k]).T for k in f.keys() if not k.startswith("#")}
    except Exception as e:
        raise DataError(f"{path}: cannot read {what} ({e})") from e


def read_splits(path: Path) -> tuple[np.ndarray, np.ndarray]:
    m = _loadmat(path, "splits file")
    for k in ("trainNdxs", "testNdxs"):
        if k not in m:
            raise DataError(f"{path}: variable '{k}' not found (found {sorted(k for k in m if not k.startswith('__'))})")
    return np.asarray(m["trainNdxs"]).astype(np.int64).ravel(), np.asarray(m["testNdxs"]).astype(np.int64).ravel()


def read_mapping(path: Path) -> np.ndarray:
    """LUT from NYU class (0 = unlabeled, 1..894) to 0 = void, 1..40."""
    m = _loadmat(path, "class mapping file")
    if "mapClass" not in m:
        raise DataError(f"{path}: variable 'mapClass' not found")
    mp = np.asarray(m["mapClass"]).astype(np.int64).ravel()
    if mp.min() < 0 or mp.max() > 40:
        raise DataError(f"{path}: mapClass values must be within 0..40, got {mp.min()}..{mp.max()}")
    return np.concatenate([[0], mp])


def prepare_nyud(mat: Path, splits: Path, mapping: Path, out: Path, progress: bool = True, limit: int | None = None,
                 normals_sigma: float = 4.0) -> dict:
    """Write ``out/{images,segmentation,depth,normals,edge,gt_sets}``; returns split sizes.

    Normals are computed from the (Kinect) depth after a 4-pixel mask-aware Gaussian
    smoothing: on the real sample 433 this brings the median angle to the published normal
    map from 30.5 (raw) to 5.0 degrees.
    """
    import h5py
    from tqdm import tqdm

    mat, out = Path(mat), Path(out)
    if not mat.is_file():
        raise DataError(f"{mat}: missing NYU Depth v2 labeled .mat file")
    train, test = read_splits(splits)
    lut = read_mapping(mapping)
    K = intrinsics_matrix(KINECT["fx"], KINECT["fy"], KINECT["cx"], KINECT["cy"])
    try:
        f = h5py.File(mat, "r")
    except OSError as e:
        raise DataError(f"{mat}: not a MATLAB v7.3 (HDF5) file ({e})") from e
    with f:
        for k in ("images", "depths", "labels"):
            if k not in f:
                raise DataError(f"{mat}: variable '{k}' not found (found {sorted(f.keys())})")
        n = f["images"].shape[0]
        if f["depths"].shape[0] != n or f["labels"].shape[0] != n:
            raise DataError(f"{mat}: images, depths and labels hold different numbers of frames")
        idx = sorted(set(train.tolist()) | set(test.tolist()))
        if max(idx) > n or min(idx) < 1:
            raise DataError(f"{splits}: indices must be within 1..{n}, got {min(idx)}..{max(idx)}")
        if limit:
            idx = idx[:limit]
        for i in tqdm(idx, disable=not progress, desc="nyud"):
            img = np.asarray(f["images"][i - 1]).transpose(2, 1, 0)
            depth = np.asarray(f["depths"][i - 1], dtype=np.float32).T
            raw = np.asarray(f["labels"][i - 1]).T.astype(np.int64)
            if raw.max() >= len(lut):
                raise DataError(f"{mat}: frame {i} has label {raw.max()} beyond the mapping's {len(lut) - 1} classes")
            seg = lut[raw].astype(np.uint8)
            name = f"{i:05d}"
            write_png(out / "images" / f"{name}.png", np.ascontiguousarray(img.astype(np.uint8)))
            write_png(out / "segmentation" / f"{name}.png", seg)
            (out / "depth").mkdir(parents=True, exist_ok=True)
            np.save(out / "depth" / f"{name}.npy", depth)
            write_png(out / "normals" / f"{name}.png", encode_normals_png(normals_from_depth(depth, K, smooth_sigma=normals_sigma)))
            edges = edges_from_labels(np.where(seg == 0, 255, seg))
            write_png(out / "edge" / f"{name}.png", edges * 255)
    done = set(idx)
    (out / "gt_sets").mkdir(parents=True, exist_ok=True)
    tr = [f"{i:05d}" for i in sorted(train) if i in done]
    va = [f"{i:05d}" for i in sorted(test) if i in done]
    (out / "gt_sets" / "train.txt").write_text("\n".join(tr) + "\n")
    (out / "gt_sets" / "val.txt").write_text("\n".join(va) + "\n")
    return {"train": len(tr), "val": len(va)}
