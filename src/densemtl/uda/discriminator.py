"""Patch discriminators of output-level adversarial alignment (ADVENT-style, paper section 4.5)."""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm

WIDTHS = (64, 128, 256, 512)
KERNEL, STRIDE, PADDING = 4, 2, 1


def patch_output_size(size: int | tuple[int, ...], num_convs: int = len(WIDTHS) + 1):
    """Output size of :class:`PatchDiscriminator` for an input size (an int or ``(H, W)``).

    Each 4x4 convolution with stride 2 and padding 1 maps ``n -> floor((n + 2 - 4) / 2) + 1
    = floor(n / 2)``; five of them give ``n_out = floor(n / 32)`` (repeated flooring of
    halves equals one floor of ``n / 2^5``). Every intermediate size must stay >= 1, i.e.
    ``n >= 32``; smaller inputs raise ``ValueError``.

    Example: 512 x 1024 -> 16 x 32; 33 x 100 -> 1 x 3.
    """
    if isinstance(size, (tuple, list, torch.Size)):
        return tuple(patch_output_size(int(n), num_convs) for n in size)
    n = int(size)
    if n < 2 ** num_convs:
        raise ValueError(f"input size {n} is too small for the patch discriminator (at least {2 ** num_convs})")
    return n // 2 ** num_convs


class PatchDiscriminator(nn.Module):
    """Fully convolutional domain classifier over a dense map.

    Five 4x4 stride-2 convolutions (padding 1) with widths 64-128-256-512-1, each wrapped in
    spectral normalisation (``torch.nn.utils.parametrizations.spectral_norm``: one power
    iteration per forward in train mode), LeakyReLU(0.2) between them, none after the last.

    ``forward(x)``: ``(B, in_channels, H, W)`` -> patch logits ``(B, 1, H // 32, W // 32)``
    (see :func:`patch_output_size`); positive = "target" under the convention of
    :mod:`densemtl.uda.adversarial`.

    ``flip``: in training mode, mirror the whole input batch horizontally with probability 0.5
    at each call (one draw of the global torch generator per call), as the released
    discriminator does (``uda.flip``); gradients flow through the mirroring.
    """

    def __init__(self, in_channels: int, widths: Iterable[int] = WIDTHS, negative_slope: float = 0.2,
                 spectral: bool = True, flip: bool = False):
        super().__init__()
        if int(in_channels) < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.in_channels = int(in_channels)
        self.flip = bool(flip)
        chans = [self.in_channels, *[int(w) for w in widths], 1]
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:])):
            conv = nn.Conv2d(cin, cout, KERNEL, STRIDE, PADDING)
            layers.append(spectral_norm(conv) if spectral else conv)
            if i < len(chans) - 2:
                layers.append(nn.LeakyReLU(negative_slope, inplace=True))
        self.layers = nn.Sequential(*layers)
        self.num_convs = len(chans) - 1

    def convs(self) -> list[nn.Conv2d]:
        return [m for m in self.layers if isinstance(m, nn.Conv2d)]

    def output_size(self, size):
        return patch_output_size(size, self.num_convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        self.output_size(tuple(x.shape[-2:]))  # clear error for too small inputs
        if self.flip and self.training and bool(torch.rand(()) < 0.5):
            x = x.flip(-1)
        return self.layers(x)

    def extra_repr(self) -> str:
        return f"flip={self.flip}" if self.flip else ""


def discriminator_key(task: str, scale: int) -> str:
    """Key of the discriminator of ``task`` at output scale ``scale``: ``"{task}/{scale}"``."""
    return f"{task}/{int(scale)}"


def build_discriminators(tasks: Iterable[str], scales: Iterable[int] | Mapping[str, Iterable[int]],
                         in_channels: Mapping[str, int], **options) -> nn.ModuleDict:
    """One :class:`PatchDiscriminator` per task and per supervised output scale.

    Args:
        tasks: task names (e.g. ``("semseg", "depth")``).
        scales: output scales shared by every task (e.g. ``model.supervised_scales``), or a
            mapping ``{task: scales}``.
        in_channels: ``{task: channels of its alignment map}``, e.g. from
            :func:`densemtl.uda.maps.map_channels`.
        options: passed to :class:`PatchDiscriminator`.

    Returns:
        ``nn.ModuleDict`` keyed ``"{task}/{scale}"`` (:func:`discriminator_key`), in task order
        then increasing scale.
    """
    out = nn.ModuleDict()
    for t in tasks:
        task_scales = scales[t] if isinstance(scales, Mapping) else scales
        if t not in in_channels:
            raise KeyError(f"no discriminator input channels for task '{t}' (given: {sorted(in_channels)})")
        for s in sorted({int(s) for s in task_scales}):
            out[discriminator_key(t, s)] = PatchDiscriminator(in_channels[t], **options)
    if not len(out):
        raise ValueError("no discriminators: give at least one task and one scale")
    return out
