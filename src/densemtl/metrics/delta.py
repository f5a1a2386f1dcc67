"""The multi-task Delta of the paper (section 4.1.2)."""

from __future__ import annotations

from typing import Iterable, Mapping

from ..tasks import canonical_tasks, get_task


def _headline(values, task: str) -> float:
    t = get_task(task)
    if isinstance(values, Mapping):
        v = values.get(task, values)
        if isinstance(v, Mapping):
            if t.headline_metric not in v:
                raise KeyError(f"metrics of task '{task}' lack its headline metric '{t.headline_metric}'")
            return float(v[t.headline_metric])
        return float(v)
    raise TypeError(f"metrics must be a mapping task -> value or task -> {{metric: value}}, got {type(values).__name__}")


def multitask_delta(metrics: Mapping, baselines: Mapping, tasks: Iterable[str] | None = None) -> float:
    """``Delta_T = 1/n sum_i (-1)^{g_i} (m_i - b_i) / b_i * 100`` (percent).

    Args:
        metrics: ``{task: value}`` or ``{task: {metric: value}}`` of the multi-task model.
        baselines: the same for the single-task models.
        tasks: tasks to include (default: all tasks of ``metrics``), canonical order.

    Each task contributes its headline metric (semseg mIoU, depth RMSE, normals mean angle,
    edges F1) with ``g_i = 1`` when lower is better.
    """
    tasks = canonical_tasks(tasks if tasks is not None else metrics.keys())
    total = 0.0
    for task in tasks:
        m, b = _headline(metrics, task), _headline(baselines, task)
        if b == 0:
            raise ZeroDivisionError(f"baseline metric of task '{task}' is 0; Delta is undefined")
        sign = 1.0 if get_task(task).higher_is_better else -1.0
        total += sign * (m - b) / b
    return total / len(tasks) * 100.0
