"""A seeded, shardable sampler that can start mid-epoch (exact resume)."""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Epoch ``e`` visits ``randperm(n, seed + e)`` (or ``0..n-1`` without shuffling), sharded
    ``rank::world`` (padded by wrapping so every rank gets the same count when ``pad``), from
    position ``start``. Same order in every process and on every machine for the same seed.
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world: int = 1, pad: bool = True):
        self.n, self.seed, self.shuffle, self.rank, self.world, self.pad = n, int(seed), shuffle, rank, world, pad
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            idx = torch.randperm(self.n, generator=g).tolist()
        else:
            idx = list(range(self.n))
        if self.pad and self.world > 1 and idx and len(idx) % self.world:
            extra = self.world - len(idx) % self.world
            idx += [idx[i % len(idx)] for i in range(extra)]
        return idx[self.rank :: self.world]

    def __iter__(self):
        return iter(self._indices()[self.start :])

    def __len__(self) -> int:
        return max(0, len(self._indices()) - self.start)

    def per_epoch(self) -> int:
        return len(self._indices())
