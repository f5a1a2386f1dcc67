"""The :class:`Objective` contract: one training regime's part of a training step.

The training loop (:class:`densemtl.engine.Trainer`) knows objectives only through this
interface. Exactly one *primary* objective gives the per-task losses of a batch (supervised
or self-supervised depth); *auxiliary* objectives add work around the model's optimiser
step (adversarial domain alignment). An objective owns its extra modules, optimisers and
data streams, and its checkpoint state (saved under :attr:`Objective.checkpoint_key`).
A new objective is one registered class (see docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig

from ...registry import Registry

OBJECTIVES: Registry[type["Objective"]] = Registry("objective")
DEFAULT_PRIMARY = "supervised"


def register_objective(name: str):
    """Class decorator registering an :class:`Objective` subclass under ``name``."""

    def deco(cls):
        cls.name = name
        return OBJECTIVES.add(name, cls)

    return deco


@dataclass
class StepContext:
    """What one training step has computed so far, shared by the objectives."""

    batch: dict
    image: torch.Tensor  # the model's input on the device (channels-last if configured)
    labels: dict[str, torch.Tensor]
    outputs: dict  # the model's outputs on ``image``
    logs: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # objective-specific results (e.g. target outputs)


class Objective:
    """Base class.

    Class attributes:
        name: registry name (set by :func:`register_objective`).
        role: ``"primary"`` (gives :meth:`losses`) or ``"auxiliary"``.
        checkpoint_key: top-level checkpoint key of :meth:`state_dict` (``None``: no state).
    """

    name: str = ""
    role: str = "auxiliary"
    checkpoint_key: str | None = None

    @classmethod
    def enabled(cls, cfg: DictConfig) -> bool:
        """Whether the config asks for this objective."""
        return False

    def __init__(self, trainer):
        """Build extra modules, optimisers and data streams (after the model, before the
        model's optimiser). ``trainer`` gives cfg, device, tasks, model, datasets."""

    def param_groups(self) -> list[tuple]:
        """Extra parameter groups of the model's optimiser, ``(name, module, lr)`` with ``lr``
        ``None`` for ``optim.lr_decoder`` (e.g. the pose network)."""
        return []

    def warm_start(self, init_checkpoint: dict | None) -> None:
        """Initialise extra modules from ``train.init_from`` (a fresh run only)."""

    def wrap_distributed(self, wrap) -> None:
        """Wrap trainable extra modules with ``wrap(module)`` (DistributedDataParallel)."""

    def losses(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        """Unweighted per-task losses of the batch (primary objectives)."""
        raise NotImplementedError(f"objective '{self.name}' gives no task losses")

    def after_backward(self, trainer, ctx: StepContext) -> None:
        """After the weighted task losses' backward, before clipping and the optimiser step."""

    def after_optimizer_step(self, trainer, ctx: StepContext) -> None:
        """After the model's optimiser and scheduler steps."""

    def state_dict(self) -> dict | None:
        return None

    def load_state_dict(self, state: dict | None, path: str) -> None:
        """Restore :meth:`state_dict` from checkpoint ``path`` (for an exact resume)."""


def objective_classes(cfg: DictConfig) -> list[type[Objective]]:
    """The objectives a config asks for: one primary (default :data:`DEFAULT_PRIMARY`) first,
    then the enabled auxiliary ones in registration order."""
    enabled = [c for c in OBJECTIVES.values() if c.enabled(cfg)]
    primary = [c for c in enabled if c.role == "primary"]
    if len(primary) > 1:
        raise ValueError(f"the config enables several primary training objectives: {[c.name for c in primary]}")
    return (primary or [OBJECTIVES.get(DEFAULT_PRIMARY)]) + [c for c in enabled if c.role != "primary"]
