"""Virtual KITTI 2 (Camera_0), 14 classes decoded from RGB class maps (or the 8 UDA classes), uint16 cm depth.

```
ROOT/Scene{01,02,06,18,20}/{variation}/frames/rgb/Camera_0/rgb_{frame:05d}.jpg
ROOT/Scene*/{variation}/frames/classSegmentation/Camera_0/classgt_{frame:05d}.png   RGB class colours
ROOT/Scene*/{variation}/frames/depth/Camera_0/depth_{frame:05d}.png                uint16 centimetres
ROOT/Scene*/{variation}/colors.txt   (optional; "Category r g b" per line)
```
Split: seeded disjoint 80/20 of all frames (docs/datasets.md). Default variation: 15-deg-left.
"""

from __future__ import annotations

import numpy as np

from .base import DenseDataset
from .geometry import intrinsics_matrix
from .io import DataError, map_labels, read_png, read_rgb
from .labelsets import UDA8_CLASSES, LabelSet
from .registry import register_dataset
from .splits import seeded_split

VKITTI2_CLASSES = ("terrain", "sky", "tree", "vegetation", "building", "road", "guardrail", "traffic sign",
                   "traffic light", "pole", "misc", "truck", "car", "van")
# colours of the official colors.txt, in the class order above
VKITTI2_COLORS = ((210, 0, 200), (90, 200, 255), (0, 199, 0), (90, 240, 0), (140, 140, 140), (100, 60, 100),
                  (250, 100, 255), (255, 255, 0), (200, 200, 0), (255, 130, 0), (80, 80, 80), (160, 60, 60),
                  (255, 127, 80), (0, 139, 139))
_NAME_KEY = {"terrain": 0, "sky": 1, "tree": 2, "vegetation": 3, "building": 4, "road": 5, "guardrail": 6,
             "trafficsign": 7, "trafficlight": 8, "pole": 9, "misc": 10, "truck": 11, "car": 12, "van": 13}
# applied to the decoded 14-class ids (255 stays void)
VKITTI2_LABEL_SETS = {
    "14": LabelSet(VKITTI2_CLASSES, {i: i for i in range(len(VKITTI2_CLASSES))}),
    # VKITTI2 -> Cityscapes: tree and vegetation -> vegetation; truck, car, van -> vehicle;
    # terrain, guardrail, misc -> void
    "uda8": LabelSet(UDA8_CLASSES, {5: 0, 4: 1, 9: 2, 8: 3, 7: 4, 2: 5, 3: 5, 1: 6, 11: 7, 12: 7, 13: 7}),
}


def decode_class_colors(rgb: np.ndarray, colors, path) -> np.ndarray:
    """RGB class map -> class ids (uint8), black (0, 0, 0) -> 255; any other colour is an error."""
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    keys = np.array([(r << 16) | (g << 8) | b for r, g, b in colors], dtype=np.int64)
    order = np.argsort(keys)
    pos = np.searchsorted(keys[order], code)
    pos = np.clip(pos, 0, len(keys) - 1)
    hit = keys[order][pos] == code
    out = np.where(hit, order[pos], 255).astype(np.uint8)
    unknown = ~hit & (code != 0)
    if unknown.any():
        bad = np.unique(code[unknown])[:5]
        cols = [((int(c) >> 16) & 255, (int(c) >> 8) & 255, int(c) & 255) for c in bad]
        raise DataError(f"{path}: unknown class colour(s) {cols} (not in the Virtual KITTI 2 palette)")
    return out


@register_dataset("vkitti2")
class VirtualKITTI2(DenseDataset):
    num_classes = 14
    class_names = VKITTI2_CLASSES
    label_sets = VKITTI2_LABEL_SETS
    default_label_set = "14"
    default_size = (320, 1024)
    depth_range = (1e-3, 80.0)
    native_tasks = ("semseg", "depth")
    splits = ("train", "val", "all")
    K_full = intrinsics_matrix(725.0087, 725.0087, 620.5, 187.0)  # 1242 x 375
    release_camera = {"fx": 725.0087, "fy": 725.0087, "u0": 620.5, "v0": 187.0, "width": 1242, "height": 375}
    variation = "15-deg-left"
    camera = "Camera_0"

    def _records(self):
        frames = []
        for scene in sorted(p for p in self.root.glob("Scene*") if p.is_dir()):
            rgb_dir = scene / self.variation / "frames" / "rgb" / self.camera
            for f in sorted(rgb_dir.glob("rgb_*.jpg")):
                frames.append(f"{scene.name}/{f.stem[4:]}")
        if not frames:
            raise DataError(f"{self.root}: no frames found at Scene*/{self.variation}/frames/rgb/{self.camera}/rgb_*.jpg")
        return seeded_split(frames, self.split, self.seed)

    def _paths(self, rec):
        scene, frame = rec.split("/")
        base = self.root / scene / self.variation / "frames"
        return (base / "rgb" / self.camera / f"rgb_{frame}.jpg",
                base / "classSegmentation" / self.camera / f"classgt_{frame}.png",
                base / "depth" / self.camera / f"depth_{frame}.png")

    def files_of(self, rec):
        return list(self._paths(rec))

    def _colors(self, scene):
        path = self.root / scene / self.variation / "colors.txt"
        if not path.is_file():
            return VKITTI2_COLORS
        colors = list(VKITTI2_COLORS)
        for line in path.read_text().splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 4:
                key = "".join(parts[:-3]).lower()
                if key in _NAME_KEY:
                    colors[_NAME_KEY[key]] = tuple(int(v) for v in parts[-3:])
        return tuple(colors)

    def _read(self, rec, tasks):
        img_p, cls_p, dep_p = self._paths(rec)
        image = read_rgb(img_p)
        hw = image.shape[:2]
        from .geometry import scale_intrinsics

        K = scale_intrinsics(self.K_full, hw[1] / 1242, hw[0] / 375) if hw != (375, 1242) else self.K_full
        labels = {}
        if "semseg" in tasks:
            rgb = read_png(cls_p, "class map")
            if rgb.ndim != 3 or rgb.shape[:2] != hw:
                raise DataError(f"{cls_p}: class map must be RGB {hw[1]}x{hw[0]}, got shape {rgb.shape}")
            ids = decode_class_colors(rgb[..., :3], self._colors(rec.split("/")[0]), cls_p)
            labels["semseg"] = map_labels(ids, self.label_map.lut(256), cls_p)
        if "depth" in tasks:
            d = read_png(dep_p, "depth")
            if d.dtype != np.uint16 or d.shape[:2] != hw:
                raise DataError(f"{dep_p}: depth must be uint16 {hw[1]}x{hw[0]} (centimetres), got {d.dtype} {d.shape}")
            d = d[..., 0] if d.ndim == 3 else d
            labels["depth"] = (d.astype(np.float32) / 100.0)
        return {"image": image, "labels": labels, "K": K, "id": rec}
