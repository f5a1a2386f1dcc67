"""Losses of the four tasks, multi-scale supervision and task weighting methods."""

from .functional import (
    D_FAR, EPS, IGNORE_INDEX, berhu, check_finite, code_to_depth, depth_loss, depth_to_code, edges_loss,
    normals_loss, semseg_loss,
)
from .multiscale import resize_prediction, task_losses
from .weighting import PAPER_WEIGHTS, WeightMethod, create_weighting, list_weightings, register_weighting, weighting_options

__all__ = [
    "D_FAR", "EPS", "IGNORE_INDEX", "berhu", "check_finite", "code_to_depth", "depth_loss", "depth_to_code",
    "edges_loss", "normals_loss", "semseg_loss", "resize_prediction", "task_losses", "PAPER_WEIGHTS",
    "WeightMethod", "create_weighting", "list_weightings", "register_weighting", "weighting_options",
]
