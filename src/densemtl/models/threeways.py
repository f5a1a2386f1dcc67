"""Network with one 3-ways decoder per task and optional exchange modules between stages."""

from __future__ import annotations

import torch
import torch.nn as nn

from .base import ModelOutput, MultiTaskModel
from .decoder import DECODER_WIDTHS, HEAD_KINDS, ThreeWayDecoder
from .encoder import Encoder
from .recompute import recompute


class ThreeWayNet(MultiTaskModel):
    """Shared encoder, per-task 3-ways decoders, ``exchanges`` keyed by decoder scale.

    Predictions at a supervised scale are taken from the features *before* that scale's
    exchange module (the paper supervises "before any mTEB and at full resolution").
    With activation checkpointing, each decoder stage and exchange module is recomputed in
    the backward pass (:func:`~densemtl.models.recompute.recompute`).
    """

    supports_activation_checkpointing = True

    def __init__(self, tasks, num_classes, backbone, pretrained, supervised_scales, input_norm="imagenet",
                 disparity_head="conv1x1"):
        super().__init__(tasks, num_classes, supervised_scales, input_norm)
        bad = [s for s in self.supervised_scales if s not in range(5)]
        if bad:
            raise ValueError(f"supervised_scales must be within 0..4, got {list(supervised_scales)}")
        if disparity_head not in HEAD_KINDS:
            raise ValueError(f"disparity_head must be one of {', '.join(HEAD_KINDS)}, got {disparity_head!r}")
        self.encoder = Encoder(backbone, pretrained)
        # the self-supervised disparity may use Monodepth2's 3x3 prediction conv (Table 5 presets)
        heads = {t: disparity_head if t == "disparity" else "conv1x1" for t in self.tasks}
        self.decoders = nn.ModuleDict(
            {t: ThreeWayDecoder(self.encoder.channels, self.channels[t], self.supervised_scales, head=heads[t])
             for t in self.tasks}
        )
        self.exchanges = nn.ModuleDict()
        self.widths = DECODER_WIDTHS
        self.init_prediction_biases()

    def exchange_modules(self):
        return self.exchanges

    def prediction_layers(self):
        return {t: self.decoders[t].prediction_convs() for t in self.tasks}

    def forward(self, x: torch.Tensor) -> ModelOutput:
        self.check_input(x)
        feats = self.encoder(self.normalize(x))
        h: dict[str, torch.Tensor | None] = {t: None for t in self.tasks}
        out: ModelOutput = {t: {} for t in self.tasks}
        ckpt = self.activation_checkpointing and self.training
        for s in (4, 3, 2, 1, 0):
            if ckpt:
                h = {t: recompute(self.decoders[t], self.decoders[t].stage, s, h[t], feats) for t in self.tasks}
            else:
                h = {t: self.decoders[t].stage(s, h[t], feats) for t in self.tasks}
            if s in self.supervised_scales:
                for t in self.tasks:
                    out[t][s] = self.decoders[t].head(s, h[t])
            key = str(s)
            if key in self.exchanges:
                h = recompute(self.exchanges[key], self.exchanges[key], h) if ckpt else self.exchanges[key](h)
        return out
