"""The optimiser step alone: PyTorch's default Adam (``foreach``, or a per-parameter loop) vs
its fused kernel (``optim.fused``), on the parameters of a DenseMTL model.

Random gradients are set once; each round times one ``step()`` of every implementation in
turn (interleaved); the median over ``--rounds`` is reported with its ratio to the default.

    python benchmarks/optimizer_step.py --backbone resnet18 --tasks SD --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="resnet101")
    ap.add_argument("--tasks", default="SD")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    import torch

    from densemtl.models import create_model
    from densemtl.tasks import parse_task_set

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = create_model("densemtl", parse_task_set(args.tasks), num_classes=40, backbone=args.backbone)
    params = [p for p in net.parameters() if p.requires_grad]
    kinds = {"default (foreach)": {}, "for-loop": {"foreach": False}, "fused": {"fused": True}}
    opts = {}
    for name, kw in kinds.items():
        ps = [torch.nn.Parameter(p.detach().clone()) for p in params]
        for p in ps:
            p.grad = torch.randn_like(p) * 1e-3
        opts[name] = torch.optim.Adam(ps, lr=1e-4, betas=(0.9, 0.98), **kw)
        opts[name].step()  # state allocated
    times = {name: [] for name in kinds}
    for _ in range(args.rounds):
        for name, opt in opts.items():
            t = time.perf_counter()
            opt.step()
            times[name].append(time.perf_counter() - t)
    n = sum(p.numel() for p in params)
    base = statistics.median(times["default (foreach)"])
    print(f"Adam step on densemtl {args.backbone} {args.tasks}: {n / 1e6:.1f} M parameters in {len(params)} tensors, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds")
    print("| implementation | ms/step | vs default |\n|---|---|---|")
    for name in kinds:
        s = statistics.median(times[name])
        print(f"| {name} | {1e3 * s:.1f} | {base / s:.2f}x |")


if __name__ == "__main__":
    main()
