"""Figures: side-by-side panels and labelled grids (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def side_by_side(images: list[np.ndarray], pad: int = 4) -> np.ndarray:
    """Concatenate ``(H, W, 3)`` uint8 images horizontally (heights padded to the tallest)."""
    h = max(i.shape[0] for i in images)
    parts = []
    for k, im in enumerate(images):
        im = np.pad(im, ((0, h - im.shape[0]), (0, 0), (0, 0)), constant_values=255)
        parts.append(im)
        if k < len(images) - 1:
            parts.append(np.full((h, pad, 3), 255, np.uint8))
    return np.concatenate(parts, 1)


def save_grid(rows: list[list[np.ndarray]], path: str | Path, row_titles=None, col_titles=None, scale: float = 1.6) -> Path:
    """A grid of images with optional row and column titles, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nr, nc = len(rows), max(len(r) for r in rows)
    h, w = rows[0][0].shape[:2]
    fig, axes = plt.subplots(nr, nc, figsize=(nc * scale * w / max(h, w) * 1.25, nr * scale * h / max(h, w) * 1.25), squeeze=False)
    for i in range(nr):
        for j in range(nc):
            ax = axes[i][j]
            ax.axis("off")
            if j < len(rows[i]) and rows[i][j] is not None:
                ax.imshow(rows[i][j])
            if i == 0 and col_titles and j < len(col_titles):
                ax.set_title(col_titles[j], fontsize=8)
            if j == 0 and row_titles:
                ax.text(-0.05, 0.5, row_titles[i], transform=ax.transAxes, ha="right", va="center", fontsize=8, rotation=90)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
