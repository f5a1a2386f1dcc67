"""Evaluation loop: streaming meters over a split, summed across processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..losses import resize_prediction
from ..tasks import get_task
from .distributed import is_main
from .fastpath import autocast, to_memory_format


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
        x = to_memory_format(batch["image"].to(device), channels_last)
        with autocast(device, amp):
            out = net(x)  # the bare module: no DDP collectives, so ranks with fewer batches cannot hang
        decoded = {}
        for t in tasks:
            label = batch["labels"][t].to(device)
            pred = resize_prediction(out[t][net.eval_scale].float(), label.shape[-2:])
            decoded[t] = get_task(t).decode(pred)
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
