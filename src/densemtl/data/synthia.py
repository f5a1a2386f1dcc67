"""Synthia RAND-CITYSCAPES, 16 classes from 16-bit label PNGs, depth in centimetres.

```
ROOT/RGB/{id:07d}.png
ROOT/GT/LABELS/{id:07d}.png     16-bit PNG, class id in the first channel (instance id in the second)
ROOT/Depth/Depth/{id:07d}.png   16-bit PNG, depth in centimetres in the first channel
```
Split: seeded disjoint 80/20 (docs/datasets.md).
"""

from __future__ import annotations

import numpy as np

from .base import DenseDataset
from .cityscapes import CITYSCAPES16_CLASSES
from .geometry import intrinsics_matrix, scale_intrinsics
from .io import DataError, map_labels, read_png, read_rgb
from .labelsets import LabelSet
from .registry import register_dataset
from .splits import seeded_split

# Synthia id -> class (the 16 Cityscapes classes); other ids (0 void, 13, 14, 16, 18, 20, 22) -> void
SYNTHIA_TO_16 = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 9, 10: 10, 17: 11, 8: 12, 19: 13, 12: 14, 11: 15}
SYNTHIA_MAX_ID = 22
SYNTHIA_LABEL_SETS = {"16": LabelSet(CITYSCAPES16_CLASSES, SYNTHIA_TO_16)}


def synthia_lut(label_set: LabelSet = SYNTHIA_LABEL_SETS["16"]) -> np.ndarray:
    return label_set.lut(SYNTHIA_MAX_ID + 1)


@register_dataset("synthia")
class Synthia(DenseDataset):
    num_classes = 16
    class_names = CITYSCAPES16_CLASSES
    label_sets = SYNTHIA_LABEL_SETS
    default_label_set = "16"
    default_size = (512, 1024)
    depth_range = (1e-3, 80.0)
    native_tasks = ("semseg", "depth")
    splits = ("train", "val", "all")
    K_full = intrinsics_matrix(532.74, 532.74, 640.0, 380.0)  # 1280 x 760
    release_camera = {"fx": 532.740352, "fy": 532.740352, "u0": 640.0, "v0": 380.0, "width": 1280, "height": 760}

    def _records(self):
        rgb = self.root / "RGB"
        if not rgb.is_dir():
            raise DataError(f"{rgb}: missing Synthia RGB folder")
        return seeded_split([p.stem for p in rgb.glob("*.png")], self.split, self.seed)

    def _paths(self, i):
        return self.root / "RGB" / f"{i}.png", self.root / "GT" / "LABELS" / f"{i}.png", self.root / "Depth" / "Depth" / f"{i}.png"

    def files_of(self, i):
        return list(self._paths(i))

    def _read(self, i, tasks):
        img_p, lab_p, dep_p = self._paths(i)
        image = read_rgb(img_p)
        hw = image.shape[:2]
        K = scale_intrinsics(self.K_full, hw[1] / 1280, hw[0] / 760) if hw != (760, 1280) else self.K_full
        labels = {}
        if "semseg" in tasks:
            raw = read_png(lab_p, "labels")
            if raw.shape[:2] != hw:
                raise DataError(f"{lab_p}: labels are {raw.shape[1]}x{raw.shape[0]}, the image is {hw[1]}x{hw[0]}")
            raw = raw[..., 0] if raw.ndim == 3 else raw
            labels["semseg"] = map_labels(raw, synthia_lut(self.label_map), lab_p)
        if "depth" in tasks:
            d = read_png(dep_p, "depth")
            if d.shape[:2] != hw or d.dtype != np.uint16:
                raise DataError(f"{dep_p}: depth must be 16-bit {hw[1]}x{hw[0]}, got {d.dtype} {d.shape}")
            d = d[..., 0] if d.ndim == 3 else d
            labels["depth"] = d.astype(np.float32) / 100.0
        return {"image": image, "labels": labels, "K": K, "id": i}
