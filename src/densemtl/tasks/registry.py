"""Registry of tasks and the canonical task order.

The canonical order is the registration order (semseg, depth, normals, edges, then any
task registered later). It never depends on Python's string hashing, so every process
builds and iterates the same modules in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

_TASKS: dict[str, "Task"] = {}


@dataclass(frozen=True)
class Task:
    """Static description of a dense prediction task.

    Attributes:
        name: registry key, e.g. ``"semseg"``.
        letter: one-letter code used in task-set names (``"S"`` in ``"SDN"``).
        channels: output channels of the prediction head; ``None`` means "number of classes".
        higher_is_better: direction of the task's headline metric.
        headline_metric: the metric used by the multi-task Delta.
    """

    name: str
    letter: str
    channels: int | None
    higher_is_better: bool
    headline_metric: str
    description: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    def out_channels(self, num_classes: int | None) -> int:
        if self.channels is not None:
            return self.channels
        if num_classes is None or int(num_classes) < 1:
            raise ValueError(f"task '{self.name}' needs num_classes >= 1, got {num_classes!r}")
        return int(num_classes)


def register_task(task: Task) -> Task:
    if task.name in _TASKS:
        raise ValueError(f"task '{task.name}' is already registered")
    if any(t.letter == task.letter for t in _TASKS.values()):
        raise ValueError(f"task letter '{task.letter}' is already used")
    _TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    try:
        return _TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task '{name}'; registered tasks: {', '.join(_TASKS)}") from None


def list_tasks() -> list[str]:
    return list(_TASKS)


def parse_task_set(spec: str | Iterable[str]) -> tuple[str, ...]:
    """Accept ``"SDN"``, ``"S-D-N"``, ``"semseg,depth"`` or a list of names."""
    if isinstance(spec, str):
        if "," in spec or spec in _TASKS:
            names = [s.strip() for s in spec.split(",") if s.strip()]
        else:
            letters = {t.letter: t.name for t in _TASKS.values()}
            compact = spec.replace("-", "").strip()
            unknown = [c for c in compact if c not in letters]
            if unknown or not compact:
                raise ValueError(
                    f"cannot parse task set '{spec}': use letters {''.join(letters)} "
                    f"(e.g. 'SDN') or names {', '.join(_TASKS)}"
                )
            names = [letters[c] for c in compact]
        return canonical_tasks(names)
    return canonical_tasks(spec)


def canonical_tasks(tasks: Iterable[str]) -> tuple[str, ...]:
    """Validate task names and return them in canonical order (no duplicates)."""
    tasks = list(tasks)
    if not tasks:
        raise ValueError("at least one task is required")
    for t in tasks:
        get_task(t)
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"duplicate task in {tasks}")
    order = list(_TASKS)
    return tuple(sorted(tasks, key=order.index))


def task_set_name(tasks: Iterable[str]) -> str:
    return "".join(get_task(t).letter for t in canonical_tasks(tasks))
