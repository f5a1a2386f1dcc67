"""Evaluation loop: streaming meters over a split, summed across processes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from ..losses import resize_prediction
from ..tasks import get_protocol, get_task
from .distributed import is_main
from .fastpath import autocast, to_memory_format


def scale_key(scale: int, eval_scale: int = 0) -> str:
    """The prefix of a scale's metrics in ``metrics.jsonl`` and TensorBoard: none for the
    evaluation scale (``semseg/mIoU``), ``s<k>/`` for the others (``s1/semseg/mIoU``)."""
    return "" if scale == eval_scale else f"s{scale}/"


def flatten(results_by_scale: dict, eval_scale: int = 0) -> dict[str, float]:
    """``{scale: {task: {metric: v}}}`` -> ``{"task/metric": v, "s1/task/metric": v, ...}``."""
    return {f"{scale_key(s, eval_scale)}{t}/{k}": v
            for s, results in sorted(results_by_scale.items(), key=lambda kv: kv[0] != eval_scale)
            for t, d in results.items() for k, v in d.items()}


def decode_outputs(net, out: dict, tasks, size) -> dict:
    """``{task: decoded prediction}`` of a model output: each task's prediction at the model's
    evaluation scale upsampled to ``size`` ``(H, W)`` and decoded (argmax, metres, unit normals,
    edge probability)."""
    return {t: get_task(t).decode(resize_prediction(out[t][net.eval_scale].float(), size)) for t in tasks}


@torch.no_grad()
def evaluate(model, loader, tasks, meter_options: dict, device: torch.device, amp: str | None = None,
             channels_last: bool = False, progress: bool = False, save_dir: str | Path | None = None,
             protocol="standard") -> dict:
    """All metrics of the model's tasks at its evaluation scale under one protocol:
    ``{task: {metric: value}}`` (:func:`evaluate_all` with that scale and protocol only)."""
    net = model.module if hasattr(model, "module") else model
    return evaluate_all(model, loader, tasks, meter_options, device, amp, channels_last, progress, save_dir,
                        protocols=(protocol,), scales=(net.eval_scale,))[get_protocol(protocol).name][net.eval_scale]


@torch.no_grad()
def evaluate_scales(model, loader, tasks, meter_options: dict, device: torch.device, amp: str | None = None,
                    channels_last: bool = False, progress: bool = False, save_dir: str | Path | None = None,
                    scales=None, boundary_scales=None, protocol="standard") -> dict[int, dict]:
    """All metrics at several output scales under one protocol, in one pass:
    ``{scale: {task: {metric: value}}}`` (:func:`evaluate_all`)."""
    return evaluate_all(model, loader, tasks, meter_options, device, amp, channels_last, progress, save_dir,
                        protocols=(protocol,), scales=scales, boundary_scales=boundary_scales)[get_protocol(protocol).name]


@torch.no_grad()
def evaluate_all(model, loader, tasks, meter_options: dict, device: torch.device, amp: str | None = None,
                 channels_last: bool = False, progress: bool = False, save_dir: str | Path | None = None,
                 protocols=("standard",), scales=None, boundary_scales=None) -> dict[str, dict[int, dict]]:
    """All metrics of the model's tasks under several protocols and at several output scales,
    in one pass over ``loader``: ``{protocol: {scale: {task: {metric: value}}}}``.

    ``protocols``: the first one's labels are the batch's ``labels``, the others' its
    ``protocol_labels[name]`` (a dataset built with ``extra_protocols``). ``scales``: the
    output scales to evaluate (default: every supervised scale of the model). The prediction at
    each scale is upsampled to the label size (as the protocol does it), decoded (argmax,
    metres, unit normals, edge probability) and fed to the protocol's meter of the task at that
    scale. The slow boundary F of edges (``meter_options['boundary']``, ODS/OIS) is computed at
    ``boundary_scales`` only (default: the evaluation scale). ``save_dir`` writes the first
    protocol's evaluation-scale predictions per image (``<id>.npz``).
    """
    from tqdm import tqdm

    protocols = [get_protocol(p) for p in protocols]
    net = model.module if hasattr(model, "module") else model
    eval_scale = net.eval_scale
    scales = sorted(set(getattr(net, "supervised_scales", (eval_scale,)) if scales is None else scales))
    boundary_scales = {eval_scale} if boundary_scales is None else set(boundary_scales)
    was_training = model.training
    model.eval()
    meters = {p.name: {s: {t: p.task(t).meter(**(meter_options if s in boundary_scales else {**meter_options, "boundary": False}))
                           for t in tasks} for s in scales} for p in protocols}
    save_dir = Path(save_dir) if save_dir else None
    if save_dir:
        save_dir.mkdir(parents=True, exist_ok=True)
    for batch in tqdm(loader, disable=not (progress and is_main()), desc="eval", leave=False):
        x = to_memory_format(batch["image"].to(device), channels_last)
        with autocast(device, amp):
            out = net(x)  # the bare module: no DDP collectives, so ranks with fewer batches cannot hang
        decoded = {}
        for i, p in enumerate(protocols):
            labels = batch["labels"] if i == 0 else batch["protocol_labels"][p.name]
            for t in tasks:
                label = labels[t].to(device)
                for s in scales:
                    pred = p.task(t).decode(p.resize(out[t][s].float(), label.shape[-2:]))
                    meters[p.name][s][t].update(pred, label)
                    if i == 0 and s == eval_scale:
                        decoded[t] = pred
        if save_dir:
            for i, sid in enumerate(batch["id"]):
                arrays = {t: decoded[t][i].cpu().numpy() for t in tasks if t in decoded}
                name = str(sid).replace("/", "_")
                np.savez_compressed(save_dir / f"{name}.npz", **arrays)
    results: dict = {}
    for p in protocols:
        results[p.name] = {}
        for s, by_task in meters[p.name].items():
            results[p.name][s] = {}
            for t, m in by_task.items():
                m.all_reduce()
                results[p.name][s][t] = m.compute()
    if is_main() and eval_scale in scales:  # what the metrics hide, for the run's protocol
        for m in meters[protocols[0].name][eval_scale].values():
            for line in m.diagnostics():
                warnings.warn(f"evaluation: {line}", stacklevel=1)
    model.train(was_training)
    return results
