"""Tasks: the bottom layer. One registered object per dense prediction task (see
docs/architecture.md); the registration order below is the canonical task order."""

from .base import (
    IGNORE_INDEX, TASKS, Task, canonical_tasks, check_finite, directions, get_task, headlines, list_tasks, parse_task_set,
    register_task, task_set_name, unregister_task,
)
from .meter import Meter
from .protocol import PAPER, PROTOCOLS, STANDARD, Protocol, get_protocol, list_protocols, register_protocol
from . import semseg, depth, normals, edges, disparity  # noqa: F401  (registration = canonical order)

__all__ = ["IGNORE_INDEX", "TASKS", "Task", "Meter", "PAPER", "PROTOCOLS", "STANDARD", "Protocol", "get_protocol",
           "list_protocols", "register_protocol", "canonical_tasks", "check_finite", "directions", "get_task", "headlines",
           "list_tasks", "parse_task_set", "register_task", "task_set_name", "unregister_task"]
