"""Rigid motion and view synthesis for self-supervised depth.

Conventions: camera frame x right, y down, z forward; a pose ``T`` (B, 4, 4) maps target-camera
coordinates into source-camera coordinates, ``X_s = R X_t + t``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def axis_angle_to_matrix(vec: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: ``(B, 3)`` axis * angle (radians) -> ``(B, 3, 3)`` rotation."""
    angle = vec.norm(dim=-1, keepdim=True)
    axis = vec / angle.clamp_min(1e-12)
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).view(*vec.shape[:-1], 3, 3)
    s, c = torch.sin(angle)[..., None], torch.cos(angle)[..., None]
    eye = torch.eye(3, dtype=vec.dtype, device=vec.device).expand_as(K)
    return eye + s * K + (1 - c) * (K @ K)


def pose_from_parameters(axis_angle: torch.Tensor, translation: torch.Tensor, invert: bool = False) -> torch.Tensor:
    """``(B, 3)`` rotation and ``(B, 3)`` translation -> ``(B, 4, 4)``; ``invert`` gives the inverse
    transform (used for the previous frame, whose pose is predicted in the other direction)."""
    T = torch.eye(4, dtype=axis_angle.dtype, device=axis_angle.device).repeat(axis_angle.shape[0], 1, 1)
    T[:, :3, :3] = axis_angle_to_matrix(axis_angle)
    T[:, :3, 3] = translation
    return invert_pose(T) if invert else T


def invert_pose(T: torch.Tensor) -> torch.Tensor:
    """Exact inverse of rigid transforms ``(B, 4, 4)``: ``[R^T, -R^T t]``."""
    R, t = T[:, :3, :3], T[:, :3, 3:]
    out = torch.eye(4, dtype=T.dtype, device=T.device).repeat(T.shape[0], 1, 1)
    out[:, :3, :3] = R.transpose(1, 2)
    out[:, :3, 3:] = -R.transpose(1, 2) @ t
    return out


def backproject(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """``depth (B, 1, H, W)`` metres, ``K (B, 3, 3)`` -> homogeneous points ``(B, 4, H*W)``."""
    B, _, H, W = depth.shape
    v, u = torch.meshgrid(torch.arange(H, dtype=depth.dtype, device=depth.device),
                          torch.arange(W, dtype=depth.dtype, device=depth.device), indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)]).view(1, 3, -1).expand(B, -1, -1)
    rays = torch.linalg.inv(K.to(depth.dtype)) @ pix
    pts = rays * depth.view(B, 1, -1)
    return torch.cat([pts, torch.ones_like(pts[:, :1])], 1)


def project(points: torch.Tensor, K: torch.Tensor, T: torch.Tensor, size) -> torch.Tensor:
    """Homogeneous points ``(B, 4, N)`` -> sampling grid ``(B, H, W, 2)`` in [-1, 1] of the source
    image (``align_corners=True`` convention) after transforming with ``T``."""
    H, W = size
    cam = (T @ points)[:, :3]
    pix = K.to(points.dtype) @ cam
    xy = pix[:, :2] / pix[:, 2:3].clamp_min(1e-7)
    x = xy[:, 0].view(-1, H, W) / (W - 1) * 2 - 1
    y = xy[:, 1].view(-1, H, W) / (H - 1) * 2 - 1
    return torch.stack([x, y], -1)


def warp_frame(source: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """Synthesise the target view from ``source (B, C, H, W)`` using the target ``depth`` and the
    pose ``T`` (target -> source); bilinear sampling with border padding."""
    grid = project(backproject(depth, K), K, T, depth.shape[-2:])
    return F.grid_sample(source, grid.to(source.dtype), mode="bilinear", padding_mode="border", align_corners=True)
