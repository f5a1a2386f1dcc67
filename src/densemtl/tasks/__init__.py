"""Task registry: one registered object per dense prediction task."""

from .registry import Task, canonical_tasks, get_task, list_tasks, register_task, parse_task_set

__all__ = ["Task", "canonical_tasks", "get_task", "list_tasks", "register_task", "parse_task_set"]

from . import builtin  # noqa: E402,F401  (registers semseg, depth, normals, edges)
