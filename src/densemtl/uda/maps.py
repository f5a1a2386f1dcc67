"""Discriminator inputs: each task's raw head output -> a bounded map in [0, 1].

The map of a task is the task's own :meth:`densemtl.tasks.Task.alignment_map` (semseg: the
self-information map, depth: the squashed inverse-depth code, normals: unit vectors, edges:
the probability); this module applies them to a model's outputs.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch

from ..losses.multiscale import resize_prediction
from ..tasks import get_task
from ..tasks.depth import depth_map
from ..tasks.edges import edge_map
from ..tasks.normals import normals_map
from ..tasks.semseg import self_information
from .discriminator import discriminator_key

__all__ = ["alignment_maps", "map_channels", "self_information", "depth_map", "normals_map", "edge_map"]


def map_channels(tasks: Iterable[str], num_classes: int | None = None) -> dict[str, int]:
    """``{task: discriminator input channels}`` (semseg: ``num_classes``; depth: 1)."""
    return {t: get_task(t).alignment_channels(num_classes) for t in tasks}


def alignment_maps(outputs: Mapping[str, Mapping[int, torch.Tensor]], size=None,
                   options: Mapping[str, Mapping] | None = None) -> dict[str, torch.Tensor]:
    """Discriminator inputs for a model output.

    Args:
        outputs: ``{task: {scale: (B, C_task, h_s, w_s)}}`` raw head outputs (model contract).
        size: ``(H, W)`` to upsample every prediction to (bilinear, before the map, as the
            supervised losses do), e.g. the image size; ``None`` keeps each scale's size.
        options: ``{task: keyword options}`` of the tasks' maps (e.g.
            ``{"depth": {"ref_depth": 3.0}}``).

    Returns:
        ``{"{task}/{scale}": (B, C_map, H, W)}`` keyed like
        :func:`densemtl.uda.build_discriminators`; computed in float32.
    """
    out = {}
    for t, preds in outputs.items():
        task, opts = get_task(t), dict((options or {}).get(t) or {})
        for s, p in preds.items():
            p = p.float()
            if size is not None:
                p = resize_prediction(p, size)
            out[discriminator_key(t, s)] = task.alignment_map(p, **opts)
    return out
