"""Warm start of a fresh run: weights from ``train.init_from`` (whole model or
``train.init_parts``) and data-driven initial biases of the prediction heads."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from ..tasks import Task, get_task
from .checkpoint import check_model_config, load_checkpoint, load_parts, load_weights

# parts of train.init_parts that are not model weights (they belong to an objective)
NON_MODEL_PARTS = ("posenet",)


def load_init_checkpoint(cfg: DictConfig) -> dict | None:
    """The ``train.init_from`` checkpoint, or ``None``."""
    return load_checkpoint(cfg.train.init_from) if cfg.train.init_from else None


def init_model(model: torch.nn.Module, checkpoint: dict | None, parts) -> None:
    """Load the whole model (same architecture, checked) or only ``parts`` from ``checkpoint``."""
    if checkpoint is None:
        return
    if parts is None:
        check_model_config(checkpoint, model.model_config, "init_from checkpoint")
        load_weights(model, checkpoint["model"], checkpoint["path"])
        return
    parts = [p for p in parts if p not in NON_MODEL_PARTS]
    if parts:
        load_parts(model, checkpoint["model"], parts, checkpoint["path"])


def decoder_initialised(task: str, checkpoint: dict | None, parts) -> bool:
    """Whether the init checkpoint already filled ``task``'s decoder (its biases are then kept)."""
    return checkpoint is not None and (parts is None or any(
        p in ("decoders", f"decoders.{task}") or p.startswith(f"decoders.{task}.") for p in parts))


def init_head_biases(model: torch.nn.Module, dataset, tasks, skip=(), n: int = 16) -> dict[str, float]:
    """Set each task's prediction biases to :meth:`Task.initial_bias` of the labels of the first
    ``n`` training images (read without augmentation; no RNG is consumed), e.g. the depth heads
    to the inverse-depth code of the median depth: like initialising a regression output at the
    target mean, it spares the network hundreds of steps of learning the code's offset.
    Tasks in ``skip`` keep theirs. Returns ``{task: bias}`` of the heads set."""
    wanted = [t for t in tasks if t not in skip and type(get_task(t)).initial_bias is not Task.initial_bias]
    if not wanted:
        return {}
    samples = [dataset.load(i)["labels"] for i in range(min(n, len(dataset)))]
    lo, hi = dataset.depth_range
    layers, done = model.prediction_layers(), {}
    for t in wanted:
        bias = get_task(t).initial_bias([s[t] for s in samples], min_depth=lo, max_depth=hi)
        if bias is None:
            continue
        for conv in layers.get(t, []):
            with torch.no_grad():
                conv.bias.fill_(bias)
        done[t] = bias
    return done
