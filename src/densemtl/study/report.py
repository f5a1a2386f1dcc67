"""The study's report: markdown tables from the CSV (and the curves), its figures, and its
section of docs/results.md (between ``<!-- study:NAME begin -->`` and ``<!-- study:NAME end -->``;
the rest of the file is kept)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from ..engine.checkpoint import atomic_path
from ..tasks import get_task, parse_task_set
from .analysis import (curve_deltas, groups, levelled, paired_differences, partial_deltas, study_rows,
                       task_set_label)
from .results import read_curve, read_rows, row_key, unique_rows
from .spec import StudySpec


def _num(v: float, digits: int) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _ms(e, digits: int) -> str:
    if e is None or e.n == 0:
        return "–"
    return _num(e.mean, digits) + ("" if e.n < 2 else f" ± {_num(e.std, digits)}")


def _ci(e, digits: int, signed: bool = False) -> str:
    if e is None or e.n < 2:
        return "–"
    f = (lambda v: f"{v:+.{digits}f}") if signed else (lambda v: _num(v, digits))
    return f"[{f(e.low)}, {f(e.high)}]"


def load(spec: StudySpec) -> tuple[list[dict], dict]:
    """The study's rows (deduplicated) and their curves (by row key)."""
    rows = study_rows(spec, unique_rows(read_rows(spec.csv)))
    curves = {}
    for r in rows:
        c = read_curve(spec.curves_dir, r)
        if c is not None:
            curves[row_key(r)] = c
    return rows, curves


def build_report(spec: StudySpec, rows: list[dict], curves: dict, figures: list[Path] | None = None,
                 relative_to: Path | None = None) -> str:
    """The markdown section of the study."""
    gs = groups(spec, rows)
    deltas = curve_deltas(spec, rows, curves)
    planned = len(spec.plan())
    r0 = spec.run
    bs, it = spec.batch_size(), spec.iterations()
    h, w = spec.data["size"]
    backbone = r0.get("model", {}).get("backbone", "resnet101")
    p = spec.pretrain
    lines = [f"## Study `{spec.name}`", "",
             f"Budget: {it} iterations x batch {bs} = **{it * bs} images seen** per run; {backbone}, {w}x{h}; "
             f"procedural data: generator seed {spec.data['generator_seed']}, {spec.data['num_images']} scenes "
             f"({spec.data['val_fraction']:.0%} val). Settings: {', '.join(spec.settings)}"
             + (f" (pretrained: the encoder of a {p['model']} {task_set_label(p['tasks'])} model trained on {p['num_images']} "
                f"other scenes, generator seed {p['generator_seed']}, copied into every run)" if "pretrained" in spec.settings else "")
             + f". Seeds: {', '.join(map(str, spec.seeds))} (the seed fixes initialisation and data order: methods are "
             f"paired by seed).", "",
             f"Rows: {len(rows)} of {planned} planned runs finished (raw: `{spec.csv}`). Mean ± standard deviation over "
             f"seeds; intervals: two-sided 95 % Student t over seeds. Δ: mean relative change of the headline metrics against "
             f"the {spec.methods[spec.reference]['label']} rows of the same seed (docs/metrics.md). Levelled off: the "
             f"seed-mean Δ curve moves less over the last fifth of training than the seed standard deviation of the final Δ"
             + (f"; the learning rate steps at {spec.last_rate_step()} images: where that falls inside the last fifth's "
                f"window, the window holds the step's jump too, and the move from the first evaluation after the step "
                f"to the end is shown beside it" if spec.last_rate_step() else "") + ".",
             ""]
    for setting in spec.settings:
        for ts in spec.task_sets:
            table = main_table(spec, gs, deltas, setting, ts)
            if table:
                lines += [f"### {task_set_label(ts)}, {setting}", "", *table, ""]
    pairs = paired_table(spec, paired_differences(spec, rows, gs))
    if pairs:
        lines += ["### Paired differences (same seed)", "", *pairs, ""]
    partial = partial_deltas(spec, rows)
    if partial:
        lines += ["### Partial Δ of the larger task set's models on the smaller set's tasks", "",
                  "| setting | method | tasks of Δ | trained on the subset | trained on the superset | superset − subset (paired) | 95 % CI |",
                  "|---|---|---|---|---|---|---|"]
        for q in partial:
            lines.append(f"| {q.setting} | {spec.methods[q.method]['label']} | {task_set_label(q.subset)} | {_ms(q.sub, 2)} "
                         f"({task_set_label(q.subset)}) | {_ms(q.sup, 2)} ({task_set_label(q.superset)}) | {_ms(q.diff, 2)} | "
                         f"{_ci(q.diff, 2, signed=True)} |")
        lines.append("")
    lines += _costs(spec, rows)
    lines += _all_metrics(gs)
    if figures:
        base = relative_to or Path(".")
        lines += ["### Learning curves", ""]
        for f in figures:
            rel = os.path.relpath(f, base)
            lines.append(f"![{Path(f).stem}]({rel})")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main_table(spec: StudySpec, gs, deltas, setting: str, ts: str) -> list[str]:
    """Markdown lines of one (setting, task set) table: headline metrics, Delta, its interval, levelling."""
    sel = [g for g in gs if g.setting == setting and g.tasks == ts]
    if not sel:
        return []
    tasks = parse_task_set(ts)
    levs = {}
    for g in sel:
        spread = _reference_spread(g, tasks) if g.method == spec.reference else (g.delta.std if g.delta is not None else None)
        levs[g.method] = levelled(deltas.get((setting, ts, g.method), {}), spread, spec.last_rate_step())
    # the rate step inside the last fifth: its jump is part of that window's move, so the move
    # after the step is shown beside it (the levelled-off verdict stays the last-fifth one)
    step_col = any(math.isfinite(lev["after_step"]) for lev in levs.values())
    head = ["method", "seeds"] + [f"{get_task(t).name} {get_task(t).column} {'↑' if get_task(t).higher_is_better else '↓'}"
                                  for t in tasks] + ["Δ % ↑", "Δ 95 % CI", "last-fifth move / spread", "levelled off"]
    head += ["move after the rate step"] if step_col else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in sel:
        ref = g.method == spec.reference
        cells = [g.label, str(len({r["seed"] for r in g.rows}))]
        cells += [_ms(g.metrics.get(f"{t}/{get_task(t).headline_metric}"), get_task(t).digits) for t in tasks]
        cells += ["0 (ref.)" if ref else _ms(g.delta, 2), "–" if ref else _ci(g.delta, 2, signed=True)]
        lev = levs[g.method]
        cells.append(f"{_num(lev['movement'], 2)} / {_num(lev['spread'], 2)}")
        cells.append({True: "yes", False: "**no**", None: "–"}[lev["levelled"]])
        cells += [_num(lev["after_step"], 2)] if step_col else []
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def paired_table(spec: StudySpec, pairs) -> list[str]:
    if not pairs:
        return []
    lines = ["| setting | tasks | difference | quantity | seeds | mean | 95 % CI |", "|---|---|---|---|---|---|---|"]
    for q in pairs:
        digits = 2 if q.quantity == "Delta" else get_task(q.quantity.split("/")[0]).digits
        name = "Δ %" if q.quantity == "Delta" else q.quantity
        lines.append(f"| {q.setting} | {task_set_label(q.tasks)} | {spec.methods[q.a]['label']} − {spec.methods[q.b]['label']} "
                     f"| {name} | {q.est.n} | {_num(q.est.mean, digits) if q.est.n else '–'} | {_ci(q.est, digits, signed=True)} |")
    return lines


def _reference_spread(g, tasks) -> float | None:
    """Seed spread of the reference's own curve end point: the std of its per-seed Delta against
    the seed-mean reference metrics (its Δ against itself is 0 by definition)."""
    import numpy as np

    from .analysis import delta, estimate, headline

    seeds = sorted({r["seed"] for r in g.rows})
    per = {s: {parse_task_set(r["tasks"])[0]: headline(r, parse_task_set(r["tasks"])[0]) for r in g.rows if r["seed"] == s}
           for s in seeds}
    per = {s: m for s, m in per.items() if all(t in m for t in tasks)}
    if len(per) < 2:
        return None
    mean = {t: float(np.mean([m[t] for m in per.values()])) for t in tasks}
    return estimate([delta(m, mean, tasks) for m in per.values()]).std


def _costs(spec: StudySpec, rows: list[dict]) -> list[str]:
    if not rows:
        return []
    import statistics

    by: dict[tuple, list[dict]] = {}
    for r in rows:
        by.setdefault((spec.methods[r["method"]]["label"], task_set_label(r["tasks"])), []).append(r)
    lines = ["### Cost", "", "| method | tasks | runs | median s / step | threads | mean h / run (incl. evaluation) |",
             "|---|---|---|---|---|---|"]
    for (label, ts), rs in by.items():
        lines.append(f"| {label} | {ts} | {len(rs)} | {statistics.median(r['sec_per_iter'] for r in rs):.3f} | "
                     f"{'/'.join(sorted({str(r['threads']) for r in rs}))} | "
                     f"{statistics.mean(r['train_seconds'] for r in rs) / 3600:.2f} |")
    total = sum(r["train_seconds"] for r in rows) / 3600
    lines += ["", f"Total recorded training time: {total:.1f} h (machines: {', '.join(sorted({r['host'] for r in rows}))}).", ""]
    return lines


def _all_metrics(gs) -> list[str]:
    if not gs:
        return []
    lines = ["<details><summary>Every metric (mean ± std [95 % CI])</summary>", "",
             "| setting | tasks | method | seeds | metric | value | 95 % CI |", "|---|---|---|---|---|---|---|"]
    for g in gs:
        for k, e in g.metrics.items():
            digits = 4 if e.n and abs(e.mean) < 1 else 3
            lines.append(f"| {g.setting} | {task_set_label(g.tasks)} | {g.label} | {e.n} | {k} | {_ms(e, digits)} | {_ci(e, digits)} |")
    lines += ["", "</details>", ""]
    return lines


def write_section(path: str | Path, name: str, body: str) -> Path:
    """Replace (or append) the study's section of ``path``, atomically."""
    path = Path(path)
    begin, end = f"<!-- study:{name} begin -->", f"<!-- study:{name} end -->"
    text = path.read_text() if path.is_file() else "# Results\n\nGenerated by `densemtl study CONFIG --report`; one section per study.\n"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text and text.index(begin) < text.index(end):
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    elif begin in text or end in text:
        raise ValueError(f"{path}: the markers of study {name!r} are incomplete or out of order; fix them by hand")
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return path


def report(spec: StudySpec, results_md: str | Path | None = "docs/results.md", log=print) -> str:
    """Figures and markdown of the study; writes its section of ``results_md`` (unless None)."""
    from .plots import study_figures

    rows, curves = load(spec)
    if not rows:
        raise ValueError(f"{spec.csv}: no finished runs of study {spec.name!r} yet (run `densemtl study CONFIG` first)")
    figures = study_figures(spec, rows, curves, curve_deltas(spec, rows, curves), spec.plots_dir)
    base = Path(results_md).parent if results_md else Path(".")
    body = build_report(spec, rows, curves, figures, relative_to=base)
    if results_md:
        write_section(results_md, spec.name, body)
        log(f"[study] wrote the {spec.name} section of {results_md} and {len(figures)} figure(s) in {spec.plots_dir}")
    return body
