"""Learning-curve figures of a study (PNG, matplotlib without a display): Delta against images
seen with one line per method (mean over seeds, shaded from the lowest to the highest seed),
each task's headline metric, and the mTEB's mean |alpha| over training."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..tasks import get_task, parse_task_set
from .analysis import task_set_label


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _band(per_seed: dict[int, tuple[list, list]]):
    """(x, mean, low, high) over the evaluation points every seed has."""
    curves = [dict(zip(xs, ys)) for xs, ys in per_seed.values() if xs]
    if not curves:
        return None
    xs = sorted(set.intersection(*(set(c) for c in curves)))
    if not xs:
        return None
    a = np.array([[c[x] for x in xs] for c in curves])
    return np.array(xs), a.mean(0), a.min(0), a.max(0)


def plot_curves(series: dict[str, dict[int, tuple[list, list]]], path: Path, title: str, ylabel: str) -> Path | None:
    """``series``: ``label -> {seed: (images, values)}``; one line per label with its seed band."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    drawn = 0
    for label, per_seed in series.items():
        b = _band(per_seed)
        if b is None:
            continue
        x, mean, lo, hi = b
        line, = ax.plot(x, mean, label=f"{label} ({len(per_seed)} seed{'s' if len(per_seed) > 1 else ''})", lw=1.6)
        if len(per_seed) > 1:
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.18, lw=0)
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("images seen")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_metrics(curves_by_label: dict[str, list[dict]], tasks: str, path: Path, title: str) -> Path | None:
    """One panel per task: its headline metric over images seen, one line per method (seed
    mean, band = lowest..highest seed). ``curves_by_label``: label -> curves (one per seed
    and, for single-task methods, per task)."""
    plt = _pyplot()
    names = parse_task_set(tasks)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), dpi=110, squeeze=False)
    drawn = 0
    for ax, t in zip(axes[0], names):
        task = get_task(t)
        key = f"{t}/{task.headline_metric}"
        for label, curves in curves_by_label.items():
            per_seed = {}
            for i, c in enumerate(curves):
                pts = [(e["images"], e[key]) for e in c["evals"] if key in e]
                if pts:
                    per_seed[i] = tuple(map(list, zip(*pts)))
            b = _band(per_seed)
            if b is None:
                continue
            x, mean, lo, hi = b
            line, = ax.plot(x, mean, label=label, lw=1.4)
            if len(per_seed) > 1:
                ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.18, lw=0)
            drawn += 1
        ax.set_title(f"{task.name} {task.column} {'↑' if task.higher_is_better else '↓'}", fontsize=9)
        ax.set_xlabel("images seen")
        ax.grid(alpha=0.3)
    if not drawn:
        plt.close(fig)
        return None
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def alpha_series(curves: list[dict]) -> dict[int, tuple[list, list]]:
    """Seed -> (images, mean |alpha| over every cross-task gate) of DenseMTL curves."""
    out = {}
    for i, c in enumerate(curves):
        pts = [(e["images"], float(np.mean([v for k, v in e.items() if k.startswith("alpha/")])))
               for e in c["evals"] if any(k.startswith("alpha/") for k in e)]
        if pts:
            out[i] = tuple(map(list, zip(*pts)))
    return out


def study_figures(spec, rows, curves, deltas, out_dir: Path) -> list[Path]:
    """Every figure of the study: per (setting, task set) the Delta curves, the per-task metric
    curves and, when present, the alpha magnitudes. Returns the files written."""
    from .results import row_key

    written = []
    for setting in spec.settings:
        for ts in spec.task_sets:
            tasks = parse_task_set(ts)
            tag = f"{setting}_{ts}"
            series = {spec.methods[m]["label"]: deltas[(setting, ts, m)] for m in spec.methods if (setting, ts, m) in deltas}
            title = f"{spec.name}: {task_set_label(ts)}, {setting}"
            p = plot_curves(series, out_dir / f"{tag}_delta.png", title,
                            f"Δ {task_set_label(ts)} % vs final {spec.methods[spec.reference]['label']}")
            written += [p] if p else []
            by_label: dict[str, list[dict]] = {}
            for r in rows:
                if r["setting"] != setting:
                    continue
                single = spec.is_single_task(r["method"])
                if (single and parse_task_set(r["tasks"])[0] in tasks) or (not single and r["tasks"] == ts):
                    c = curves.get(row_key(r))
                    if c is not None:
                        by_label.setdefault(spec.methods[r["method"]]["label"], []).append(c)
            p = plot_metrics(by_label, ts, out_dir / f"{tag}_metrics.png", title)
            written += [p] if p else []
            alphas = {}
            for m in spec.methods:
                cs = [curves[row_key(r)] for r in rows if r["setting"] == setting and r["method"] == m and r["tasks"] == ts
                      and row_key(r) in curves]
                a = alpha_series(cs)
                if a:
                    alphas[spec.methods[m]["label"]] = a
            if alphas:
                p = plot_curves(alphas, out_dir / f"{tag}_alpha.png", title + ": cross-task gates", "mean |α|")
                written += [p] if p else []
    return written
