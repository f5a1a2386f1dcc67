"""Task registry: one registered object per dense prediction task."""

from .registry import Task, canonical_tasks, get_task, list_tasks, parse_task_set, register_task, task_set_name

# registration order is the canonical order
from . import semseg  # noqa: E402,F401
from . import depth  # noqa: E402,F401
from . import normals  # noqa: E402,F401
from . import edges  # noqa: E402,F401
from ..selfsup import disparity  # noqa: E402,F401  (self-supervised depth, registered after the four)

__all__ = ["Task", "canonical_tasks", "get_task", "list_tasks", "parse_task_set", "register_task", "task_set_name"]
