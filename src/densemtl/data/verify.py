"""``verify``: open every file of a dataset, check shapes, value ranges, class ids, splits."""

from __future__ import annotations

from itertools import combinations

import numpy as np

from .base import DenseDataset
from .io import DataError


def verify_dataset(ds: DenseDataset, progress: bool = True) -> tuple[dict, list[str]]:
    """Returns ``(summary, problems)``; every problem line names the file or sample."""
    from tqdm import tqdm

    problems: list[str] = []
    hist = np.zeros(ds.num_classes, dtype=np.int64)
    dmin, dmax, n_ok = np.inf, -np.inf, 0
    for i in tqdm(range(len(ds)), disable=not progress, desc=f"verify {ds.name}/{ds.split}"):
        rec = ds.records[i]
        try:
            s = ds.load(i)
        except (DataError, OSError, ValueError) as e:
            problems.append(str(e))
            continue
        h, w = ds.size
        bad = []
        img = s["image"]
        if img.size and img.min() == img.max():
            bad.append(f"image is constant (every pixel {round(float(img.flat[0]) * 255)}): unreadable or blank")
        for t, v in s["labels"].items():
            if v.shape[:2] != (h, w):
                bad.append(f"{t} has shape {v.shape[:2]}, expected {(h, w)}")
        if "semseg" in s["labels"]:
            seg = s["labels"]["semseg"]
            valid = seg != 255
            if valid.any() and seg[valid].max() >= ds.num_classes:
                bad.append(f"semseg class id {int(seg[valid].max())} >= {ds.num_classes}")
            else:
                hist += np.bincount(seg[valid].ravel(), minlength=ds.num_classes)[: ds.num_classes]
        if "depth" in s["labels"]:
            d = s["labels"]["depth"]
            if not np.isfinite(d).all() or (d < 0).any():
                bad.append("depth has NaN/Inf or negative values")
            elif (d > 0).any():
                dmin, dmax = min(dmin, float(d[d > 0].min())), max(dmax, float(d.max()))
            else:
                bad.append("depth has no valid pixel")
        if "normals" in s["labels"]:
            nrm = np.linalg.norm(s["labels"]["normals"], axis=-1)
            if ((nrm > 0) & (np.abs(nrm - 1) > 0.05)).mean() > 0.01:
                bad.append("normals are not unit vectors")
        if "edges" in s["labels"]:
            e = s["labels"]["edges"]
            if not np.isin(e, (0, 1, 255)).all():
                bad.append("edges hold values other than 0/1/255")
        if bad:
            files = ", ".join(str(p) for p in ds.files_of(rec)) or str(rec)
            problems.append(f"{rec} ({files}): " + "; ".join(bad))
        else:
            n_ok += 1
    summary = {
        "dataset": ds.name, "root": str(ds.root), "split": ds.split, "samples": len(ds), "ok": n_ok,
        "bad": len(ds) - n_ok, "size": list(ds.size), "tasks": list(ds.tasks),
        "depth_range_m": [dmin, dmax] if np.isfinite(dmin) else None,
        "class_pixels": {ds.class_names[c] if c < len(ds.class_names) else str(c): int(v) for c, v in enumerate(hist)},
    }
    expected = getattr(ds, "official_split_sizes", {}).get(ds.split)
    if expected is not None and not (ds.root / "dataset.json").is_file() and len(ds) != expected:
        problems.append(f"{ds.root}/gt_sets/{ds.split}.txt lists {len(ds)} samples; the official split has {expected}")
    return summary, problems


def split_overlaps(datasets: dict) -> dict[str, list[str]]:
    """Problems of ids shared between splits (``{split: [line]}``, on the later split of each
    pair; the ``all`` split is skipped): a val list identical to, or overlapping, the train list."""
    out: dict[str, list[str]] = {}
    for a, b in combinations([s for s in datasets if s != "all"], 2):
        ra, rb = set(map(str, datasets[a].records)), set(map(str, datasets[b].records))
        shared = ra & rb
        if not shared:
            continue
        src_a, src_b = (datasets[s].split_file(s) or f"split '{s}' of {datasets[s].root}" for s in (a, b))
        what = "is identical to" if ra == rb else f"shares {len(shared)} of its {len(rb)} ids with"
        out.setdefault(b, []).append(f"{src_b} {what} {src_a} (e.g. {', '.join(sorted(shared)[:3])}): "
                                     f"'{b}' would measure images the model trains on")
    return out
