"""Label sets: a class list and the raw id -> class mapping that produces it.

A dataset lists its label sets in ``label_sets = {name: LabelSet}`` and the ``label_set``
option picks one (default: ``default_label_set``). Raw ids not in the mapping are void (255).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import numpy as np

VOID = 255

# the 8 classes shared by Virtual KITTI 2 and Cityscapes (paper section 4.5, VKITTI2 -> Cityscapes)
UDA8_CLASSES = ("road", "building", "pole", "traffic light", "traffic sign", "vegetation", "sky", "vehicle")


@dataclass(frozen=True)
class LabelSet:
    """``names`` of the classes and ``mapping`` raw id -> class index (unlisted ids -> 255)."""

    names: tuple[str, ...]
    mapping: Mapping[int, int] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "mapping", MappingProxyType(dict(self.mapping)))
        bad = {k: v for k, v in self.mapping.items() if not 0 <= v < len(self.names)}
        if bad:
            raise ValueError(f"label set maps to class ids outside 0..{len(self.names) - 1}: {bad}")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def lut(self, size: int = 256) -> np.ndarray:
        """``(size,)`` int64 lookup table raw id -> class, 255 for unlisted ids."""
        lut = np.full(size, VOID, dtype=np.int64)
        for raw, c in self.mapping.items():
            lut[raw] = c
        return lut
