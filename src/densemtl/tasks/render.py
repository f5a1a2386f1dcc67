"""Colour helpers for rendering labels and predictions as RGB images."""

from __future__ import annotations

import numpy as np
import torch


def to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


def class_palette(num_classes: int, seed: int = 0) -> np.ndarray:
    """Deterministic, well-separated colours ``(num_classes + 1, 3)`` uint8; last row = void (black)."""
    import matplotlib

    base = [matplotlib.colormaps[n](np.linspace(0, 1, 20 if n.startswith("tab20") else 10))[:, :3]
            for n in ("tab20", "tab20b", "tab20c", "tab10")]
    colours = np.concatenate(base)
    if num_classes > len(colours):
        rng = np.random.default_rng(seed)
        colours = np.concatenate([colours, rng.uniform(0, 1, (num_classes - len(colours), 3))])
    pal = (colours[:num_classes] * 255).round().astype(np.uint8)
    return np.concatenate([pal, np.zeros((1, 3), np.uint8)])


def colormap(values: np.ndarray, vmin: float, vmax: float, name: str = "magma", invalid: np.ndarray | None = None) -> np.ndarray:
    """Scalar map ``(H, W)`` -> ``(H, W, 3)`` uint8 through a perceptual matplotlib colour map."""
    import matplotlib

    span = max(vmax - vmin, 1e-12)
    t = np.clip((values - vmin) / span, 0, 1)
    rgb = (matplotlib.colormaps[name](t)[..., :3] * 255).round().astype(np.uint8)
    if invalid is not None:
        rgb[invalid] = 0
    return rgb


# the Cityscapes benchmark's colours by class name (also used for the Cityscapes classes of
# Synthia and Virtual KITTI 2; "vehicle", the VKITTI2 -> Cityscapes class, takes car's colour)
CITYSCAPES_COLOURS = {
    "road": (128, 64, 128), "sidewalk": (244, 35, 232), "building": (70, 70, 70), "wall": (102, 102, 156),
    "fence": (190, 153, 153), "pole": (153, 153, 153), "traffic light": (250, 170, 30),
    "traffic sign": (220, 220, 0), "vegetation": (107, 142, 35), "terrain": (152, 251, 152),
    "sky": (70, 130, 180), "person": (220, 20, 60), "rider": (255, 0, 0), "car": (0, 0, 142),
    "truck": (0, 0, 70), "bus": (0, 60, 100), "train": (0, 80, 100), "motorcycle": (0, 0, 230),
    "bicycle": (119, 11, 32), "vehicle": (0, 0, 142),
}


def dataset_palette(class_names) -> np.ndarray:
    """A dataset's segmentation colours ``(len(class_names) + 1, 3)`` uint8, void (black) last:
    the Cityscapes colour of every class the Cityscapes benchmark names, :func:`class_palette`'s
    colour of the same index for the others (e.g. NYUDv2's 40 classes, the procedural set's)."""
    names = list(class_names)
    pal = class_palette(len(names))
    for i, n in enumerate(names):
        if str(n).lower() in CITYSCAPES_COLOURS:
            pal[i] = CITYSCAPES_COLOURS[str(n).lower()]
    return pal
