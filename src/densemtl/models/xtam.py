"""xTAM: directional cross-task attention (paper section 3.1; docs/architecture.md).

``DirectionalXTAM(target f_i, source f_j) -> f_{j->i}``. The correlation-guided attention
uses fused scaled-dot-product attention (``F.scaled_dot_product_attention``), which never
materialises the ``N_q x N_k`` matrix; :func:`attention_reference` keeps the explicit
``softmax(Q K^T / sqrt(d)) V`` as the test oracle.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import SpatialGate, conv_bn_relu

ATTENTION_MODES = ("spatial", "channel", "both")
KV_DOWNSCALES = ("s", "s2")


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Explicit ``softmax(q k^T / sqrt(d)) v``; ``q (..., Lq, d)``, ``k, v (..., Lk, d|dv)``."""
    attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    return attn @ v


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, fused: bool = True) -> torch.Tensor:
    """Same contract as :func:`attention_reference`; ``fused`` uses the SDPA kernel."""
    if fused:
        return F.scaled_dot_product_attention(q, k, v)
    return attention_reference(q, k, v)


class CorrelationAttention(nn.Module):
    """Correlation-guided attention (paper Eqs. 1-2) with per-channel weights alpha (Eq. 4).

    Queries from the target features nearest-subsampled by ``s``; keys and values from the
    extracted source features max-pooled by ``s`` (``kv_downscale="s"``, as released) or
    ``s^2`` (``"s2"``, as in the paper's equations). Each projection is 1x1 conv + BN + ReLU.

    * spatial: tokens are positions, ``A = softmax(Q K^T / sqrt(C))`` over source positions;
      the output ``(B, C, h/s, w/s)`` is upsampled (nearest) back to ``(h, w)``.
    * channel: tokens are channels (DANet-style C x C affinity between target and source
      channels, softmax over source channels, scaled by ``1/sqrt(N)``); queries are taken at
      the key resolution, the output is upsampled back to ``(h, w)``.
    * both: the two outputs, each with its own alpha, returned in that order.

    ``forward`` returns a list of ``(B, C, h, w)`` tensors (one per mode).
    """

    def __init__(self, channels: int, s: int, kv_downscale: str = "s", mode: str = "spatial", alpha: bool = True):
        super().__init__()
        if mode not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got '{mode}'")
        if kv_downscale not in KV_DOWNSCALES:
            raise ValueError(f"kv_downscale must be one of {KV_DOWNSCALES}, got '{kv_downscale}'")
        self.s = int(s)
        self.s_kv = self.s if kv_downscale == "s" else self.s**2
        self.modes = ("spatial", "channel") if mode == "both" else (mode,)
        self.query = conv_bn_relu(channels, channels)
        self.key = conv_bn_relu(channels, channels)
        self.value = conv_bn_relu(channels, channels)
        if alpha:
            self.alpha = nn.ParameterDict({m: nn.Parameter(torch.zeros(1, channels, 1, 1)) for m in self.modes})
        else:
            self.alpha = None
        self.fused = True

    @property
    def num_outputs(self) -> int:
        return len(self.modes)

    def _down_q(self, x: torch.Tensor, size) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="nearest") if tuple(x.shape[-2:]) != tuple(size) else x

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> list[torch.Tensor]:
        B, C, h, w = target.shape
        hq, wq = max(h // self.s, 1), max(w // self.s, 1)
        q = self.query(self._down_q(target, (hq, wq)))
        kv_in = F.max_pool2d(source, self.s_kv, ceil_mode=True) if self.s_kv > 1 else source
        k, v = self.key(kv_in), self.value(kv_in)
        hk, wk = k.shape[-2:]
        outs = []
        for mode in self.modes:
            if mode == "spatial":
                qt = q.flatten(2).transpose(1, 2).unsqueeze(1)  # (B, 1, Nq, C)
                kt = k.flatten(2).transpose(1, 2).unsqueeze(1)
                vt = v.flatten(2).transpose(1, 2).unsqueeze(1)
                o = attention(qt, kt, vt, self.fused).squeeze(1).transpose(1, 2).reshape(B, C, hq, wq)
            else:
                qc = self._down_q(q, (hk, wk)).flatten(2).unsqueeze(1)  # (B, 1, C, Nk)
                o = attention(qc, k.flatten(2).unsqueeze(1), v.flatten(2).unsqueeze(1), self.fused)
                o = o.squeeze(1).reshape(B, C, hk, wk)
            o = F.interpolate(o, size=(h, w), mode="nearest")
            if self.alpha is not None:
                # in o's precision: an fp32 alpha would promote a bf16 map (autocast) to fp32, and
                # the concatenation after it with it (docs/performance.md); fp32: no-op
                o = o * self.alpha[mode].to(o.dtype)
            outs.append(o)
        return outs


class DirectionalXTAM(nn.Module):
    """xTAM_{j->i}: the directional feature from source task j to target task i.

    ``forward(target (B, C, h, w), source (B, C, h, w)) -> (B, C, h, w)``:
    ``g = ReLU(conv3x3(f_j))``; ``self = conv3x3(g) * sigmoid(conv3x3(g))`` (C -> C/2);
    ``xtask = alpha * CorrelationAttention(f_i, g)``;
    ``f_{j->i} = ReLU(BN(conv1x1([self, xtask])))``.
    """

    def __init__(
        self,
        channels: int,
        s: int,
        kv_downscale: str = "s",
        attention: str = "spatial",
        self_attention: bool = True,
        correlation_attention: bool = True,
        alpha: bool = True,
    ):
        super().__init__()
        if not (self_attention or correlation_attention):
            raise ValueError("xTAM needs self_attention or correlation_attention (or both) enabled")
        self.extract = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.self_attn = SpatialGate(channels, channels // 2) if self_attention else None
        self.corr = (
            CorrelationAttention(channels, s, kv_downscale, attention, alpha) if correlation_attention else None
        )
        in_ch = (channels // 2 if self_attention else 0) + (channels * self.corr.num_outputs if self.corr else 0)
        self.proj = conv_bn_relu(in_ch, channels)

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        if target.shape != source.shape:
            raise ValueError(f"xTAM target and source features must match, got {tuple(target.shape)} and {tuple(source.shape)}")
        g = self.extract(source)
        parts = []
        if self.self_attn is not None:
            parts.append(self.self_attn(g))
        if self.corr is not None:
            parts.extend(self.corr(target, g))
        return self.proj(torch.cat(parts, 1))
