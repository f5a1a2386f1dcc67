"""Warm start of a fresh run: weights from ``train.init_from`` (whole model or
``train.init_parts``) and data-driven initial biases of the prediction heads."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from ..tasks import Task, get_task
from .checkpoint import CheckpointError, check_model_config, load_checkpoint, load_parts, load_weights

# parts of train.init_parts that are not model weights (they belong to an objective)
NON_MODEL_PARTS = ("posenet",)


def load_init_checkpoint(cfg: DictConfig) -> dict | None:
    """The ``train.init_from`` checkpoint, or ``None``."""
    return load_checkpoint(cfg.train.init_from) if cfg.train.init_from else None


def init_model(model: torch.nn.Module, checkpoint: dict | None, parts, decoder_source: str | None = None,
               log=print) -> None:
    """Load the whole model (same architecture, checked) or only ``parts`` from ``checkpoint``;
    with ``decoder_source`` (``train.init_decoder_source``) the decoders named in ``parts`` come
    from that task's decoder of the checkpoint (:func:`shared_decoder_parts`)."""
    if checkpoint is None:
        return
    if parts is None:
        if decoder_source:
            raise CheckpointError("train.init_decoder_source needs train.init_parts naming the decoders to "
                                  "initialise, e.g. [encoder, decoders, posenet]")
        check_model_config(checkpoint, model.model_config, "init_from checkpoint")
        load_weights(model, checkpoint["model"], checkpoint["path"])
        return
    parts = [p for p in parts if p not in NON_MODEL_PARTS]
    state = checkpoint["model"]
    if decoder_source:
        parts, state, lines = shared_decoder_parts(model, state, parts, decoder_source, checkpoint["path"])
        for line in lines:
            log(f"init_from {checkpoint['path']}: {line}")
    if parts:
        load_parts(model, state, parts, checkpoint["path"])


def shared_decoder_parts(model: torch.nn.Module, state: dict, parts: list[str], source: str, where: str = "checkpoint"):
    """``(parts, state, report)`` initialising every decoder named in ``parts`` (``decoders``,
    ``decoders.T`` or a part inside one) from the checkpoint's ``decoders.<source>``: its ASPP and
    conv blocks for every task, its prediction heads only for ``source`` itself (another task's
    heads predict another quantity: they start afresh). Loading stays strict: every tensor of
    each rewritten part must be in ``decoders.<source>`` with the same shape. This is how the
    released code loads Hoyer et al.'s depth decoder into every task decoder (Table 5)."""
    prefix = f"decoders.{source}."
    have = sorted({k.split(".")[1] for k in state if k.startswith("decoders.")})
    if not any(k.startswith(prefix) for k in state):
        raise CheckpointError(f"train.init_decoder_source: {where} has no '{source}' decoder (its decoders: "
                              f"{', '.join(have) or 'none'})")
    out_parts, extra, report = [], {}, []
    for part in parts:
        p = part.split(".")
        if p[0] != "decoders":
            out_parts.append(part)
            continue
        targets = [p[1]] if len(p) > 1 else list(model.decoders)
        for t in targets:
            if t not in model.decoders:
                raise CheckpointError(f"train.init_parts: the model has no decoder {t!r}; decoders: {', '.join(model.decoders)}")
            if len(p) > 2:
                if p[2] == "heads" and t != source:
                    raise CheckpointError(f"train.init_parts: {part}: the prediction heads of '{t}' cannot come from the "
                                          f"'{source}' decoder (train.init_decoder_source): they predict another quantity")
                subs = [".".join(p[2:])]
            else:
                subs = [c for c in model.decoders[t]._modules if c != "heads" or t == source]
            for sub in subs:
                out_parts.append(f"decoders.{t}.{sub}")
                for k, v in state.items():
                    if k == prefix + sub or k.startswith(prefix + sub + "."):
                        extra[f"decoders.{t}.{k[len(prefix):]}"] = v
            if len(p) > 2:
                what = subs[0]
            elif t == source:
                what = "ASPP, conv blocks and prediction heads"
            else:
                what = "ASPP and conv blocks; its prediction heads start afresh"
            report.append(f"decoders.{t} <- decoders.{source} ({what})")
    return out_parts, {**state, **extra}, report


def decoder_initialised(task: str, checkpoint: dict | None, parts, decoder_source: str | None = None) -> bool:
    """Whether the init checkpoint already filled ``task``'s prediction heads (their biases are
    then kept); with ``decoder_source`` only the source task's heads come from the checkpoint."""
    if decoder_source and parts is not None and task != decoder_source:
        return False
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
