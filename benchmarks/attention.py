"""Fused vs explicit xTAM correlation attention: forward+backward time and peak memory.

Token counts are those of mTEB at decoder scale 1 (s = 4 on both sides, C = 128):
NYUDv2 576x448 -> 72x56 = 4032 tokens, Cityscapes 1024x512 -> 128x64 = 8192 tokens.
Prints both paths measured in the same run and their ratios.

    python benchmarks/attention.py [--batch 2] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # silence the profiler's log lines
import torch  # noqa: E402

from densemtl.models import attention, attention_reference

SIZES = {"NYUDv2 576x448": (448, 576), "Cityscapes 1024x512": (512, 1024)}


def peak_memory_of(fn) -> tuple[float, int]:
    """Run ``fn`` once; return (seconds, peak bytes allocated by tensors during the call)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - t0, torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # peak of the running sum of allocations/frees seen by the profiler
    events = sorted(
        [(e.time_range.start, e.self_cpu_memory_usage) for e in prof.events() if e.self_cpu_memory_usage != 0]
    )
    cur = peak = 0
    for _, m in events:
        cur += m
        peak = max(peak, cur)
    return dt, peak


def step(q, k, v, fused: bool):
    qs, ks, vs = (t.detach().requires_grad_(True) for t in (q, k, v))
    out = attention(qs, ks, vs, fused=fused)
    out.sum().backward()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--channels", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, d={args.channels}, fp32")
    print(f"{'input':<22} {'tokens':>7} {'explicit s':>10} {'fused s':>8} {'speed-up':>8} {'explicit MiB':>12} {'fused MiB':>9} {'mem ratio':>9}")
    for label, (h, w) in SIZES.items():
        n = (h // 2 // 4) * (w // 2 // 4)
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(args.batch, 1, n, args.channels, generator=g).to(dev) for _ in range(3))
        res = {}
        for fused in (False, True):
            step(q, k, v, fused)  # warm-up
            times = []
            for _ in range(args.repeats):
                t, _ = peak_memory_of(lambda: step(q, k, v, fused))
                times.append(t)
            _, mem = peak_memory_of(lambda: step(q, k, v, fused))
            res[fused] = (min(times), mem)
        (te, me), (tf, mf) = res[False], res[True]
        print(
            f"{label:<22} {n:>7} {te:>10.3f} {tf:>8.3f} {te / tf:>7.2f}x {me / 2**20:>12.1f} {mf / 2**20:>9.1f} {me / max(mf, 1):>8.1f}x"
        )


if __name__ == "__main__":
    main()
