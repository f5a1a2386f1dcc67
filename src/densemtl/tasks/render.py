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
