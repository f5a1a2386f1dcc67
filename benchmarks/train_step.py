"""One DenseMTL training step: seconds/step, images/s and peak memory.

ResNet-101 (random init), batch 2, the real multi-scale losses with the paper's task weights,
gradient clipping at 10 and Adam, at a given resolution and task set; fp32 and bf16 autocast,
channels-last off and on. Each configuration runs in its own process so that peak memory
(peak RSS on CPU, peak allocated on GPU) is its own.

    python benchmarks/train_step.py --size 224x288 --tasks SD [--steps 3] [--threads 2]
    python benchmarks/train_step.py --size 448x576 --tasks SDN

Reference (the authors' implementation, same machine class, 2 threads, fp32): S-D at 224x288
2.68 s/step, 3.4 GiB; S-D-N at 448x576 32.4 s/step, 11.7 GiB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def one(args) -> dict:
    import resource

    import torch

    from densemtl.losses import create_weighting, task_losses
    from densemtl.models import create_model
    from densemtl.tasks import parse_task_set

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    h, w = (int(v) for v in args.size.split("x"))
    tasks = parse_task_set(args.tasks)
    torch.manual_seed(0)
    model = create_model(args.model, tasks, num_classes=40, backbone=args.backbone).to(dev).train()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    weighting = create_weighting("fixed", tasks)
    enc = list(model.encoder.parameters())
    ids = {id(p) for p in enc}
    opt = torch.optim.Adam([{"params": enc, "lr": 2e-4}, {"params": [p for p in model.parameters() if id(p) not in ids], "lr": 3e-4}],
                           betas=(0.9, 0.98))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, h, w, generator=g).to(dev)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    labels = {
        "semseg": torch.randint(0, 40, (args.batch, h, w), generator=g).to(dev),
        "depth": (torch.rand(args.batch, 1, h, w, generator=g) * 9 + 0.5).to(dev),
        "normals": torch.nn.functional.normalize(torch.randn(args.batch, 3, h, w, generator=g), dim=1).to(dev),
        "edges": (torch.rand(args.batch, 1, h, w, generator=g) < 0.1).float().to(dev),
    }
    labels = {t: labels[t] for t in tasks}
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.amp == "bf16")

    def step():
        opt.zero_grad(set_to_none=True)
        with amp:
            out = model(x)
        losses = task_losses(out, labels)
        weighting.backward(losses)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    sec = sorted(times)[len(times) // 2]
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"sec_per_step": sec, "images_per_sec": args.batch / sec, "peak_gib": peak / 2**30, "device": str(dev),
            "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="224x288", help="HxW")
    ap.add_argument("--tasks", default="SD")
    ap.add_argument("--model", default="densemtl")
    ap.add_argument("--backbone", default="resnet101")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--configs", default="fp32,fp32+cl,bf16,bf16+cl", help="comma list of fp32|bf16 with optional +cl")
    ap.add_argument("--_one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--amp", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--channels-last", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._one:
        print(json.dumps(one(args)))
        return
    print(f"{args.model} {args.backbone}, tasks {args.tasks}, {args.size} (HxW), batch {args.batch}, median of {args.steps} steps")
    print(f"{'config':<10} {'s/step':>8} {'images/s':>9} {'peak GiB':>9} {'vs fp32':>8}")
    base = None
    for c in args.configs.split(","):
        cmd = [sys.executable, __file__, "--_one", "--size", args.size, "--tasks", args.tasks, "--model", args.model,
               "--backbone", args.backbone, "--batch", str(args.batch), "--steps", str(args.steps)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if c.startswith("bf16"):
            cmd += ["--amp", "bf16"]
        if c.endswith("+cl"):
            cmd += ["--channels-last"]
        r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        base = base or r["sec_per_step"]
        print(f"{c:<10} {r['sec_per_step']:>8.2f} {r['images_per_sec']:>9.2f} {r['peak_gib']:>9.2f} {base / r['sec_per_step']:>7.2f}x")
    print(f"device {r['device']}, {r['threads']} threads")


if __name__ == "__main__":
    main()
