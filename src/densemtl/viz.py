"""Figures: side-by-side panels, labelled grids (matplotlib, Agg backend) and the paper's
qualitative figure (input, ground truth and each model's prediction of every task)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .engine.evaluate import decode_outputs
from .tasks import canonical_tasks, get_task
from .tasks.render import dataset_palette


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


def spread_indices(length: int, count: int) -> list[int]:
    """``count`` sample indices spread evenly over ``range(length)`` (first and last included)."""
    if length < 1:
        raise ValueError("the split holds no images")
    if count < 1:
        raise ValueError(f"the number of images must be >= 1, got {count}")
    return sorted({int(round(v)) for v in np.linspace(0, length - 1, min(count, length))})


@torch.no_grad()
def qualitative_panels(models: list, dataset, indices, device: str | torch.device = "cpu") -> dict:
    """The panels of the qualitative figure: one row per sample index, the columns ``input``,
    then for each task (the models' tasks, canonical order) its ground truth and the decoded
    prediction of each model that predicts the task, rendered by the task (:meth:`Task.render`)
    with the dataset's palette and one shared range per image and task
    (:meth:`Task.shared_render_options`).

    ``models``: ``[(name, model)]``. Returns ``{"rows": [[(H, W, 3) uint8 | None]], "columns":
    [title], "ids": [sample id], "cells": [(task, "GT" | model name) | ("input", None)]}``; a
    ground-truth panel is ``None`` where the dataset has no label of the task."""
    tasks = canonical_tasks({t for _, m in models for t in m.tasks})
    opts = {"num_classes": dataset.num_classes}
    if dataset.class_names and len(dataset.class_names) == dataset.num_classes:
        opts["palette"] = dataset_palette(dataset.class_names)
    cells = [("input", None)] + [(t, who) for t in tasks for who in ["GT"] + [n for n, m in models if t in m.tasks]]
    columns = ["input"] + [f"{t}\n{who}" for t, who in cells[1:]]
    rows, ids = [], []
    for i in indices:
        sample = dataset[i]
        x = sample["image"][None].to(device)
        size = x.shape[-2:]
        preds = []  # one {task: decoded} per model (names may repeat)
        for name, model in models:
            model.eval()
            d = model.size_divisor
            if size[0] % d or size[1] % d:
                raise ValueError(f"{name}: the images are {size[0]}x{size[1]}, not multiples of {d} as the model needs; "
                                 f"choose another size")
            out = model(x)
            decoded = decode_outputs(model, out, model.tasks, size)
            preds.append({t: v[0].cpu() for t, v in decoded.items()})
        row = [(sample["image"].permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)]
        for t in tasks:
            task = get_task(t)
            label = sample["labels"].get(t)
            own = [p[t] for p in preds if t in p]
            shared = {**opts, **task.shared_render_options(label, own)}
            row.append(task.render(label, **shared) if label is not None else None)
            row += [task.render(v, **shared) for v in own]
        rows.append(row)
        ids.append(str(sample["id"]))
    return {"rows": rows, "columns": columns, "ids": ids, "cells": cells}


def qualitative_figure(models: list, dataset, indices, path: str | Path, device: str | torch.device = "cpu") -> dict:
    """Draw :func:`qualitative_panels` as a PNG grid at ``path`` (sample ids as row titles);
    returns the panels."""
    panels = qualitative_panels(models, dataset, indices, device)
    save_grid(panels["rows"], path, row_titles=panels["ids"], col_titles=panels["columns"])
    return panels
