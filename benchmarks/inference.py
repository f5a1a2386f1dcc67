"""DenseMTL inference throughput: PyTorch eager (fp32, bf16 autocast, channels-last), compiled
(``densemtl predict``'s compiled path: inductor with the weights frozen) and onnxruntime.

Random-init DenseMTL (ResNet-101, S-D-N by default) in eval mode, batch 1, the exported graph's
outputs (every task's evaluated prediction at input resolution) at the NYUDv2 (448x576, 40
classes) and Cityscapes (512x1024, 16 classes) input sizes. Each configuration runs ``--warmup``
untimed forward passes, then ``--iters`` rounds time one pass of every configuration in turn
(interleaved); images/s is batch / median seconds, and each ratio is against PyTorch fp32
measured in the same run. On a CPU shared with other work, use
``--threads 1``: with more threads than free cores, OpenMP barriers make timings erratic. onnxruntime runs the file written by
``densemtl.export.export_onnx`` (fixed size, TorchScript exporter, opset 17) with all graph
optimisations and the same number of threads as PyTorch. ``compile`` is what ``densemtl predict``
runs with ``--compile true`` (and by default on CUDA for 16 or more images of one size;
``densemtl.engine.fastpath.prepare_inference``:
channels-last, ``torch.compile`` with ``freezing``); its one-off compilation time is printed
(``--cache-dir``: inductor's cache, default a fresh temporary folder = a cold compile). Where
the hardware has no native bf16 the bf16 configurations are left out unless asked for: there
PyTorch has no bf16 convolution kernel and falls back to a reference one, 10-200x slower.

    python benchmarks/inference.py [--backbone resnet101] [--iters 5] [--sizes nyud,cityscapes] [--threads N]
    python benchmarks/inference.py --sizes 224x288 --backbone resnet18 --configs fp32,compile,onnxruntime
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

SIZES = {"nyud": ("NYUDv2", (448, 576), 40), "cityscapes": ("Cityscapes", (512, 1024), 16)}
CONFIGS = ("fp32", "bf16", "channels_last", "bf16+cl", "compile", "onnxruntime")


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


def interleaved(fns: dict, warmup: int, iters: int, sync) -> dict[str, float]:
    """Median seconds per call of each function: ``warmup`` untimed calls each, then ``iters``
    rounds calling every function once (A B C A B C ...), so that a machine whose speed drifts
    affects all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times = {k: [] for k in fns}
    for _ in range(iters):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_size(args, label, size, num_classes, dev) -> dict[str, float]:
    import copy

    from densemtl.engine.fastpath import FastPath, prepare_inference
    from densemtl.export import ExportModule, export_onnx
    from densemtl.models import create_model

    torch.manual_seed(0)
    model = create_model("densemtl", args.tasks, num_classes=num_classes, backbone=args.backbone).eval().to(dev)
    wrapper = ExportModule(model).eval()
    x = torch.rand(args.batch, 3, *size, generator=torch.Generator().manual_seed(0)).to(dev)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    fns = {}
    tmp = tempfile.TemporaryDirectory()
    for cfg in args.configs:
        if cfg == "onnxruntime":
            import onnxruntime as ort

            path = os.path.join(tmp.name, "model.onnx")
            t0 = time.perf_counter()
            export_onnx(model.cpu(), path, size, batch=args.batch)
            model.to(dev)
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.intra_op_num_threads = torch.get_num_threads()
            want = ["CUDAExecutionProvider"] if dev.type == "cuda" else []
            providers = [p for p in want if p in ort.get_available_providers()] + ["CPUExecutionProvider"]
            sess = ort.InferenceSession(path, so, providers=providers)
            print(f"  [{label}] onnxruntime: exported and loaded in {time.perf_counter() - t0:.0f} s "
                  f"({sess.get_providers()[0]})", flush=True)
            feed = {"image": x.cpu().numpy()}
            fns[cfg] = lambda sess=sess, feed=feed: sess.run(None, feed)
            continue
        m, xin = wrapper, x
        if cfg in ("channels_last", "bf16+cl"):
            m, xin = copy.deepcopy(wrapper).to(memory_format=torch.channels_last), x_cl
        if cfg == "compile":
            t0 = time.perf_counter()
            m, xin = prepare_inference(copy.deepcopy(wrapper), FastPath(channels_last=True, compile=True)), x_cl
            with torch.no_grad():
                m(xin)
            sync()
            print(f"  [{label}] compile: compiled in {time.perf_counter() - t0:.0f} s (with the first call)", flush=True)

        def run(m=m, xin=xin, bf16=cfg.startswith("bf16")):
            with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                m(xin)

        fns[cfg] = run
    res = interleaved(fns, args.warmup, args.iters, sync)
    tmp.cleanup()
    for cfg, s in res.items():
        print(f"  [{label}] {cfg}: {s:.3f} s/batch", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="resnet101")
    ap.add_argument("--tasks", default="SDN")
    ap.add_argument("--sizes", default="nyud,cityscapes", help="comma list of nyud, cityscapes or HxW")
    ap.add_argument("--configs", default=None, help=f"comma list of {', '.join(CONFIGS)} (default: all; bf16 ones "
                                                    f"only where the hardware has native bf16)")
    ap.add_argument("--cache-dir", default=None, help="inductor cache for 'compile' (default: a fresh temporary folder)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.configs is None:
        from densemtl.engine.fastpath import native_bf16

        args.configs = ",".join(c for c in CONFIGS if native_bf16(dev) or not c.startswith("bf16"))
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in args.configs if c not in CONFIGS]
    if bad:
        ap.error(f"unknown configs {bad}; choose from {', '.join(CONFIGS)}")
    if "fp32" not in args.configs:
        args.configs.insert(0, "fp32")  # the reference of the ratios
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    cache = None
    if "compile" in args.configs:
        if args.cache_dir is None:
            cache = tempfile.TemporaryDirectory(prefix="densemtl-inductor-")
            args.cache_dir = cache.name
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = args.cache_dir
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
    if cache is not None:
        cache.cleanup()


if __name__ == "__main__":
    main()
