"""Registry of tasks and the canonical task order.

A task is one object (a :class:`Task` subclass instance) that knows its output channels, loss,
metrics, the direction of its headline metric, how invalid pixels are marked, and how to
render a prediction or label. Adding a task = registering one more object.

The canonical order is the registration order (semseg, depth, normals, edges, then any task
registered later). It never depends on Python's string hashing.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

_TASKS: dict[str, "Task"] = {}


class Task:
    """Base class of a dense prediction task.

    Class attributes:
        name: registry key, e.g. ``"semseg"``.
        letter: one-letter code used in task-set names (``"S"`` in ``"SDN"``).
        channels: head output channels; ``None`` means "number of classes".
        higher_is_better: direction of the headline metric.
        headline_metric: key of the metric used by the multi-task Delta.
        label_format: how labels are passed and how invalid pixels are marked.
    """

    name: str = ""
    letter: str = ""
    channels: int | None = None
    higher_is_better: bool = True
    headline_metric: str = ""
    description: str = ""
    label_format: str = ""
    head_bias: float | None = None  # initial bias of the prediction convs (None: PyTorch default)

    def out_channels(self, num_classes: int | None) -> int:
        if self.channels is not None:
            return self.channels
        if num_classes is None or int(num_classes) < 1:
            raise ValueError(f"task '{self.name}' needs num_classes >= 1, got {num_classes!r}")
        return int(num_classes)

    # --- training -------------------------------------------------------------------------
    def loss(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Scalar loss of a raw head output ``pred`` already at the label's size."""
        raise NotImplementedError

    def valid_mask(self, label: torch.Tensor) -> torch.Tensor:
        """``(B, H, W)`` bool mask of pixels with a usable label."""
        raise NotImplementedError

    # --- evaluation -----------------------------------------------------------------------
    def decode(self, pred: torch.Tensor) -> torch.Tensor:
        """Raw head output -> the quantity the metrics use (class ids, metres, unit vectors, probability)."""
        raise NotImplementedError

    def meter(self, **options):
        """A fresh streaming meter for this task's metrics."""
        raise NotImplementedError

    def metric_names(self, **options) -> list[str]:
        """Names of the metrics :meth:`meter` reports with these options (e.g. to check a
        ``task/metric`` before any evaluation)."""
        import warnings

        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return list(self.meter(**options).compute())

    # --- visualisation --------------------------------------------------------------------
    def render(self, value: torch.Tensor | np.ndarray, **options) -> np.ndarray:
        """A decoded prediction or a label of one image -> ``(H, W, 3)`` uint8 RGB."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<Task {self.name} ({self.letter})>"


def register_task(task: Task) -> Task:
    if not task.name or not task.letter:
        raise ValueError("a task needs a name and a one-letter code")
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


def task_set_name(tasks: Iterable[str], sep: str = "") -> str:
    """``("semseg", "depth")`` -> ``"SD"`` (or ``"S-D"`` with ``sep="-"``)."""
    return sep.join(get_task(t).letter for t in canonical_tasks(tasks))
