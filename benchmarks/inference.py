"""DenseMTL inference throughput: PyTorch eager (fp32, bf16 autocast, channels-last) and onnxruntime.

Random-init DenseMTL (ResNet-101, S-D-N by default) in eval mode, batch 1, the exported graph's
outputs (every task's evaluated prediction at input resolution) at the NYUDv2 (448x576, 40
classes) and Cityscapes (512x1024, 16 classes) input sizes. Each configuration runs ``--warmup``
untimed and ``--iters`` timed forward passes; images/s is batch / median seconds, and each ratio is
against PyTorch fp32 measured in the same run. On a CPU shared with other work, use
``--threads 1``: with more threads than free cores, OpenMP barriers make timings erratic. onnxruntime runs the file written by
``densemtl.export.export_onnx`` (fixed size, TorchScript exporter, opset 17) with all graph
optimisations and the same number of threads as PyTorch.

    python benchmarks/inference.py [--backbone resnet101] [--iters 5] [--sizes nyud,cityscapes] [--threads N]
    python benchmarks/inference.py --sizes 224x288 --backbone resnet18 --configs fp32,onnxruntime
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

SIZES = {"nyud": ("NYUDv2", (448, 576), 40), "cityscapes": ("Cityscapes", (512, 1024), 16)}
CONFIGS = ("fp32", "bf16", "channels_last", "onnxruntime")


def parse_sizes(text: str) -> list[tuple[str, tuple[int, int], int]]:
    from densemtl.export import parse_size

    out = []
    for item in text.split(","):
        item = item.strip().lower()
        if item in SIZES:
            out.append(SIZES[item])
        else:
            h, w = parse_size(item)
            out.append(("", (h, w), 40))
    return out


def timed(fn, warmup: int, iters: int, sync) -> float:
    """Median seconds of ``iters`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_size(args, label, size, num_classes, dev) -> dict[str, float]:
    from densemtl.export import ExportModule, export_onnx
    from densemtl.models import create_model

    torch.manual_seed(0)
    model = create_model("densemtl", args.tasks, num_classes=num_classes, backbone=args.backbone).eval().to(dev)
    wrapper = ExportModule(model).eval()
    x = torch.rand(args.batch, 3, *size, generator=torch.Generator().manual_seed(0)).to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    res = {}
    for cfg in args.configs:
        if cfg == "onnxruntime":
            import onnxruntime as ort

            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "model.onnx")
                t0 = time.perf_counter()
                export_onnx(model.cpu(), path, size, batch=args.batch)
                model.to(dev)
                so = ort.SessionOptions()
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                so.intra_op_num_threads = torch.get_num_threads()
                want = ["CUDAExecutionProvider"] if dev.type == "cuda" else []
                providers = [p for p in want if p in ort.get_available_providers()] + ["CPUExecutionProvider"]
                sess = ort.InferenceSession(path, so, providers=providers)
                print(f"  [{label}] exported and loaded in {time.perf_counter() - t0:.0f} s ({sess.get_providers()[0]})",
                      flush=True)
                feed = {"image": x.cpu().numpy()}
                res[cfg] = timed(lambda: sess.run(None, feed), args.warmup, args.iters, lambda: None)
                del sess
            print(f"  [{label}] {cfg}: {res[cfg]:.3f} s/batch", flush=True)
            continue
        m, xin = wrapper, x
        if cfg == "channels_last":
            m = wrapper.to(memory_format=torch.channels_last)
            xin = x.contiguous(memory_format=torch.channels_last)
        amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg == "bf16")

        def run():
            with torch.no_grad(), amp:
                m(xin)

        res[cfg] = timed(run, args.warmup, args.iters, sync)
        if cfg == "channels_last":
            wrapper.to(memory_format=torch.contiguous_format)
        print(f"  [{label}] {cfg}: {res[cfg]:.3f} s/batch", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="resnet101")
    ap.add_argument("--tasks", default="SDN")
    ap.add_argument("--sizes", default="nyud,cityscapes", help="comma list of nyud, cityscapes or HxW")
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {', '.join(CONFIGS)}")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in args.configs if c not in CONFIGS]
    if bad:
        ap.error(f"unknown configs {bad}; choose from {', '.join(CONFIGS)}")
    if "fp32" not in args.configs:
        args.configs.insert(0, "fp32")  # the reference of the ratios
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sizes = parse_sizes(args.sizes)
    print(f"device {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}, DenseMTL {args.backbone} "
          f"{args.tasks}, batch {args.batch}, {args.warmup} warm-up + {args.iters} timed iterations (median)", flush=True)
    rows = []
    for label, size, k in sizes:
        name = f"{label} {size[0]}x{size[1]}".strip()
        res = bench_size(args, name, size, k, dev)
        rows.append((name, res))
    print()
    print(f"{'input (HxW)':<24} {'config':<14} {'s/batch':>8} {'images/s':>9} {'vs fp32':>8}")
    for name, res in rows:
        for cfg in args.configs:
            s = res[cfg]
            print(f"{name:<24} {cfg:<14} {s:>8.3f} {args.batch / s:>9.3f} {res['fp32'] / s:>7.2f}x")


if __name__ == "__main__":
    main()
