"""Cityscapes in its official layout, 16 classes (or the 8 UDA classes), depth from disparity.

```
ROOT/leftImg8bit/{train,val}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
ROOT/gtFine/{train,val}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png
ROOT/disparity/{train,val}/{city}/{city}_{seq}_{frame}_disparity.png     uint16
ROOT/camera/{train,val}/{city}/{city}_{seq}_{frame}_camera.json
ROOT/leftImg8bit_sequence/{train,val}/{city}/{city}_{seq}_{frame:06d}_leftImg8bit.png   (sequence=True)
```
disparity = (p - 1) / 256 for p > 0; depth = baseline * fx / disparity (metres).
"""

from __future__ import annotations

import numpy as np

from .base import DenseDataset
from .geometry import intrinsics_matrix
from .io import DataError, map_labels, read_json, read_png, read_rgb
from .labelsets import UDA8_CLASSES, LabelSet
from .registry import register_dataset

CITYSCAPES16_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "sky", "person", "rider", "car", "bus", "motorcycle", "bicycle",
)
# labelIds of the 19 train classes minus terrain (22), truck (27), train (31)
CITYSCAPES16_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 23, 24, 25, 26, 28, 32, 33)
CITYSCAPES_LABEL_SETS = {
    "16": LabelSet(CITYSCAPES16_CLASSES, {i: c for c, i in enumerate(CITYSCAPES16_IDS)}),
    # VKITTI2 -> Cityscapes: road, building, pole, light, sign, vegetation, sky; car and bus -> vehicle
    "uda8": LabelSet(UDA8_CLASSES, {7: 0, 11: 1, 17: 2, 19: 3, 20: 4, 21: 5, 23: 6, 26: 7, 28: 7}),
}


def cityscapes_lut(label_set: LabelSet = CITYSCAPES_LABEL_SETS["16"]) -> np.ndarray:
    """labelId (0..33, and -1 = license plate stored as 255 in some files) -> class, 255 = void."""
    lut = label_set.lut(256)
    lut[34:255] = -1  # not a Cityscapes labelId
    return lut


def disparity_to_depth(p: np.ndarray, baseline: float, fx: float) -> np.ndarray:
    """Cityscapes disparity PNG values -> metric depth (0 where invalid)."""
    disp = (p.astype(np.float64) - 1.0) / 256.0
    valid = (p > 0) & (disp > 0)
    return np.where(valid, baseline * fx / np.where(valid, disp, 1.0), 0.0).astype(np.float32)


@register_dataset("cityscapes")
class Cityscapes(DenseDataset):
    num_classes = 16
    class_names = CITYSCAPES16_CLASSES
    label_sets = CITYSCAPES_LABEL_SETS
    default_label_set = "16"
    default_size = (512, 1024)
    depth_range = (1e-3, 80.0)
    native_tasks = ("semseg", "depth")
    supports_sequence = True  # leftImg8bit_sequence: frames t-1 and t+1 of each labelled frame t
    release_camera = {"fx": 2262.52, "fy": 2265.3017905988554, "u0": 1096.98, "v0": 513.137, "width": 2048, "height": 1024}

    def _records(self):
        base = self.root / "leftImg8bit" / self.split
        if not base.is_dir():
            raise DataError(f"{base}: missing Cityscapes images folder (leftImg8bit/{self.split}/<city>/...)")
        return sorted(str(p.relative_to(base))[: -len("_leftImg8bit.png")] for p in base.glob("*/*_leftImg8bit.png"))

    def _path(self, stem, folder, suffix):
        return self.root / folder / self.split / f"{stem}_{suffix}"

    def files_of(self, stem):
        return [self._path(stem, "leftImg8bit", "leftImg8bit.png"), self._path(stem, "gtFine", "gtFine_labelIds.png"),
                self._path(stem, "disparity", "disparity.png"), self._path(stem, "camera", "camera.json")]

    def _read(self, stem, tasks):
        image = read_rgb(self._path(stem, "leftImg8bit", "leftImg8bit.png"))
        hw = image.shape[:2]
        cam_path = self._path(stem, "camera", "camera.json")
        cam = read_json(cam_path, "camera calibration")
        try:
            intr, baseline = cam["intrinsic"], float(cam["extrinsic"]["baseline"])
            K = intrinsics_matrix(intr["fx"], intr["fy"], intr["u0"], intr["v0"])
        except (KeyError, TypeError) as e:
            raise DataError(f"{cam_path}: expected keys intrinsic.fx/fy/u0/v0 and extrinsic.baseline ({e})") from e
        labels = {}
        if "semseg" in tasks:
            p = self._path(stem, "gtFine", "gtFine_labelIds.png")
            raw = read_png(p, "labelIds")
            if raw.shape[:2] != hw or raw.ndim != 2:
                raise DataError(f"{p}: labelIds must be single-channel {hw[1]}x{hw[0]}, got shape {raw.shape}")
            labels["semseg"] = map_labels(raw, cityscapes_lut(self.label_map), p)
        if "depth" in tasks:
            p = self._path(stem, "disparity", "disparity.png")
            disp = read_png(p, "disparity")
            if disp.shape[:2] != hw or disp.ndim != 2:
                raise DataError(f"{p}: disparity must be single-channel {hw[1]}x{hw[0]}, got shape {disp.shape}")
            labels["depth"] = disparity_to_depth(disp, baseline, K[0, 0])
        out = {"image": image, "labels": labels, "K": K, "id": stem}
        if self.sequence:
            out["frames"] = {k: read_rgb(self._neighbour(stem, k)) for k in (-1, 1)}
        return out

    def _neighbour(self, stem: str, offset: int):
        """``leftImg8bit_sequence/{split}/{city}/{city}_{seq}_{frame + offset:06d}_leftImg8bit.png``."""
        city_dir, name = stem.split("/")
        city, seq, frame = name.rsplit("_", 2)
        path = (self.root / "leftImg8bit_sequence" / self.split / city_dir
                / f"{city}_{seq}_{int(frame) + offset:06d}_leftImg8bit.png")
        if not path.is_file():
            raise DataError(f"{path}: missing neighbour frame {offset:+d} of {stem} (Cityscapes leftImg8bit_sequence)")
        return path
