"""Discriminator inputs: each task's raw head output -> a bounded map in [0, 1].

A task takes part in adversarial alignment by registering one :class:`AlignmentMap`
(its input channels and the map function), like tasks in :mod:`densemtl.tasks.registry`:

    register_alignment_map(AlignmentMap("semseg", self_information, channels=None))

``channels=None`` means "number of classes".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F

from ..losses.functional import D_FAR, EPS
from ..losses.multiscale import resize_prediction


def self_information(logits: torch.Tensor) -> torch.Tensor:
    """Weighted self-information (ADVENT): ``-p log p / log C`` per class, ``p = softmax(logits)``.

    ``logits (N, C, H, W)`` -> ``(N, C, H, W)`` in [0, 1]; the sum over classes is the
    normalised entropy (1 for a uniform softmax, 0 for a one-hot one). Safe at ``p = 0``
    (``-inf`` logits included): those terms are exactly 0 with finite gradients.
    """
    if logits.dim() != 4:
        raise ValueError(f"expected logits (N, C, H, W), got {tuple(logits.shape)}")
    c = logits.shape[1]
    if c < 2:
        raise ValueError(f"self-information needs at least 2 classes, got {c}")
    logp = F.log_softmax(logits, dim=1)
    p = logp.exp()
    logp = logp.masked_fill(p == 0, 0.0)  # 0 log 0 = 0 (and no 0 * inf in backward)
    return -(p * logp) / math.log(c)


def depth_map(code: torch.Tensor, ref_depth: float = 10.0) -> torch.Tensor:
    """Depth prediction -> ``[0, 1]`` with a fixed, label-free squashing of the inverse-depth code.

    The depth head predicts ``z = 655.36 / (d + 0.01)`` (:mod:`densemtl.tasks.depth`). With
    ``z_ref`` the code of ``ref_depth``::

        n = max(z, 0) / (max(z, 0) + z_ref) = (ref + 0.01) / (ref + d + 0.02)

    so n = 0.5 at ``ref_depth``, -> 1 near the camera, -> 0 far away (z <= 0, "infinitely
    far", gives 0). With the default 10 m (the depth head's initial value) the outdoor range
    1..80 m spans ~0.91..0.11. ``code (N, 1, H, W)`` -> ``(N, 1, H, W)``.

    Why this rather than per-image min-max or the source labels' range (the released code
    divided by the min/max of the *source batch's ground truth*): it is a fixed per-pixel
    function, so a map depends neither on the other pixels, the other images of the batch
    nor on any label (target maps never see source labels); it keeps absolute scale, the
    quantity the depth metrics measure, so the discriminators can penalise a global scale
    shift that min-max would hide; it is smooth and bounded without clamping (every pixel
    with a positive code gets a gradient, none saturates at 0/1 as a clamp of metres to
    [0, 80] would) and monotone in inverse depth, the network's own parametrisation.
    Use a smaller ``ref_depth`` (e.g. 3 m) for indoor data.
    """
    if code.dim() != 4 or code.shape[1] != 1:
        raise ValueError(f"expected a depth code (N, 1, H, W), got {tuple(code.shape)}")
    if not ref_depth > 0:
        raise ValueError(f"ref_depth must be > 0, got {ref_depth}")
    z = code.clamp_min(0.0)
    return z / (z + D_FAR / (float(ref_depth) + EPS))


def normals_map(pred: torch.Tensor) -> torch.Tensor:
    """Unnormalised normals ``(N, 3, H, W)`` -> unit vectors mapped to [0, 1]: ``(n + 1) / 2``."""
    return (F.normalize(pred, dim=1, eps=1e-6) + 1.0) / 2.0


def edge_map(logit: torch.Tensor) -> torch.Tensor:
    """Edge logit ``(N, 1, H, W)`` -> edge probability (sigmoid)."""
    return torch.sigmoid(logit)


@dataclass(frozen=True)
class AlignmentMap:
    """How a task's raw head output becomes a discriminator input.

    ``fn``: ``(N, C_task, H, W)`` raw prediction -> ``(N, channels, H, W)`` map in [0, 1];
    ``channels``: its channel count, ``None`` = number of classes.
    """

    task: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    channels: int | None = 1

    def in_channels(self, num_classes: int | None = None) -> int:
        if self.channels is not None:
            return int(self.channels)
        if num_classes is None or int(num_classes) < 2:
            raise ValueError(f"the '{self.task}' alignment map needs num_classes >= 2, got {num_classes!r}")
        return int(num_classes)

    def __call__(self, pred: torch.Tensor) -> torch.Tensor:
        return self.fn(pred)


_MAPS: dict[str, AlignmentMap] = {}


def register_alignment_map(m: AlignmentMap) -> AlignmentMap:
    if m.task in _MAPS:
        raise ValueError(f"task '{m.task}' already has an alignment map")
    _MAPS[m.task] = m
    return m


def get_alignment_map(task: str) -> AlignmentMap:
    try:
        return _MAPS[task]
    except KeyError:
        raise KeyError(f"task '{task}' has no adversarial alignment map; registered: {', '.join(_MAPS)}") from None


def list_alignment_maps() -> list[str]:
    return list(_MAPS)


register_alignment_map(AlignmentMap("semseg", self_information, channels=None))
register_alignment_map(AlignmentMap("depth", depth_map, channels=1))
register_alignment_map(AlignmentMap("normals", normals_map, channels=3))
register_alignment_map(AlignmentMap("edges", edge_map, channels=1))


def map_channels(tasks: Iterable[str], num_classes: int | None = None) -> dict[str, int]:
    """``{task: discriminator input channels}`` (semseg: ``num_classes``; depth: 1)."""
    return {t: get_alignment_map(t).in_channels(num_classes) for t in tasks}


def alignment_maps(outputs: Mapping[str, Mapping[int, torch.Tensor]], size=None,
                   maps: Mapping[str, Callable] | None = None) -> dict[str, torch.Tensor]:
    """Discriminator inputs for a model output.

    Args:
        outputs: ``{task: {scale: (B, C_task, h_s, w_s)}}`` raw head outputs (model contract).
        size: ``(H, W)`` to upsample every prediction to (bilinear, before the map, as the
            supervised losses do), e.g. the image size; ``None`` keeps each scale's size.
        maps: optional ``{task: callable}`` overriding the registered map functions (e.g.
            ``functools.partial(depth_map, ref_depth=3.0)``).

    Returns:
        ``{"{task}/{scale}": (B, C_map, H, W)}`` keyed like :func:`build_discriminators`;
        computed in float32.
    """
    from .discriminator import discriminator_key

    out = {}
    for t, preds in outputs.items():
        fn = (maps or {}).get(t) or get_alignment_map(t)
        for s, p in preds.items():
            p = p.float()
            if size is not None:
                p = resize_prediction(p, size)
            out[discriminator_key(t, s)] = fn(p)
    return out
