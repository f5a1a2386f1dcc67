"""NYUDv2 in the layout most 4-task work uses (NYUD-MT of Maninis et al., used by MTI-Net, ATRC).

```
ROOT/
  images/<id>.png|.jpg        RGB uint8 (480 x 640)
  segmentation/<id>.png       uint8, 0 = void, 1..40 = the 40 classes of Gupta et al.
  depth/<id>.npy              float32 metres, 0 = invalid
  normals/<id>.png|.npy       uint8 RGB, n = 2 v / 255 - 1 (channel 0 = x, right); (0,0,0) = invalid;
                              or float (H, W, 3) vectors (the .npy of the ASTMT / MTI-Net release)
  edge/<id>.png|.npy          0/255 PNG or 0/1 array
  gt_sets/train.txt, val.txt  one id per line (795 / 654, the official split)
  dataset.json                optional: {"num_classes", "class_names", "intrinsics": {fx, fy, cx, cy, width, height}}
```
The procedural set (``densemtl data synth``, dataset ``procedural``) uses this layout too.
"""

from __future__ import annotations

import math
from pathlib import PurePosixPath, PureWindowsPath

import numpy as np

from ..tasks import get_task
from .base import DenseDataset
from .geometry import intrinsics_matrix
from .io import DataError, numeric_map, read_json, read_npy, read_png, read_rgb
from .registry import register_dataset

NYUD40_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat", "clothes",
    "ceiling", "books", "refridgerator", "television", "paper", "towel", "shower curtain", "box", "whiteboard",
    "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure", "otherfurniture",
    "otherprop",
)
# Kinect colour camera at 640 x 480
KINECT = dict(fx=518.86, fy=519.47, cx=325.58, cy=253.74, width=640, height=480)


def normals_png_vectors(arr: np.ndarray) -> np.ndarray:
    """uint8 RGB normals -> vectors ``2 v / 255 - 1`` (float32, invalid pixels not marked)."""
    return arr.astype(np.float32) * (2.0 / 255.0) - 1.0


def decode_normals_png(arr: np.ndarray) -> np.ndarray:
    """uint8 RGB normals -> vectors with the invalid ones (black pixels, short vectors) zeroed
    (what the standard normals task makes of :func:`normals_png_vectors`)."""
    return get_task("normals").from_native(normals_png_vectors(arr))


def encode_normals_png(n: np.ndarray) -> np.ndarray:
    v = np.clip(np.round((n + 1.0) * 127.5), 1, 255).astype(np.uint8)
    v[(n == 0).all(-1)] = 0
    return v


def _is_number(v, integer: bool = False) -> bool:
    ok = isinstance(v, int) if integer else isinstance(v, (int, float)) and math.isfinite(v)
    return ok and not isinstance(v, bool)


def check_metadata(meta, path) -> dict:
    """``dataset.json`` with the types the loader needs; a :class:`DataError` names the key otherwise."""
    def bad(key, expected, value):
        raise DataError(f"{path}: '{key}' must be {expected}, got {value!r}")

    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object (num_classes, class_names, intrinsics, ...), got {type(meta).__name__}")
    n = meta.get("num_classes")
    if "num_classes" in meta and not (_is_number(n, integer=True) and n >= 1):
        bad("num_classes", "a positive integer", n)
    names = meta.get("class_names")
    if "class_names" in meta:
        if not (isinstance(names, list) and all(isinstance(c, str) for c in names)):
            bad("class_names", "a list of strings", names)
        if n is not None and len(names) != n:
            bad("class_names", f"a list of num_classes = {n} names", names)
    intr = meta.get("intrinsics", {})
    if not isinstance(intr, dict):
        bad("intrinsics", "an object with fx, fy, cx, cy, width, height", intr)
    for k, v in intr.items():
        if k in ("fx", "fy", "cx", "cy") and not (_is_number(v) and (v > 0 or k in ("cx", "cy"))):
            bad(f"intrinsics.{k}", "a number" + (" > 0" if k in ("fx", "fy") else ""), v)
        if k in ("width", "height") and not (_is_number(v, integer=True) and v > 0):
            bad(f"intrinsics.{k}", "a positive integer (pixels)", v)
    if "default_size" in meta:
        size = meta["default_size"]
        if not (isinstance(size, list) and len(size) == 2 and all(_is_number(v, integer=True) and v > 0 for v in size)):
            bad("default_size", "[height, width] in pixels (positive integers)", size)
    if "depth_range" in meta:
        r = meta["depth_range"]
        if not (isinstance(r, list) and len(r) == 2 and all(_is_number(v) for v in r) and 0 <= r[0] < r[1]):
            bad("depth_range", "[min, max] in metres with 0 <= min < max", r)
    return meta


def check_split_id(sid: str, path, line: int) -> str:
    """A split-list id must name files inside the dataset root: no absolute path, no ``..``."""
    if any(p.is_absolute() or p.drive or ".." in p.parts for p in (PurePosixPath(sid), PureWindowsPath(sid))):
        raise DataError(f"{path}:{line}: id {sid!r} points outside the dataset root "
                        f"(ids are file names relative to images/, without extension, e.g. 00001)")
    return sid


@register_dataset("nyud")
class NYUDv2(DenseDataset):
    num_classes = 40
    class_names = NYUD40_CLASSES
    default_size = (448, 576)
    depth_range = (1e-3, 10.0)
    native_tasks = ("semseg", "depth", "normals", "edges")
    official_split_sizes = {"train": 795, "val": 654}

    def _setup(self):
        meta_path = self.root / "dataset.json"
        self.meta = check_metadata(read_json(meta_path, "dataset metadata"), meta_path) if meta_path.is_file() else {}
        if "num_classes" in self.meta:
            self.num_classes = int(self.meta["num_classes"])
            self.class_names = tuple(self.meta.get("class_names", [str(i) for i in range(self.num_classes)]))
        cam = {**KINECT, **self.meta.get("intrinsics", {})}
        self.native_K = intrinsics_matrix(cam["fx"], cam["fy"], cam["cx"], cam["cy"])
        self.native_hw = (int(cam["height"]), int(cam["width"]))
        if "default_size" in self.meta and self.size == tuple(type(self).default_size):
            self.size = tuple(self.meta["default_size"])
        if "depth_range" in self.meta:
            self.depth_range = tuple(self.meta["depth_range"])

    def _records(self):
        return self._split_ids(self.split)

    def _split_ids(self, split: str) -> list[str]:
        """The ids listed in ``gt_sets/<split>.txt``."""
        lst = self.split_file(split)
        if not lst.is_file():
            raise DataError(f"{lst}: missing split list (one image id per line)")
        return [check_split_id(line.strip(), lst, n) for n, line in enumerate(lst.read_text().splitlines(), 1) if line.strip()]

    def split_file(self, split):
        return self.root / "gt_sets" / f"{split}.txt"

    def _image_path(self, i):
        for ext in (".png", ".jpg", ".jpeg"):
            p = self.root / "images" / f"{i}{ext}"
            if p.is_file():
                return p
        return self.root / "images" / f"{i}.png"

    def _edge_path(self, i):
        p = self.root / "edge" / f"{i}.png"
        return p if p.is_file() or not (self.root / "edge" / f"{i}.npy").is_file() else self.root / "edge" / f"{i}.npy"

    def _normals_path(self, i):
        p = self.root / "normals" / f"{i}.png"
        return p if p.is_file() or not (self.root / "normals" / f"{i}.npy").is_file() else self.root / "normals" / f"{i}.npy"

    def files_of(self, i):
        return [self._image_path(i), self.root / "segmentation" / f"{i}.png", self.root / "depth" / f"{i}.npy",
                self._normals_path(i), self._edge_path(i)]

    def _check_hw(self, arr, path, what, hw):
        if arr.shape[:2] != hw:
            raise DataError(f"{path}: {what} is {arr.shape[1]}x{arr.shape[0]} (WxH), the image is {hw[1]}x{hw[0]}")

    @staticmethod
    def _edge_labels(e, path):
        """0/255 or 0/1 map -> uint8 0/1; any other value is an error (never thresholded away)."""
        nonzero = np.count_nonzero(e)
        for on in (255, 1):
            lab = e == on
            if np.count_nonzero(lab) == nonzero:
                return lab.view(np.uint8)
        on = 1 if e.max() <= 1 else 255
        bad = np.unique(e[(e != 0) & (e != on)])
        raise DataError(f"{path}: edge map holds values other than 0 and {on} ({bad[:5].tolist()}...); "
                        f"expected a 0/255 PNG or a 0/1 array")

    def _read(self, i, tasks):
        img_path = self._image_path(i)
        image = read_rgb(img_path)
        hw = image.shape[:2]
        K = self.native_K
        if hw != self.native_hw:  # images stored at another size: scale the camera
            from .geometry import scale_intrinsics

            K = scale_intrinsics(K, hw[1] / self.native_hw[1], hw[0] / self.native_hw[0])
        labels = {}
        if "semseg" in tasks:
            p = self.root / "segmentation" / f"{i}.png"
            s = read_png(p, "segmentation")
            if s.ndim != 2:
                raise DataError(f"{p}: segmentation must be a single-channel PNG, got shape {s.shape}")
            self._check_hw(s, p, "segmentation", hw)
            if s.max() > self.num_classes:
                bad = np.unique(s[s > self.num_classes])
                raise DataError(f"{p}: unknown class id(s) {bad[:10].tolist()} (expected 0 = void, 1..{self.num_classes})")
            labels["semseg"] = np.where(s == 0, 255, s.astype(np.int64) - 1).astype(np.uint8)
        if "depth" in tasks:
            p = self.root / "depth" / f"{i}.npy"
            d = numeric_map(read_npy(p, "depth"), p, "depth (metres)").astype(np.float32)
            self._check_hw(d, p, "depth", hw)
            if not np.isfinite(d).all():
                raise DataError(f"{p}: depth contains NaN/Inf")
            labels["depth"] = np.where(d > 0, d, 0).astype(np.float32)
        if "normals" in tasks:  # vectors as stored; the normals task marks the invalid ones (from_native)
            p = self._normals_path(i)
            n = read_npy(p, "normals") if p.suffix == ".npy" else read_png(p, "normals")
            if n.ndim != 3 or n.shape[2] != 3 or n.dtype.kind not in ("u" if p.suffix == ".png" else "f"):
                raise DataError(f"{p}: normals must be an RGB PNG or an (H, W, 3) float array, got {n.dtype} {n.shape}")
            self._check_hw(n, p, "normals", hw)
            labels["normals"] = normals_png_vectors(n) if p.suffix == ".png" else n.astype(np.float32)
        if "edges" in tasks:
            p = self._edge_path(i)
            e = numeric_map(read_npy(p, "edges") if p.suffix == ".npy" else read_png(p, "edges"), p, "edge map")
            self._check_hw(e, p, "edges", hw)
            labels["edges"] = self._edge_labels(e, p)
        return {"image": image, "labels": labels, "K": K, "id": str(i)}

    def _read_sequence(self, i) -> dict:
        """Neighbour frames ``sequence/<id>_{prev,next}.png`` and poses ``poses/<id>.json``."""
        frames = {k: read_rgb(self.root / "sequence" / f"{i}_{name}.png") for k, name in ((-1, "prev"), (1, "next"))}
        pose_path = self.root / "poses" / f"{i}.json"
        pose = read_json(pose_path, "relative poses")
        try:
            poses = {k: np.array(pose[key], dtype=np.float64) for k, key in ((-1, "T_t_to_prev"), (1, "T_t_to_next"))}
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{pose_path}: expected T_t_to_prev and T_t_to_next as 4x4 numbers ({type(e).__name__}: {e})") from e
        if any(T.shape != (4, 4) for T in poses.values()):
            raise DataError(f"{pose_path}: T_t_to_prev and T_t_to_next must be 4x4, got {[list(T.shape) for T in poses.values()]}")
        return {"frames": frames, "poses": poses}
