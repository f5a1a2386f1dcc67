"""Supervised training: every task's loss against its labels, over its supervised scales."""

from __future__ import annotations

from ...losses import task_losses
from .base import Objective, StepContext, register_objective


@register_objective("supervised")
class Supervised(Objective):
    """The default primary objective (the paper's main setting)."""

    role = "primary"

    def __init__(self, trainer):
        if "disparity" in trainer.tasks:
            raise ValueError("the 'disparity' task is self-supervised: set selfsup.enabled=true")
        self.protocol = trainer.protocol

    def losses(self, ctx: StepContext):
        return task_losses(ctx.outputs, ctx.labels, protocol=self.protocol)
