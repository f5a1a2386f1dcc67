"""Collect finished runs and lay them out as the paper's tables (mean +- std over seeds, Delta)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from ..metrics import multitask_delta
from ..models import model_options
from ..tasks import directions, get_task, parse_task_set
from .rundir import MetricsLog

METHOD_LABELS = {"stl": "STL", "mtl": "MTL", "padnet": "PAD-Net", "padnet3ways": "3-ways PAD-Net", "densemtl": "DenseMTL"}
LAYOUTS = ("auto", "tasks", "classes")


def load_run(run_dir: str | Path, which: str = "last") -> dict:
    """Config and final (``last``) or best (``best``) evaluation metrics of a run directory."""
    run_dir = Path(run_dir)
    cfg_path, log_path = run_dir / "config.yaml", run_dir / "metrics.jsonl"
    if not cfg_path.is_file() or not log_path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a densemtl run directory (config.yaml and metrics.jsonl expected)")
    cfg = OmegaConf.to_container(OmegaConf.load(cfg_path), resolve=True)
    evals = [r for r in MetricsLog(log_path).read() if r.get("type") == "eval"]
    if not evals:
        raise ValueError(f"{run_dir}: no evaluation recorded yet")
    rec = max(evals, key=lambda r: r["score"]) if which == "best" else evals[-1]
    metrics: dict[str, dict[str, float]] = {}
    for k, v in rec.items():
        if "/" in k:
            t, m = k.split("/", 1)
            metrics.setdefault(t, {})[m] = v
    env_path = run_dir / "env.json"
    class_names = (json.loads(env_path.read_text()).get("dataset") or {}).get("class_names") if env_path.is_file() else None
    return {"dir": str(run_dir), "config": cfg, "metrics": metrics, "iter": rec["iter"], "class_names": class_names}


def domain_setting(cfg: dict) -> tuple[str, str]:
    """``(domain, setting)``: ``("synthia→cityscapes", "UDA" | "source-only")`` for domain
    adaptation runs, ``(dataset, "")`` for supervised ones. Runs evaluated with median-scaled
    depth (``eval.depth_median_scaling``, Table 6) are another protocol: their domain says so,
    so that they are never compared with (or Delta-referenced to) unscaled runs."""
    domain, setting = _domain_setting(cfg)
    if (cfg.get("eval") or {}).get("depth_median_scaling"):
        domain += " [depth median-scaled]"
    return domain, setting


def _domain_setting(cfg: dict) -> tuple[str, str]:
    target = ((cfg.get("uda") or {}).get("target") or {}).get("dataset")
    label_set = ((cfg["data"].get("options") or {}).get("label_set"))
    if not target:  # a non-default label set is another benchmark (e.g. Cityscapes' 8 UDA classes)
        return cfg["data"]["dataset"] + (f" [{label_set}]" if label_set else ""), ""
    setting = "UDA" if cfg["uda"].get("adversarial") else "source-only"
    if target == cfg["data"]["dataset"]:  # e.g. two procedural styles: name the folders
        src_root, tgt_root = (Path(str(r or "")).name for r in (cfg["data"].get("root"), cfg["uda"]["target"].get("root")))
        return f"{target} ({src_root}→{tgt_root})", setting
    return f"{cfg['data']['dataset']}→{target}", setting


def method_key(cfg: dict) -> tuple:
    """Runs that differ only by seed / run name / output place share this key:
    ``(domain, model, options, backbone, setting)``."""
    m = cfg["model"]
    defaults = model_options(m["name"])
    opts = {k: v for k, v in (m.get("options") or {}).items() if k in defaults and v != _plain(defaults[k])}
    domain, setting = domain_setting(cfg)
    return (domain, m["name"], json.dumps(opts, sort_keys=True), m.get("backbone"), setting)


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def method_label(cfg: dict) -> str:
    _, name, opts, _, _ = method_key(cfg)
    label = METHOD_LABELS.get(name, name)
    o = json.loads(opts)
    return label + (" [" + ", ".join(f"{k}={v}" for k, v in o.items()) + "]" if o else "")


def _mean_std(values):
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def build_table(runs: list[dict]) -> dict:
    """Group runs and compute per-task mean/std and Delta vs the matching single-task runs.

    Returns ``{"tasks": [...], "rows": [{"method", "tasks", "n", "metrics": {task: (mean, std)},
    "delta": (mean, std) | None}]}``; Delta is computed per seed against the mean STL metrics.
    """
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        key = method_key(r["config"]) + (tuple(parse_task_set(r["config"]["tasks"])),)
        groups.setdefault(key, []).append(r)
    all_tasks = parse_task_set({t for k in groups for t in k[-1]})
    # Delta reference: the single-task runs of the same domain and backbone; for domain
    # adaptation, the adversarially adapted single-task runs (STL-UDA), as in the paper's Table 6
    stl: dict[tuple, dict[str, float]] = {}  # (domain, backbone, setting) -> task -> mean metric
    for key, rs in groups.items():
        if key[1] == "stl":
            t = key[-1][0]
            head = get_task(t).headline_metric
            stl.setdefault((key[0], key[3], key[4]), {})[t] = float(np.mean([r["metrics"][t][head] for r in rs]))
    rows = []
    for key, rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "stl", kv[0][4], kv[0][-1], kv[0][1])):
        tasks = key[-1]
        metrics = {t: _mean_std([r["metrics"][t][get_task(t).headline_metric] for r in rs]) for t in tasks}
        classes = {}
        if "semseg" in tasks and rs[0].get("class_names"):
            for c, name in enumerate(rs[0]["class_names"]):
                vals = [r["metrics"]["semseg"].get(f"IoU_{c}") for r in rs]
                if all(v is not None for v in vals):
                    classes[name] = _mean_std(vals)
        delta = None
        base = stl.get((key[0], key[3], "UDA" if key[4] else ""), {})
        if key[1] != "stl" and all(t in base for t in tasks):
            deltas = [multitask_delta({t: r["metrics"][t][get_task(t).headline_metric] for t in tasks}, base, directions(tasks))
                      for r in rs]
            delta = _mean_std(deltas)
        label = method_label(rs[0]["config"]) + ("" if key[3] == "resnet101" else f" ({key[3]})")
        rows.append({"dataset": key[0], "setting": key[4], "method": label, "backbone": key[3], "tasks": list(tasks),
                     "n": len(rs), "metrics": metrics, "classes": classes,
                     "delta": delta, "runs": [r["dir"] for r in rs],
                     "selfsup": all((r["config"].get("selfsup") or {}).get("enabled") for r in rs)})
    # one STL row per dataset combining the single-task networks
    merged = []
    for r in rows:
        if (r["method"].startswith("STL") and merged and merged[-1]["method"] == r["method"]
                and merged[-1]["dataset"] == r["dataset"] and merged[-1]["backbone"] == r["backbone"]
                and merged[-1]["setting"] == r["setting"]):
            merged[-1]["metrics"].update(r["metrics"])
            merged[-1]["classes"] = {**merged[-1].get("classes", {}), **r.get("classes", {})}
            merged[-1]["selfsup"] = merged[-1].get("selfsup") and r.get("selfsup")
            merged[-1]["tasks"] = list(parse_task_set(merged[-1]["tasks"] + r["tasks"]))
            merged[-1]["runs"] += r["runs"]
            merged[-1]["n"] = min(merged[-1]["n"], r["n"])
        else:
            merged.append(r)
    for r in merged:  # STL source-only vs STL-UDA (from the means; one STL run per task and seed)
        base = stl.get((r["dataset"], r["backbone"], "UDA"), {})
        if r["setting"] == "source-only" and r["method"].startswith("STL") and all(t in base for t in r["tasks"]):
            mean = {t: r["metrics"][t][0] for t in r["tasks"]}
            r["delta"] = (multitask_delta(mean, base, directions(r["tasks"])), 0.0)
    return {"tasks": list(all_tasks), "rows": merged}


def _fmt(ms, digits):
    if ms is None:
        return "-"
    m, s = ms
    return f"{m:.{digits}f} ± {s:.{digits}f}" if s else f"{m:.{digits}f}"


def _digits(t):
    return get_task(t).digits


def _header(t: str) -> str:
    task = get_task(t)
    return f"{task.name} {task.column} {'↑' if task.higher_is_better else '↓'}"


def resolve_layout(table: dict, layout: str = "auto") -> str:
    """``tasks``: one column per task; ``classes``: per-class IoU columns, then mIoU and the other
    tasks (the paper's Table 5). ``auto`` picks ``classes`` when every row is a self-supervised
    depth run (Table 5)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown table layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    if layout == "auto":
        return "classes" if table["rows"] and all(r.get("selfsup") for r in table["rows"]) else "tasks"
    return layout


def _class_columns(table: dict) -> list[str]:
    names: list[str] = []
    for r in table["rows"]:
        names += [n for n in r.get("classes", {}) if n not in names]
    if not names:
        raise ValueError("the 'classes' layout needs semantic segmentation runs with per-class IoU and class names (env.json)")
    return names


def to_markdown(table: dict, layout: str = "auto") -> str:
    if resolve_layout(table, layout) == "classes":
        return _classes_markdown(table)
    tasks = table["tasks"]
    code = "".join(get_task(t).letter for t in tasks)
    uda = any(r.get("setting") for r in table["rows"])
    head = ["dataset"] + (["setting"] if uda else []) + ["method", "tasks", "seeds"]
    head += [_header(t) for t in tasks] + ["Δ % ↑"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table["rows"]:
        cells = [r["dataset"]] + ([r.get("setting") or "supervised"] if uda else [])
        cells += [r["method"], "-".join(get_task(t).letter for t in r["tasks"]), str(r["n"])]
        cells += [_fmt(r["metrics"].get(t), _digits(t)) for t in tasks]
        cells.append("-" if r["delta"] is None else (f"{r['delta'][0]:+.2f}" + (f" ± {r['delta'][1]:.2f}" if r["delta"][1] else "")))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\nΔ: mean relative change of each row's task metrics vs the STL row ({code} columns), in %"
                 + ("; for domain adaptation (source→target) vs STL-UDA, as in the paper's Table 6." if uda else "."))
    return "\n".join(lines)


def _classes_markdown(table: dict) -> str:
    names = _class_columns(table)
    others = [t for t in table["tasks"] if t != "semseg"]
    head = ["dataset", "method", "tasks", "seeds"] + names + ["mIoU % ↑"]
    head += [_header(t) for t in others]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table["rows"]:
        cells = [r["dataset"], r["method"], "-".join(get_task(t).letter for t in r["tasks"]), str(r["n"])]
        cells += [f"{r['classes'][n][0]:.2f}" if n in r.get("classes", {}) else "-" for n in names]
        cells.append(_fmt(r["metrics"].get("semseg"), 2))
        cells += [_fmt(r["metrics"].get(t), _digits(t)) for t in others]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("\nPer-class IoU in % (mean over seeds); mIoU as mean ± std over seeds.")
    return "\n".join(lines)


def to_csv(table: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    tasks = table["tasks"]
    names: list[str] = []
    for r in table["rows"]:
        names += [n for n in r.get("classes", {}) if n not in names]
    w.writerow(["dataset", "setting", "method", "tasks", "seeds"] + [f"{t}_{get_task(t).headline_metric}_{s}" for t in tasks for s in ("mean", "std")]
               + ["delta_mean", "delta_std"] + [f"semseg_IoU_{n}_mean" for n in names])
    for r in table["rows"]:
        row = [r["dataset"], r.get("setting") or "supervised", r["method"], "-".join(get_task(t).letter for t in r["tasks"]), r["n"]]
        for t in tasks:
            row += list(r["metrics"].get(t, ("", "")))
        row += list(r["delta"]) if r["delta"] else ["", ""]
        row += [r.get("classes", {}).get(n, ("",))[0] for n in names]
        w.writerow(row)
    return buf.getvalue()
