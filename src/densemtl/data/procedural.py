"""The bundled procedural dataset (``densemtl data synth``): indoor scenes with exact labels.

Written by :func:`densemtl.data.synth.generate_dataset` in the NYUDv2 file layout (see
:mod:`densemtl.data.nyud`) plus a ``dataset.json`` that names the classes, the camera, the
working size and the depth range, and (with ``--sequences``) neighbour frames and their
relative poses:

```
ROOT/
  dataset.json                  {"num_classes", "class_names", "intrinsics", "default_size", "depth_range", ...}
  images/ segmentation/ depth/ normals/ edge/ gt_sets/   as NYUDv2
  sequence/<id>_{prev,next}.png, poses/<id>.json        with --sequences
```
"""

from __future__ import annotations

from .io import DataError
from .nyud import NYUDv2
from .registry import register_dataset
from .synth import SYNTH_CLASSES


@register_dataset("procedural")
class Procedural(NYUDv2):
    num_classes = len(SYNTH_CLASSES)
    class_names = SYNTH_CLASSES
    default_size = (192, 256)
    depth_range = (1e-3, 20.0)
    official_split_sizes: dict = {}
    supports_sequence = True  # with --sequences: frames t-1, t+1 and their ground-truth poses
    splits = ("train", "val", "all")  # all: train + val (e.g. a domain-adaptation source, as Synthia's)

    def _records(self):
        if self.split == "all":
            return sorted(set(self._split_ids("train")) | set(self._split_ids("val")))
        return super()._records()

    def split_file(self, split):
        return None if split == "all" else super().split_file(split)

    def _setup(self):
        if not (self.root / "dataset.json").is_file():
            raise DataError(f"{self.root / 'dataset.json'}: missing; {self.root} is not a procedural dataset "
                            f"(write one with `densemtl data synth --out {self.root}`)")
        super()._setup()

    def _read(self, i, tasks):
        out = super()._read(i, tasks)
        if self.sequence:
            if not (self.root / "sequence").is_dir():
                raise DataError(f"{self.root}: no sequence/ folder: generate the dataset with `densemtl data synth --sequences`")
            out.update(self._read_sequence(i))
        return out
