"""Training objectives: supervised, self-supervised depth, adversarial domain alignment."""

from .base import DEFAULT_PRIMARY, OBJECTIVES, Objective, StepContext, objective_classes, register_objective
from . import supervised, selfsup, adversarial  # noqa: F401  (registration)

__all__ = ["DEFAULT_PRIMARY", "OBJECTIVES", "Objective", "StepContext", "objective_classes", "register_objective"]
