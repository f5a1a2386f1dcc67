"""Loader throughput on the procedural set (dataset `procedural`) at NYUDv2 size (576x448), 0 and 2 workers.

    python benchmarks/data.py [--num 64] [--batch 2] [--tasks SDNE]

Generates a temporary procedural set at 576x448, then iterates a DataLoader (training
augmentation on) and prints images/s for each worker count, and their ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from densemtl.data import collate, create_dataset
from densemtl.data.synth import generate_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--tasks", default="SDNE")
    ap.add_argument("--workers", default="0,2")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate_dataset(tmp, num=args.num, size=(448, 576), seed=0, progress=False)
        gen = time.perf_counter() - t0
        print(f"generated {args.num} scenes at 576x448 in {gen:.1f} s ({args.num / gen:.1f} images/s)")
        ds = create_dataset("procedural", tmp, "train", args.tasks, size=(448, 576))
        rates = {}
        for w in (int(x) for x in args.workers.split(",")):
            loader = torch.utils.data.DataLoader(ds, batch_size=args.batch, num_workers=w, collate_fn=collate,
                                                 shuffle=True, generator=torch.Generator().manual_seed(0),
                                                 persistent_workers=False)
            t0 = time.perf_counter()
            n = 0
            for batch in loader:
                n += batch["image"].shape[0]
            rates[w] = n / (time.perf_counter() - t0)
            print(f"workers={w}: {rates[w]:.1f} images/s ({n} images, tasks {args.tasks}, batch {args.batch})")
        ws = sorted(rates)
        if len(ws) > 1:
            print(f"speed-up {ws[-1]} vs {ws[0]} workers: {rates[ws[-1]] / rates[ws[0]]:.2f}x")


if __name__ == "__main__":
    main()
