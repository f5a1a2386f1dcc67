"""Multi-scale supervision: each task's loss = mean over its supervised scales."""

from __future__ import annotations

from typing import Mapping

import torch

from ..tasks import STANDARD, check_finite, get_protocol


def resize_prediction(pred: torch.Tensor, size) -> torch.Tensor:
    """Bilinear upsampling of a raw prediction to the label size (no-op if equal), as the
    standard protocol does it (``align_corners=False``)."""
    return STANDARD.resize(pred, size)


def task_losses(outputs: Mapping[str, Mapping[int, torch.Tensor]], labels: Mapping[str, torch.Tensor],
                check: bool = True, protocol=STANDARD) -> dict[str, torch.Tensor]:
    """Unweighted loss per task.

    Args:
        outputs: model output ``{task: {scale: (B, C, h, w)}}``.
        labels: ``{task: label}`` in each task's ``label_format`` at full resolution.
        check: raise ``FloatingPointError`` naming the task on NaN/Inf predictions or labels.
        protocol: a :class:`~densemtl.tasks.Protocol` or its name: its upsampling and its
            tasks' losses (docs/fidelity.md).

    Returns:
        ``{task: scalar}``: the mean over the task's supervised scales of its loss, with each
        prediction upsampled bilinearly to the label size.
    """
    protocol = get_protocol(protocol)
    losses = {}
    for name, preds in outputs.items():
        if name not in labels:
            raise KeyError(f"no label for task '{name}' (labels given: {sorted(labels)})")
        task, label = protocol.task(name), labels[name]
        size = label.shape[-2:]
        if check:
            check_finite(name, label=label)
        per_scale = []
        for s, p in preds.items():
            if check:
                check_finite(name, **{f"prediction at scale {s}": p})
            # fp32 and contiguous in one copy: a bf16 channels-last prediction would otherwise be
            # copied once to fp32 and again to the layout the loss kernels (nll_loss2d) need
            p = protocol.resize(p, size).to(torch.float32, memory_format=torch.contiguous_format)
            per_scale.append(task.loss(p, label))
        losses[name] = torch.stack(per_scale).mean()
    return losses
