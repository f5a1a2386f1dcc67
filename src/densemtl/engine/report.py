"""Collect finished runs and lay them out as the paper's tables (mean +- std over seeds, Delta)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from ..metrics import multitask_delta
from ..models import count_parameters, create_model, model_options
from ..tasks import directions, get_protocol, get_task, parse_task_set
from .rundir import MetricsLog

METHOD_LABELS = {"stl": "STL", "mtl": "MTL", "padnet": "PAD-Net", "padnet3ways": "3-ways PAD-Net", "densemtl": "DenseMTL"}
LAYOUTS = ("auto", "tasks", "classes")


_SCALE_KEY = re.compile(r"^s(\d+)/([^/]+)/(.+)$")


def split_scales(record: dict) -> dict[int, dict[str, dict[str, float]]]:
    """An evaluation record's metrics by output scale: ``{scale: {task: {metric: value}}}``.
    ``task/metric`` keys are the evaluation scale's (``record["eval_scale"]``, 0 when absent),
    ``s<k>/task/metric`` keys scale ``k``'s."""
    eval_scale = int(record.get("eval_scale", 0))
    out: dict[int, dict[str, dict[str, float]]] = {}
    for k, v in record.items():
        m = _SCALE_KEY.match(k)
        if m:
            scale, t, name = int(m[1]), m[2], m[3]
        elif "/" in k:
            scale, (t, name) = eval_scale, k.split("/", 1)
        else:
            continue
        out.setdefault(scale, {}).setdefault(t, {})[name] = v
    return out


def load_run(run_dir: str | Path, which: str = "last", scale: int | None = None) -> dict:
    """Config and final (``last``) or best (``best``) evaluation metrics of a run directory, at
    output ``scale`` (default: the evaluation scale). A run without that scale gives its
    evaluation scale's metrics; ``"scale"`` in the result says which scale they are."""
    run_dir = Path(run_dir)
    cfg_path, log_path = run_dir / "config.yaml", run_dir / "metrics.jsonl"
    if not cfg_path.is_file() or not log_path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a densemtl run directory (config.yaml and metrics.jsonl expected)")
    cfg = OmegaConf.to_container(OmegaConf.load(cfg_path), resolve=True)
    evals = [r for r in MetricsLog(log_path).read() if r.get("type") == "eval"]
    if not evals:
        raise ValueError(f"{run_dir}: no evaluation recorded yet")
    rec = max(evals, key=lambda r: r["score"]) if which == "best" else evals[-1]
    by_scale = split_scales(rec)
    eval_scale = int(rec.get("eval_scale", 0))
    used = scale if scale is not None and scale in by_scale else eval_scale
    env_path = run_dir / "env.json"
    class_names = (json.loads(env_path.read_text()).get("dataset") or {}).get("class_names") if env_path.is_file() else None
    # the evaluation record names its protocol; runs from before the switch were standard
    protocol = rec.get("protocol") or cfg.get("protocol") or "standard"
    return {"dir": str(run_dir), "config": cfg, "metrics": by_scale.get(used, {}), "iter": rec["iter"],
            "class_names": class_names, "scale": used, "scales": sorted(by_scale), "protocol": protocol}


def common_protocol(runs: list[dict]) -> str:
    """The protocol all ``runs`` were evaluated with; a ``ValueError`` names two runs that differ."""
    first = runs[0]
    for r in runs[1:]:
        if r.get("protocol", "standard") != first.get("protocol", "standard"):
            raise ValueError(f"runs evaluated with different protocols cannot share a table: {first['dir']} "
                             f"({first.get('protocol', 'standard')}) and {r['dir']} ({r.get('protocol', 'standard')}); "
                             f"see docs/fidelity.md")
    return first.get("protocol", "standard")


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


def method_label(cfg: dict, common: dict | None = None) -> str:
    """``DenseMTL [fusion=concat]``: the method and its non-default options, less those in
    ``common`` (options every row of a table shares, said once below it)."""
    _, name, opts, _, _ = method_key(cfg)
    label = METHOD_LABELS.get(name, name)
    o = {k: v for k, v in json.loads(opts).items() if k not in (common or {})}
    return label + (" [" + ", ".join(f"{k}={v}" for k, v in o.items()) + "]" if o else "")


def common_options(cfgs: list[dict]) -> dict:
    """Non-default model options with one value in every run that has the option (e.g. the
    paper presets' ``input_norm=authors``)."""
    values: dict[str, set] = {}
    shown: set[str] = set()
    for cfg in cfgs:
        m = cfg["model"]
        given = m.get("options") or {}
        for k, d in model_options(m["name"]).items():
            values.setdefault(k, set()).add(json.dumps(given.get(k, _plain(d)), sort_keys=True))
            if k in given and given[k] != _plain(d):
                shown.add(k)
    return {k: json.loads(next(iter(values[k]))) for k in sorted(shown) if len(values[k]) == 1}


def recipe_key(cfg: dict) -> tuple:
    """The optimiser recipe that tells apart runs of one method (e.g. the released Cityscapes
    learning rates vs the paper's): ``(optimiser, lr_backbone, lr_decoder)``."""
    o = cfg.get("optim") or {}
    return (o.get("name"), o.get("lr_backbone"), o.get("lr_decoder"))


def exchange_parameters(cfg: dict) -> int | None:
    """Parameters of the model's cross-task exchange blocks (the paper's Table 3 'Param.'),
    counted on a weightless (meta) copy of the model; ``None`` for a model without them."""
    m, tasks = cfg["model"], parse_task_set(cfg["tasks"])
    try:
        with torch.device("meta"):
            model = create_model(m["name"], tasks, num_classes=2 if "semseg" in tasks else None, backbone=m["backbone"],
                                 pretrained=False, **(m.get("options") or {}))
    except (ValueError, KeyError, TypeError):  # a model of another densemtl version: no column value
        return None
    block = model.exchange_modules()
    return None if block is None else count_parameters(block)


def partial_tasks(tasks) -> tuple[str, ...] | None:
    """The task subset of a row's partial Delta (the paper's Tables 1-2): every task but the
    last added one, for three tasks or more (S-D-N -> S-D: Delta_SD(f_SDN); S-D-N-E -> S-D-N)."""
    tasks = parse_task_set(list(tasks))
    return tasks[:-1] if len(tasks) >= 3 else None


def _mean_std(values):
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def build_table(runs: list[dict], scale: int = 0) -> dict:
    """Group runs and compute per-task mean/std and Delta vs the matching single-task runs.

    Returns ``{"tasks": [...], "protocol": name, "rows": [{"method", "tasks", "n", "metrics":
    {task: (mean, std)}, "delta": (mean, std) | None, "partial": (tasks, (mean, std)) | None,
    "param": int | None}], "partials": [task subsets], "param": bool, "scale": scale}``; Delta is
    computed per seed against the mean STL metrics, the partial Delta (rows of three tasks or
    more, :func:`partial_tasks`) likewise on the subset. ``param`` (the exchange-block size,
    :func:`exchange_parameters`) is filled when rows of one method and task set differ in it (the
    mTEB placements of Table 3). ``scale``: the output scale the runs were loaded at
    (``load_run``); a row whose runs lack it shows their evaluation scale and says so in its
    label. All runs must share one protocol (:func:`common_protocol`).
    """
    protocol = common_protocol(runs)
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        key = method_key(r["config"]) + (recipe_key(r["config"]), tuple(parse_task_set(r["config"]["tasks"])))
        groups.setdefault(key, []).append(r)
    common = common_options([r["config"] for r in runs]) if len(groups) > 1 else {}
    # runs of one method that differ in the optimiser recipe get it in their label
    recipes: dict[tuple, set] = {}
    for key in groups:
        recipes.setdefault(key[:5] + key[6:], set()).add(key[5])
    # Param.: when rows of one (domain, model, setting, tasks) differ in their exchange blocks
    params: dict[tuple, int | None] = {}
    variants: dict[tuple, list[tuple]] = {}
    for key in groups:
        variants.setdefault((key[0], key[1], key[4], key[-1]), []).append(key)
    for keys in variants.values():
        if len(keys) > 1:
            counts = {k: exchange_parameters(groups[k][0]["config"]) for k in keys}
            if len({c for c in counts.values() if c is not None}) > 1:
                params.update(counts)
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
    for key, rs in sorted(groups.items(), key=lambda kv: _row_order(kv[0])):
        tasks = key[-1]
        metrics = {t: _mean_std([r["metrics"][t][get_task(t).headline_metric] for r in rs]) for t in tasks}
        classes = {}
        if "semseg" in tasks and rs[0].get("class_names"):
            for c, name in enumerate(rs[0]["class_names"]):
                vals = [r["metrics"]["semseg"].get(f"IoU_{c}") for r in rs]
                if all(v is not None for v in vals):
                    classes[name] = _mean_std(vals)
        delta = partial = None
        base = stl.get((key[0], key[3], "UDA" if key[4] else ""), {})
        if key[1] != "stl" and all(t in base for t in tasks):
            delta = _seed_delta(rs, tasks, base)
            sub = partial_tasks(tasks)
            partial = (sub, _seed_delta(rs, sub, base)) if sub else None
        label = method_label(rs[0]["config"], common) + ("" if key[3] == "resnet101" else f" ({key[3]})")
        if len(recipes[key[:5] + key[6:]]) > 1:
            label += f" [{key[5][0]}, lr {key[5][1]:g}/{key[5][2]:g}]"
        if {r["scale"] for r in rs if "scale" in r} - {scale}:
            label += f" (scale {rs[0]['scale']})"
        rows.append({"dataset": key[0], "setting": key[4], "method": label, "backbone": key[3], "tasks": list(tasks),
                     "n": len(rs), "metrics": metrics, "classes": classes,
                     "delta": delta, "partial": partial, "param": params.get(key), "scale": rs[0].get("scale", 0),
                     "runs": [r["dir"] for r in rs],
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
    partials = sorted({r["partial"][0] for r in merged if r.get("partial")}, key=lambda ts: (len(ts), ts))
    return {"tasks": list(all_tasks), "protocol": protocol, "rows": merged, "partials": partials, "param": bool(params),
            "scale": scale, "common": common}


def _row_order(key: tuple) -> tuple:
    """Rows by domain, STL first, setting, task set, method, options, recipe."""
    return (key[0], key[1] != "stl", key[4], key[-1], key[1], key[2], str(key[5]))


def _seed_delta(rs: list[dict], tasks, base: dict) -> tuple[float, float]:
    """Delta over ``tasks`` of each run (seed) against the STL means ``base``: (mean, std)."""
    return _mean_std([multitask_delta({t: r["metrics"][t][get_task(t).headline_metric] for t in tasks}, base,
                                      directions(tasks), tasks=list(tasks)) for r in rs])


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


def _protocol_line(table: dict) -> str:
    p = get_protocol(table.get("protocol", "standard"))
    return f"Protocol: {p.name} ({p.description})\n"


def to_markdown(table: dict, layout: str = "auto") -> str:
    if resolve_layout(table, layout) == "classes":
        return _protocol_line(table) + _classes_markdown(table)
    tasks = table["tasks"]
    code = "".join(get_task(t).letter for t in tasks)
    uda = any(r.get("setting") for r in table["rows"])
    partials = table.get("partials") or []
    param = table.get("param")
    head = ["dataset"] + (["setting"] if uda else []) + ["method", "tasks", "seeds"] + (["Param. M ↓"] if param else [])
    head += [_header(t) for t in tasks] + ["Δ % ↑"] + [f"Δ_{_code(sub)} % ↑" for sub in partials]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table["rows"]:
        cells = [r["dataset"]] + ([r.get("setting") or "supervised"] if uda else [])
        cells += [r["method"], "-".join(get_task(t).letter for t in r["tasks"]), str(r["n"])]
        if param:
            cells.append("-" if r.get("param") is None else f"{r['param'] / 1e6:.2f}")
        cells += [_fmt(r["metrics"].get(t), _digits(t)) for t in tasks]
        cells.append(_fmt_delta(r["delta"]))
        p = r.get("partial")
        cells += [_fmt_delta(p[1]) if p and p[0] == sub else "-" for sub in partials]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\nΔ: mean relative change of each row's task metrics vs the STL row ({code} columns), in %"
                 + ("; for domain adaptation (source→target) vs STL-UDA, as in the paper's Table 6." if uda else "."))
    for sub in partials:
        full = next(_code(r["tasks"]) for r in table["rows"] if r.get("partial") and r["partial"][0] == sub)
        lines.append(f"Δ_{_code(sub)}: Δ on the {'-'.join(get_task(t).letter for t in sub)} columns only, for the rows of "
                     f"one more task (the paper's partial Δ_{_code(sub)}(f_{full}), Tables 1-2).")
    if table.get("common"):
        lines.append("Every row: " + ", ".join(f"{k}={v}" for k, v in table["common"].items()) + ".")
    if param:
        lines.append("Param.: parameters of the cross-task exchange blocks (mTEB) in millions (the paper's Table 3).")
    if table.get("scale"):
        lines.append(f"Metrics of output scale {table['scale']}; a row marked (scale k) has no such output and shows scale k.")
    return _protocol_line(table) + "\n".join(lines)


def _code(tasks) -> str:
    return "".join(get_task(t).letter for t in tasks)


def _fmt_delta(ms) -> str:
    if ms is None:
        return "-"
    return f"{ms[0]:+.2f}" + (f" ± {ms[1]:.2f}" if ms[1] else "")


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
    partials = table.get("partials") or []
    w.writerow(["protocol", "dataset", "setting", "method", "tasks", "seeds"]
               + [f"{t}_{get_task(t).headline_metric}_{s}" for t in tasks for s in ("mean", "std")]
               + ["delta_mean", "delta_std"] + [f"semseg_IoU_{n}_mean" for n in names]
               + [f"delta_{_code(sub)}_{s}" for sub in partials for s in ("mean", "std")]
               + (["exchange_params"] if table.get("param") else []) + ["scale"])
    for r in table["rows"]:
        row = [table.get("protocol", "standard"), r["dataset"], r.get("setting") or "supervised", r["method"], "-".join(get_task(t).letter for t in r["tasks"]), r["n"]]
        for t in tasks:
            row += list(r["metrics"].get(t, ("", "")))
        row += list(r["delta"]) if r["delta"] else ["", ""]
        row += [r.get("classes", {}).get(n, ("",))[0] for n in names]
        p = r.get("partial")
        for sub in partials:
            row += list(p[1]) if p and p[0] == sub else ["", ""]
        if table.get("param"):
            row.append("" if r.get("param") is None else r["param"])
        row.append(r.get("scale", 0))
        w.writerow(row)
    return buf.getvalue()
