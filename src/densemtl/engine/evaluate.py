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


def decode_outputs(net, out: dict, tasks, size) -> dict:
    """``{task: decoded prediction}`` of a model output: each task's prediction at the model's
    evaluation scale upsampled to ``size`` ``(H, W)`` and decoded (argmax, metres, unit normals,
    edge probability)."""
    return {t: get_task(t).decode(resize_prediction(out[t][net.eval_scale].float(), size)) for t in tasks}


@torch.no_grad()
def evaluate(model, loader, tasks, meter_options: dict, device: torch.device, amp: str | None = None,
             channels_last: bool = False, progress: bool = False, save_dir: str | Path | None = None) -> dict:
    """All metrics of the model's tasks: ``{task: {metric: value}}``.

    Predictions at the model's evaluation scale are upsampled to the label size, decoded
    (argmax, metres, unit normals, edge probability) and fed to each task's meter.
    ``save_dir`` writes the decoded predictions per image (``<id>.npz``).
    """
    from tqdm import tqdm

    net = model.module if hasattr(model, "module") else model
    was_training = model.training
    model.eval()
    meters = {t: get_task(t).meter(**meter_options) for t in tasks}
    save_dir = Path(save_dir) if save_dir else None
    if save_dir:
        save_dir.mkdir(parents=True, exist_ok=True)
    for batch in tqdm(loader, disable=not (progress and is_main()), desc="eval", leave=False):
        x = batch["image"].to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with amp_context(device, amp):
            out = net(x)  # the bare module: no DDP collectives, so ranks with fewer batches cannot hang
        decoded = {}
        for t in tasks:
            label = batch["labels"][t].to(device)
            decoded.update(decode_outputs(net, out, [t], label.shape[-2:]))
            meters[t].update(decoded[t], label)
        if save_dir:
            for i, sid in enumerate(batch["id"]):
                arrays = {t: decoded[t][i].cpu().numpy() for t in tasks}
                name = str(sid).replace("/", "_")
                np.savez_compressed(save_dir / f"{name}.npz", **arrays)
    results = {}
    for t, m in meters.items():
        m.all_reduce()
        results[t] = m.compute()
    model.train(was_training)
    return results
