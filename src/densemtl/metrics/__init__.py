"""The multi-task Delta, and the tasks' streaming meters re-exported in one place.

Each meter lives with its task (:mod:`densemtl.tasks`); see docs/metrics.md.
"""

from ..tasks.boundary import boundary_counts, default_thresholds, f_score, match_count
from ..tasks.depth import DepthMeter
from ..tasks.edges import EdgeMeter
from ..tasks.meter import Meter
from ..tasks.normals import NormalsMeter
from ..tasks.semseg import SegmentationMeter
from .delta import multitask_delta

__all__ = ["Meter", "SegmentationMeter", "DepthMeter", "NormalsMeter", "EdgeMeter", "multitask_delta",
           "boundary_counts", "default_thresholds", "f_score", "match_count"]
