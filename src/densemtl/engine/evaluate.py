"""Evaluation loop: streaming meters over a split, summed across processes."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from ..losses import resize_prediction
from ..tasks import get_task
from .distributed import is_main


def amp_context(device: torch.device, amp: str | None):
    if not amp:
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def scale_key(scale: int, eval_scale: int = 0) -> str:
    """The prefix of a scale's metrics in ``metrics.jsonl`` and TensorBoard: none for the
    evaluation scale (``semseg/mIoU``), ``s<k>/`` for the others (``s1/semseg/mIoU``)."""
    return "" if scale == eval_scale else f"s{scale}/"


def flatten(results_by_scale: dict, eval_scale: int = 0) -> dict[str, float]:
    """``{scale: {task: {metric: v}}}`` -> ``{"task/metric": v, "s1/task/metric": v, ...}``."""
    return {f"{scale_key(s, eval_scale)}{t}/{k}": v
            for s, results in sorted(results_by_scale.items(), key=lambda kv: kv[0] != eval_scale)
            for t, d in results.items() for k, v in d.items()}


@torch.no_grad()
def evaluate(model, loader, tasks, meter_options: dict, device: torch.device, amp: str | None = None,
             channels_last: bool = False, progress: bool = False, save_dir: str | Path | None = None) -> dict:
    """All metrics of the model's tasks at its evaluation scale: ``{task: {metric: value}}``
    (:func:`evaluate_scales` with that scale only)."""
    net = model.module if hasattr(model, "module") else model
    return evaluate_scales(model, loader, tasks, meter_options, device, amp, channels_last, progress, save_dir,
                           scales=(net.eval_scale,))[net.eval_scale]


@torch.no_grad()
def evaluate_scales(model, loader, tasks, meter_options: dict, device: torch.device, amp: str | None = None,
                    channels_last: bool = False, progress: bool = False, save_dir: str | Path | None = None,
                    scales=None, boundary_scales=None) -> dict[int, dict]:
    """All metrics of the model's tasks at several output scales, in one pass over ``loader``:
    ``{scale: {task: {metric: value}}}``.

    ``scales``: the output scales to evaluate (default: every supervised scale of the model).
    The prediction at each scale is upsampled to the label size, decoded (argmax, metres, unit
    normals, edge probability) and fed to that scale's meter of the task. The slow boundary F
    of edges (``meter_options['boundary']``, ODS/OIS) is computed at ``boundary_scales`` only
    (default: the evaluation scale). ``save_dir`` writes the evaluation-scale predictions per
    image (``<id>.npz``).
    """
    from tqdm import tqdm

    net = model.module if hasattr(model, "module") else model
    eval_scale = net.eval_scale
    scales = sorted(set(getattr(net, "supervised_scales", (eval_scale,)) if scales is None else scales))
    boundary_scales = {eval_scale} if boundary_scales is None else set(boundary_scales)
    was_training = model.training
    model.eval()
    meters = {s: {t: get_task(t).meter(**(meter_options if s in boundary_scales else {**meter_options, "boundary": False}))
                  for t in tasks} for s in scales}
    save_dir = Path(save_dir) if save_dir else None
    if save_dir:
        save_dir.mkdir(parents=True, exist_ok=True)
    for batch in tqdm(loader, disable=not (progress and is_main()), desc="eval", leave=False):
        x = batch["image"].to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with amp_context(device, amp):
            out = net(x)  # the bare module: no DDP collectives, so ranks with fewer batches cannot hang
        labels = {t: batch["labels"][t].to(device) for t in tasks}
        decoded = {}
        for s in scales:
            for t in tasks:
                pred = resize_prediction(out[t][s].float(), labels[t].shape[-2:])
                decoded[s, t] = get_task(t).decode(pred)
                meters[s][t].update(decoded[s, t], labels[t])
        if save_dir:
            for i, sid in enumerate(batch["id"]):
                arrays = {t: decoded[eval_scale, t][i].cpu().numpy() for t in tasks if (eval_scale, t) in decoded}
                name = str(sid).replace("/", "_")
                np.savez_compressed(save_dir / f"{name}.npz", **arrays)
    results = {}
    for s, by_task in meters.items():
        results[s] = {}
        for t, m in by_task.items():
            m.all_reduce()
            results[s][t] = m.compute()
    model.train(was_training)
    return results
