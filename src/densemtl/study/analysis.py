"""Statistics of a study's rows: mean, standard deviation and 95 % t-interval of every metric
and of Delta against the single-task rows of the same seed; paired differences of methods;
the partial Delta over S-D of the S-D-N models against the S-D ones; and, from the learning
curves, whether each method has levelled off.

Everything is computed per ``(setting, task set, method)`` group on rows of one study (its
config hashes). Delta of a row uses the reference (single-task) rows of the same study hash,
setting and seed: ``Delta = 1/T sum_t (-1)^{g_t} (M_t - S_t) / S_t * 100`` over the row's
tasks' headline metrics (docs/metrics.md); a seed without all its reference rows has no Delta.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from ..metrics import multitask_delta
from ..tasks import directions, get_task, parse_task_set, task_set_name
from .spec import StudySpec

LEVEL = 0.95


@dataclass
class Estimate:
    """Mean, sample standard deviation (ddof 1) and half-width of the two-sided ``LEVEL``
    t-interval of ``n`` values (``std`` and ``half`` are nan for one value)."""

    n: int
    mean: float
    std: float
    half: float

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half


def estimate(values) -> Estimate:
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(a)
    if n == 0:
        return Estimate(0, math.nan, math.nan, math.nan)
    if n == 1:
        return Estimate(1, float(a[0]), math.nan, math.nan)
    std = float(a.std(ddof=1))
    return Estimate(n, float(a.mean()), std, float(stats.t.ppf(0.5 + LEVEL / 2, n - 1) * std / math.sqrt(n)))


def study_rows(spec: StudySpec, rows: list[dict]) -> list[dict]:
    """The rows that belong to ``spec`` as it is now (its config hashes, seeds, settings, task sets)."""
    wanted = {(spec.config_hash(r), r.seed, r.setting, r.method, r.tasks) for r in spec.plan()}
    return [r for r in rows if (r["config_hash"], r["seed"], r["setting"], r["method"], r["tasks"]) in wanted]


def headline(row: dict, task: str) -> float | None:
    return row.get(f"{task}/{get_task(task).headline_metric}")


def reference_metrics(spec: StudySpec, rows: list[dict]) -> dict[tuple, dict[str, float]]:
    """``(study_hash, setting, seed) -> {task: headline metric}`` of the reference rows."""
    ref: dict[tuple, dict[str, float]] = {}
    for r in rows:
        if r["method"] == spec.reference:
            t = parse_task_set(r["tasks"])[0]
            v = headline(r, t)
            if v is not None:
                ref.setdefault((r["study_hash"], r["setting"], r["seed"]), {})[t] = v
    return ref


def delta(metrics: dict[str, float], base: dict[str, float], tasks) -> float | None:
    """Delta over ``tasks`` (None when a metric or a reference is missing)."""
    tasks = list(tasks)
    if not all(t in metrics and metrics[t] is not None and t in base for t in tasks):
        return None
    return multitask_delta({t: metrics[t] for t in tasks}, {t: base[t] for t in tasks}, directions(tasks), tasks=tasks)


def row_delta(row: dict, ref: dict, tasks=None) -> float | None:
    tasks = list(parse_task_set(row["tasks"]) if tasks is None else tasks)
    base = ref.get((row["study_hash"], row["setting"], row["seed"]), {})
    return delta({t: headline(row, t) for t in tasks}, base, tasks)


@dataclass
class Group:
    setting: str
    tasks: str
    method: str
    label: str
    rows: list[dict]
    metrics: dict[str, Estimate] = field(default_factory=dict)
    delta: Estimate | None = None
    deltas: dict[int, float] = field(default_factory=dict)  # seed -> Delta


def groups(spec: StudySpec, rows: list[dict]) -> list[Group]:
    """One group per (setting, task set, method) in plan order; the reference method gives one
    group per task set too (its single-task rows of the set's tasks, merged per seed)."""
    ref = reference_metrics(spec, rows)
    out = []
    for setting in spec.settings:
        for ts in spec.task_sets:
            tasks = parse_task_set(ts)
            for m in spec.methods:
                if spec.is_single_task(m):
                    sel = [r for r in rows if r["setting"] == setting and r["method"] == m
                           and parse_task_set(r["tasks"])[0] in tasks]
                    if not sel:
                        continue
                    g = Group(setting, ts, m, spec.methods[m]["label"], sel)
                    names = sorted({k for r in sel for k in r if "/" in k}, key=_metric_order)
                    g.metrics = {k: estimate([r[k] for r in sel if k in r]) for k in names}
                    if m == spec.reference:
                        seeds = sorted({r["seed"] for r in sel})
                        sh = sel[0]["study_hash"]
                        g.deltas = {s: 0.0 for s in seeds if all(t in ref.get((sh, setting, s), {}) for t in tasks)}
                        g.delta = estimate(g.deltas.values())
                    out.append(g)
                    continue
                sel = [r for r in rows if r["setting"] == setting and r["method"] == m and r["tasks"] == ts]
                if not sel:
                    continue
                g = Group(setting, ts, m, spec.methods[m]["label"], sel)
                names = sorted({k for r in sel for k in r if "/" in k}, key=_metric_order)
                g.metrics = {k: estimate([r.get(k) for r in sel]) for k in names}
                g.deltas = {r["seed"]: d for r in sel if (d := row_delta(r, ref)) is not None}
                g.delta = estimate(g.deltas.values())
                out.append(g)
    return out


def _metric_order(key: str):
    task, metric = key.split("/", 1)
    return (list(parse_task_set("SDNE")).index(task) if task in parse_task_set("SDNE") else 9, metric)


@dataclass
class Paired:
    """Per-seed differences ``a - b`` of a quantity (Delta, or a metric) over the common seeds."""

    setting: str
    tasks: str
    a: str
    b: str
    quantity: str
    diffs: dict[int, float]
    est: Estimate


def paired_differences(spec: StudySpec, rows: list[dict], gs: list[Group] | None = None) -> list[Paired]:
    """For each ``compare`` pair and (setting, task set): the per-seed differences of Delta and
    of each task's headline metric, with their t-interval."""
    gs = groups(spec, rows) if gs is None else gs
    by = {(g.setting, g.tasks, g.method): g for g in gs}
    out = []
    for setting in spec.settings:
        for ts in spec.task_sets:
            for a, b in spec.compare:
                ga, gb = by.get((setting, ts, a)), by.get((setting, ts, b))
                if ga is None or gb is None:
                    continue
                seeds = sorted(set(ga.deltas) & set(gb.deltas))
                diffs = {s: ga.deltas[s] - gb.deltas[s] for s in seeds}
                out.append(Paired(setting, ts, a, b, "Delta", diffs, estimate(diffs.values())))
                ra, rb = {r["seed"]: r for r in ga.rows}, {r["seed"]: r for r in gb.rows}
                for t in parse_task_set(ts):
                    k = f"{t}/{get_task(t).headline_metric}"
                    common = sorted(s for s in set(ra) & set(rb) if k in ra[s] and k in rb[s])
                    d = {s: ra[s][k] - rb[s][k] for s in common}
                    out.append(Paired(setting, ts, a, b, k, d, estimate(d.values())))
    return out


@dataclass
class PartialDelta:
    """Delta over a task subset of the models trained on a larger set (``sdn``) against the
    models trained on the subset (``sd``), per seed, and their paired difference."""

    setting: str
    method: str
    subset: str
    superset: str
    sub: Estimate
    sup: Estimate
    diff: Estimate


def partial_deltas(spec: StudySpec, rows: list[dict]) -> list[PartialDelta]:
    """For every pair of task sets where one contains the other (S-D in S-D-N): each method's
    Delta on the subset's tasks when trained on the superset vs trained on the subset."""
    ref = reference_metrics(spec, rows)
    out = []
    for setting in spec.settings:
        for sub in spec.task_sets:
            for sup in spec.task_sets:
                ts_sub, ts_sup = set(parse_task_set(sub)), set(parse_task_set(sup))
                if sub == sup or not ts_sub < ts_sup:
                    continue
                for m in spec.methods:
                    if spec.is_single_task(m):
                        continue
                    a = {r["seed"]: row_delta(r, ref, parse_task_set(sub)) for r in rows
                         if r["setting"] == setting and r["method"] == m and r["tasks"] == sup}
                    b = {r["seed"]: row_delta(r, ref) for r in rows
                         if r["setting"] == setting and r["method"] == m and r["tasks"] == sub}
                    a = {s: v for s, v in a.items() if v is not None}
                    b = {s: v for s, v in b.items() if v is not None}
                    if not a and not b:
                        continue
                    common = sorted(set(a) & set(b))
                    out.append(PartialDelta(setting, m, sub, sup, estimate(b.values()), estimate(a.values()),
                                            estimate([a[s] - b[s] for s in common])))
    return out


# --- learning curves ------------------------------------------------------------------------
def delta_curve(curve: dict, tasks, base: dict[str, float]) -> tuple[list[int], list[float]]:
    """(images seen, Delta of each evaluation against the final reference metrics ``base``)."""
    xs, ys = [], []
    for e in curve["evals"]:
        d = delta({t: e.get(f"{t}/{get_task(t).headline_metric}") for t in tasks}, base, tasks)
        if d is not None:
            xs.append(e["images"])
            ys.append(d)
    return xs, ys


def merge_single_task_curves(curves: list[dict]) -> dict:
    """One curve from the single-task curves of one seed (their common evaluation points)."""
    common = set.intersection(*({e["images"] for e in c["evals"]} for c in curves))
    evals = []
    for x in sorted(common):
        e = {"images": x}
        for c in curves:
            e.update(next(v for v in c["evals"] if v["images"] == x))
        evals.append(e)
    return {"evals": evals}


def levelled(xs_by_seed: dict[int, tuple[list, list]], final_spread: float | None,
             last_step: float | None = None) -> dict:
    """Movement of the seed-mean curve over the last fifth of training (its value at the end
    minus its value at the last evaluation at or before 80 % of the images) against the seed
    spread (standard deviation of the final values); ``levelled`` is None without a spread.

    ``last_step``: images seen at the schedule's last learning-rate step. When it falls inside
    that window, the window also holds the step's jump, so ``after_step`` gives the movement
    from the first evaluation after the step to the end (NaN when there is none, or no step
    in the window); ``levelled`` stays the last-fifth comparison."""
    nan = {"movement": math.nan, "spread": math.nan, "levelled": None, "after_step": math.nan}
    curves = [dict(zip(xs, ys)) for xs, ys in xs_by_seed.values() if xs]
    if not curves:
        return nan
    common = sorted(set.intersection(*(set(c) for c in curves)))
    if len(common) < 2:
        return nan
    mean = {x: float(np.mean([c[x] for c in curves])) for x in common}
    end = common[-1]
    start = max([x for x in common if x <= 0.8 * end] or common[:1])
    move = mean[end] - mean[start]
    after = [x for x in common if start <= last_step < x] if last_step is not None else []
    after_step = mean[end] - mean[after[0]] if len(after) >= 2 else math.nan
    spread = final_spread if final_spread is not None and math.isfinite(final_spread) else math.nan
    return {"movement": move, "spread": spread, "from": start, "to": end, "after_step": after_step,
            "levelled": None if not math.isfinite(spread) else abs(move) < spread}


def curve_deltas(spec: StudySpec, rows: list[dict], curves: dict[tuple, dict]) -> dict[tuple, dict[int, tuple]]:
    """``(setting, task set, method) -> {seed: (images, Delta curve)}``; Delta at each
    evaluation against the final reference metrics of the same seed (so every curve ends at
    the row's Delta and the reference's at 0). ``curves`` maps a row key to its curve."""
    from .results import row_key

    ref = reference_metrics(spec, rows)
    out: dict[tuple, dict[int, tuple]] = {}
    for setting in spec.settings:
        for ts in spec.task_sets:
            tasks = parse_task_set(ts)
            for m in spec.methods:
                if spec.is_single_task(m):
                    per_seed: dict[int, list] = {}
                    for r in rows:
                        if r["setting"] == setting and r["method"] == m and parse_task_set(r["tasks"])[0] in tasks:
                            c = curves.get(row_key(r))
                            if c is not None:
                                per_seed.setdefault(r["seed"], []).append((r, c))
                    for seed, rc in per_seed.items():
                        if {parse_task_set(r["tasks"])[0] for r, _ in rc} != set(tasks):
                            continue
                        base = ref.get((rc[0][0]["study_hash"], setting, seed), {})
                        merged = merge_single_task_curves([c for _, c in rc])
                        out.setdefault((setting, ts, m), {})[seed] = delta_curve(merged, tasks, base)
                    continue
                for r in rows:
                    if r["setting"] == setting and r["method"] == m and r["tasks"] == ts:
                        c = curves.get(row_key(r))
                        base = ref.get((r["study_hash"], setting, r["seed"]), {})
                        if c is not None and all(t in base for t in tasks):
                            out.setdefault((setting, ts, m), {})[r["seed"]] = delta_curve(c, tasks, base)
    return out


def task_set_label(ts: str) -> str:
    return task_set_name(parse_task_set(ts), sep="-")
