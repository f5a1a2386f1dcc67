"""Protocols: which definitions of targets, losses and metrics a run uses.

``standard`` (the default) is the library's own, standard definitions. ``paper`` reproduces what
the authors' released code computed, so that numbers can be put next to the paper's tables
(docs/fidelity.md lists every difference, where it comes from and what it changes).

A protocol is one registered object. It owns two things:

* how a prediction is upsampled to its label's size, for the losses and for evaluation
  (:meth:`Protocol.resize`);
* for each task, the :class:`~densemtl.tasks.base.Task` object that implements the task under
  it (:meth:`Protocol.task`). A protocol that changes a task's targets, loss or metric holds a
  *variant* of that task: a subclass instance defined in the task's own module and added with
  :meth:`Protocol.add_variant`; every other task is the registered one.

Each layer chooses once: the dataset asks ``protocol.task(name)`` for label handling, the
loss for ``loss``, the evaluation for ``decode`` and ``meter``. Adding a protocol = creating
and registering one more :class:`Protocol` and adding the variants it needs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import Registry
from .base import Task, get_task

PROTOCOLS: Registry["Protocol"] = Registry("protocol")


class Protocol:
    """A named set of definitions.

    Args:
        name: registry key (the ``protocol`` config value).
        description: one line for listings and tables.
        align_corners: ``align_corners`` of the bilinear upsampling of predictions to the
            label size, for the losses and for evaluation.
    """

    def __init__(self, name: str, description: str, align_corners: bool):
        self.name = name
        self.description = description
        self.align_corners = bool(align_corners)
        self._variants: dict[str, Task] = {}

    def add_variant(self, task: Task) -> Task:
        """Use ``task`` (a :class:`Task` instance named like a registered task) for that task
        under this protocol; returns ``task``."""
        if not isinstance(task, Task) or not task.name:
            raise TypeError(f"a protocol variant must be a named Task instance, got {task!r}")
        if task.name in self._variants:
            raise ValueError(f"protocol '{self.name}' already has a variant of task '{task.name}'")
        self._variants[task.name] = task
        return task

    def task(self, name: str) -> Task:
        """The object implementing task (or label) ``name`` under this protocol."""
        variant = self._variants.get(name)
        return variant if variant is not None else get_task(name)

    @property
    def variants(self) -> list[str]:
        """Names of the tasks this protocol defines differently from the registered ones."""
        return list(self._variants)

    def resize(self, pred: torch.Tensor, size) -> torch.Tensor:
        """Bilinear upsampling of a raw prediction ``(B, C, h, w)`` to ``size = (H, W)`` (no-op if equal)."""
        if tuple(pred.shape[-2:]) == tuple(size):
            return pred
        return F.interpolate(pred, size=tuple(size), mode="bilinear", align_corners=self.align_corners)

    def __repr__(self) -> str:
        return f"<Protocol {self.name}>"


def register_protocol(protocol: Protocol) -> Protocol:
    if not isinstance(protocol, Protocol):
        raise TypeError(f"register_protocol expects a Protocol, got {type(protocol).__name__}")
    return PROTOCOLS.add(protocol.name, protocol)


def get_protocol(name: "str | Protocol") -> Protocol:
    """The registered protocol ``name`` (a :class:`Protocol` is returned as is)."""
    return name if isinstance(name, Protocol) else PROTOCOLS.get(name)


def list_protocols() -> list[str]:
    return PROTOCOLS.names()


STANDARD = register_protocol(Protocol(
    "standard", "standard definitions (per-pixel angles, edge-class F1, metric depth)", align_corners=False))
PAPER = register_protocol(Protocol(
    "paper", "the authors' released evaluation, targets and losses (docs/fidelity.md)", align_corners=True))
