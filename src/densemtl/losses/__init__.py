"""Multi-scale supervision and task weighting methods.

The per-task loss functions live with their task (:mod:`densemtl.tasks`); they are
re-exported here for convenience.
"""

from ..tasks import IGNORE_INDEX, check_finite
from ..tasks.depth import D_FAR, EPS, berhu, code_to_depth, depth_loss, depth_to_code
from ..tasks.edges import edges_loss
from ..tasks.normals import normals_loss
from ..tasks.semseg import semseg_loss
from .multiscale import resize_prediction, task_losses
from .weighting import (
    PAPER_WEIGHTS, WEIGHTINGS, WeightMethod, create_weighting, list_weightings, register_weighting, weighting_options,
)

__all__ = [
    "D_FAR", "EPS", "IGNORE_INDEX", "berhu", "check_finite", "code_to_depth", "depth_loss", "depth_to_code",
    "edges_loss", "normals_loss", "semseg_loss", "resize_prediction", "task_losses", "PAPER_WEIGHTS", "WEIGHTINGS",
    "WeightMethod", "create_weighting", "list_weightings", "register_weighting", "weighting_options",
]
