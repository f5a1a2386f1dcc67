"""Self-supervised depth from video (Monodepth2-style): camera geometry and photometric losses.

Building blocks for the paper's section 4.4 (semi-supervised segmentation with
self-supervised depth); the pose network, video datasets and configs build on these.
"""

from .geometry import (
    axis_angle_to_matrix, backproject, invert_pose, pose_from_parameters, project, warp_frame,
)
from .photometric import SSIM, edge_aware_smoothness, min_reprojection_loss, photometric_error
from .loss import self_supervised_depth_loss
from .posenet import PoseNet

__all__ = ["axis_angle_to_matrix", "backproject", "invert_pose", "pose_from_parameters", "project", "warp_frame",
           "SSIM", "edge_aware_smoothness", "min_reprojection_loss", "photometric_error", "PoseNet", "self_supervised_depth_loss"]
