"""Seeded, disjoint train/val splits (Synthia, Virtual KITTI 2)."""

from __future__ import annotations

import numpy as np


def seeded_split(ids, split: str, seed: int = 0, train_fraction: float = 0.8) -> list:
    """One seeded permutation of the *sorted* ids; train = first 80 %, val = the rest.

    Identical across processes and machines for the same ids and seed (NumPy's PCG64).
    """
    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be 'train', 'val' or 'all', got '{split}'")
    ids = sorted(ids)
    if split == "all":
        return ids
    perm = np.random.Generator(np.random.PCG64(seed)).permutation(len(ids))
    n_train = int(round(train_fraction * len(ids)))
    chosen = perm[:n_train] if split == "train" else perm[n_train:]
    return [ids[i] for i in sorted(chosen)]
