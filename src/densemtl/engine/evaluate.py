"""Evaluation loop: streaming meters over a split, summed across processes."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from ..tasks import get_protocol
from .distributed import is_main


def amp_context(device: torch.device, amp: str | None):
    if not amp:
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


@torch.no_grad()
def evaluate(model, loader, tasks, meter_options: dict, device: torch.device, amp: str | None = None,
             channels_last: bool = False, progress: bool = False, save_dir: str | Path | None = None,
             protocol: str = "standard") -> dict:
    """All metrics of the model's tasks under one protocol: ``{task: {metric: value}}``.

    Predictions at the model's evaluation scale are upsampled to the label size (as the
    protocol does it), decoded (argmax, metres, unit normals, edge probability) and fed to each
    task's meter. ``save_dir`` writes the decoded predictions per image (``<id>.npz``).
    """
    return evaluate_protocols(model, loader, tasks, meter_options, device, amp, channels_last, progress, save_dir,
                              protocols=(protocol,))[get_protocol(protocol).name]


@torch.no_grad()
def evaluate_protocols(model, loader, tasks, meter_options: dict, device: torch.device, amp: str | None = None,
                       channels_last: bool = False, progress: bool = False, save_dir: str | Path | None = None,
                       protocols=("standard",)) -> dict:
    """All metrics under several protocols in one pass: ``{protocol: {task: {metric: value}}}``.

    The first protocol's labels are the batch's ``labels``, the others' its
    ``protocol_labels[name]`` (a dataset built with ``extra_protocols``). ``save_dir`` holds the
    first protocol's decoded predictions.
    """
    from tqdm import tqdm

    protocols = [get_protocol(p) for p in protocols]
    net = model.module if hasattr(model, "module") else model
    was_training = model.training
    model.eval()
    meters = {p.name: {t: p.task(t).meter(**meter_options) for t in tasks} for p in protocols}
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
        for i, p in enumerate(protocols):
            labels = batch["labels"] if i == 0 else batch["protocol_labels"][p.name]
            for t in tasks:
                label = labels[t].to(device)
                pred = p.task(t).decode(p.resize(out[t][net.eval_scale].float(), label.shape[-2:]))
                meters[p.name][t].update(pred, label)
                if i == 0:
                    decoded[t] = pred
        if save_dir:
            for i, sid in enumerate(batch["id"]):
                arrays = {t: decoded[t][i].cpu().numpy() for t in tasks}
                name = str(sid).replace("/", "_")
                np.savez_compressed(save_dir / f"{name}.npz", **arrays)
    results = {}
    for p in protocols:
        results[p.name] = {}
        for t, m in meters[p.name].items():
            m.all_reduce()
            results[p.name][t] = m.compute()
    model.train(was_training)
    return results
