"""The multi-task Delta of the paper (section 4.1.2; docs/metrics.md)."""

from __future__ import annotations

from typing import Iterable, Mapping


def _value(values: Mapping, task: str, metric: str | None) -> float:
    if not isinstance(values, Mapping):
        raise TypeError(f"metrics must be a mapping task -> value or task -> {{metric: value}}, got {type(values).__name__}")
    if task not in values:
        raise KeyError(f"no metrics for task '{task}' (have: {', '.join(map(str, values))})")
    v = values[task]
    if isinstance(v, Mapping):
        if metric is None or metric not in v:
            raise KeyError(f"metrics of task '{task}' lack its headline metric '{metric}'")
        return float(v[metric])
    return float(v)


def multitask_delta(metrics: Mapping, baselines: Mapping, higher_is_better: Mapping[str, bool],
                    tasks: Iterable[str] | None = None, headline: Mapping[str, str] | None = None) -> float:
    """``Delta_T = 1/n sum_i (-1)^{g_i} (m_i - b_i) / b_i * 100`` (percent).

    Args:
        metrics: ``{task: value}`` or ``{task: {metric: value}}`` of the multi-task model.
        baselines: the same for the single-task models.
        higher_is_better: ``{task: bool}``, the direction of each task's metric (``g_i = 1``
            when lower is better); :func:`densemtl.tasks.directions` gives the headline ones.
        tasks: tasks to include, in order (default: those of ``higher_is_better``).
        headline: ``{task: metric key}`` used when ``metrics`` / ``baselines`` hold dicts.
    """
    tasks = list(tasks) if tasks is not None else list(higher_is_better)
    if not tasks:
        raise ValueError("Delta needs at least one task")
    total = 0.0
    for task in tasks:
        if task not in higher_is_better:
            raise KeyError(f"no metric direction given for task '{task}'")
        key = (headline or {}).get(task)
        m, b = _value(metrics, task, key), _value(baselines, task, key)
        if b == 0:
            raise ZeroDivisionError(f"baseline metric of task '{task}' is 0; Delta is undefined")
        sign = 1.0 if higher_is_better[task] else -1.0
        total += sign * (m - b) / b
    return total / len(tasks) * 100.0
