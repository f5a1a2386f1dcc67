"""One DenseMTL training step: seconds/step, images/s and peak memory per configuration.

ResNet-101 (random init), batch 2, the real multi-scale losses with the paper's task weights,
gradient clipping at 10 and Adam: the trainer's step (``densemtl.engine.Trainer.step``) on a
fixed random batch. A configuration is a ``+``-joined list of levers:

    fp32 | bf16 | fp16   autocast precision (fp32: none)
    cl                   channels-last memory format (model and input)
    fused                the fused Adam kernel (optim.fused); without it PyTorch's default Adam
    compile              torch.compile (inductor) of the model, falling back to eager on failure
    ckpt                 activation checkpointing of the decoders and exchange blocks
    auto                 what `densemtl train` chooses on this machine (train.amp / channels_last /
                         compile / optim.fused = auto)

``fp32`` alone is the eager reference (densemtl's step before any lever); every ratio is
against it, measured in the same run. Each configuration runs in its own process (peak memory
is its own: peak RSS on CPU, peak allocated on GPU; "step GiB" on CPU is the peak RSS above the
RSS once the model, optimiser and batch are built, i.e. the step's activations, gradients and
optimiser state without the Python and PyTorch libraries), and the processes are interleaved over
``--rounds`` rounds (A B C A B C ...) so that a machine whose speed drifts affects all of them
alike; s/step is the median over all timed steps of all rounds. ``compile`` reports the extra
time of its first step in the first round (compilation) and in later rounds (inductor's cache,
``--cache-dir``).

    python benchmarks/train_step.py --size 224x288 --tasks SD --threads 2
    python benchmarks/train_step.py --size 448x576 --tasks SDN --threads 2 --rounds 2
    python benchmarks/train_step.py --configs fp32,fp32+fused+compile --backbone resnet18
    python benchmarks/train_step.py --profile fp32 --size 224x288     # top operators of one config
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

DEFAULT_CONFIGS = "fp32,fp32+fused,fp32+cl+fused,bf16+cl+fused,fp32+fused+ckpt,auto"
# where the hardware has no native bf16, bf16 runs 10-30x slower: left out unless asked for
NO_NATIVE_BF16_CONFIGS = "fp32,fp32+fused,fp32+cl+fused,fp32+fused+ckpt,auto"
LEVERS = ("fp32", "bf16", "fp16", "cl", "fused", "compile", "ckpt", "auto")


def parse_config(name: str) -> dict:
    parts = name.split("+")
    bad = [p for p in parts if p not in LEVERS]
    if bad:
        raise ValueError(f"unknown lever(s) {bad} in configuration '{name}'; levers: {', '.join(LEVERS)}")
    if "auto" in parts:
        return {"amp": "auto", "channels_last": "auto", "compile": "auto", "fused": "auto", "ckpt": "ckpt" in parts}
    amp = next((p for p in parts if p in ("bf16", "fp16")), None)
    return {"amp": amp, "channels_last": "cl" in parts, "compile": "compile" in parts, "fused": "fused" in parts,
            "ckpt": "ckpt" in parts}


def build(args):
    """The model, the step function and a description of the resolved settings."""
    import torch
    from omegaconf import OmegaConf

    from densemtl.config import config_from_dict
    from densemtl.engine import builders, fastpath
    from densemtl.losses import task_losses
    from densemtl.tasks import parse_task_set

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    h, w = (int(v) for v in args.size.split("x"))
    tasks = parse_task_set(args.tasks)
    c = parse_config(args.config)
    cfg = config_from_dict({"tasks": args.tasks, "model": {"name": args.model, "backbone": args.backbone},
                            "optim": {"fused": c["fused"]},
                            "train": {"amp": c["amp"], "channels_last": c["channels_last"], "compile": c["compile"],
                                      "activation_checkpointing": c["ckpt"]}})
    fast = fastpath.resolve(cfg, dev)  # as the trainer: Trainer.fast
    torch.manual_seed(0)
    net = fast.prepare(builders.build_model(cfg, 40 if "semseg" in tasks else None).to(dev).train())
    weighting = builders.build_weighting(cfg).to(dev)
    opt = builders.build_optimizer(cfg, net, weighting, fused=fast.fused)
    if fast.compile:
        fastpath.set_compile_cache(args.cache_dir)
    model = fast.wrap(net)
    scaler = torch.amp.GradScaler(dev.type, enabled=fast.amp == "fp16")
    g = torch.Generator().manual_seed(0)
    x = fast.inputs(torch.rand(args.batch, 3, h, w, generator=g).to(dev))
    labels = {
        "semseg": torch.randint(0, 40, (args.batch, h, w), generator=g).to(dev),
        "depth": (torch.rand(args.batch, 1, h, w, generator=g) * 9 + 0.5).to(dev),
        "normals": torch.nn.functional.normalize(torch.randn(args.batch, 3, h, w, generator=g), dim=1).to(dev),
        "edges": (torch.rand(args.batch, 1, h, w, generator=g) < 0.1).float().to(dev),
    }
    labels = {t: labels[t] for t in tasks}
    params = [p for grp in opt.param_groups for p in grp["params"]]

    from torch.profiler import record_function  # phase labels for --profile (no cost otherwise)

    def step():  # the trainer's step (densemtl.engine.Trainer.step) without data loading and logging
        opt.zero_grad(set_to_none=True)
        with record_function("phase: forward"), fast.autocast(dev):
            out = model(x)
        with record_function("phase: loss"):
            losses = task_losses(out, labels)
        with record_function("phase: backward"):
            weighting.backward(losses, scaler=scaler if scaler.is_enabled() else None)
        with record_function("phase: clip + optimizer"):
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            scaler.step(opt)
            scaler.update()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    settings = dict(fast.as_dict(), fused=bool(opt.defaults.get("fused")), ckpt=fast.checkpointing)
    return step, dev, settings


def _rss() -> int:
    """Resident memory of this process now, bytes (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def one(args) -> dict:
    import resource

    import torch

    t0 = time.perf_counter()
    step, dev, settings = build(args)
    rss_built = _rss()  # the model, optimiser and batch; a step's own memory is the peak above it
    t1 = time.perf_counter()
    step()  # warm-up (and compilation)
    first = time.perf_counter() - t1
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    step_peak = peak if dev.type == "cuda" else peak - rss_built
    return {"times": times, "first": first, "build": t1 - t0, "peak_gib": peak / 2**30, "step_gib": step_peak / 2**30,
            "device": str(dev),
            "threads": torch.get_num_threads(), "settings": settings}


def profile(args) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile as prof

    step, dev, settings = build(args)
    step()  # warm-up
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    t = time.perf_counter()
    with prof(activities=acts) as p:
        step()
    wall = time.perf_counter() - t
    events = [e for e in p.key_averages() if not e.key.startswith("phase: ")]
    phases = {e.key[7:]: e.cpu_time_total for e in p.key_averages() if e.key.startswith("phase: ")}
    total = sum(e.self_cpu_time_total for e in events)
    print(f"{args.config} ({settings}): {args.model} {args.backbone} {args.tasks} {args.size} batch {args.batch}, "
          f"{torch.get_num_threads()} threads, profiled step {wall:.2f} s")
    print(f"{'operator':<48} {'self s':>8} {'share':>7} {'calls':>6}")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
        print(f"{e.key[:48]:<48} {e.self_cpu_time_total / 1e6:>8.3f} {100 * e.self_cpu_time_total / total:>6.1f}% {e.count:>6}")
    groups = {"convolution (fwd+bwd)": ("conv",), "batch norm": ("batch_norm",), "reflection padding": ("reflection_pad",),
              "nearest upsampling": ("upsample_nearest",), "bilinear upsampling (loss)": ("upsample_bilinear",),
              "concatenation": ("aten::cat",), "ELU": ("elu",)}
    shares = {g: sum(e.self_cpu_time_total for e in events if any(k in e.key for k in keys)) / total
              for g, keys in groups.items()}
    print("operator groups (self time, forward + backward): " + ", ".join(f"{g} {100 * v:.1f}%" for g, v in shares.items()))
    whole = sum(phases.values())
    print("phases (forward and backward include the loss's own): " +
          ", ".join(f"{k} {v / 1e6:.2f} s ({100 * v / whole:.1f}%)" for k, v in phases.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="224x288", help="HxW")
    ap.add_argument("--tasks", default="SD")
    ap.add_argument("--model", default="densemtl")
    ap.add_argument("--backbone", default="resnet101")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per process (after one warm-up step)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (one process per configuration and round)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--configs", default=None, help=f"comma list (default {DEFAULT_CONFIGS}, without bf16 where the "
                                                    f"hardware has no native bf16); levers: {', '.join(LEVERS)}")
    ap.add_argument("--cache-dir", default=None, help="inductor cache for 'compile' (default: a fresh temporary folder, "
                                                      "so the first round measures a cold compile)")
    ap.add_argument("--profile", metavar="CONFIG", help="profile one step of CONFIG and print the top operators")
    ap.add_argument("--top", type=int, default=20, help="operators listed by --profile")
    ap.add_argument("--json", help="also write the results to this file")
    # one configuration in this process; also called as `--_one [--amp bf16] [--channels-last]`
    # (the earlier interface, used by benchmarks/compare_revisions.py)
    ap.add_argument("--_one", metavar="CONFIG", nargs="?", const="", help=argparse.SUPPRESS)
    ap.add_argument("--amp", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--channels-last", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._one is not None:
        args.config = args._one or ((args.amp or "fp32") + ("+cl" if args.channels_last else ""))
        d = one(args)
        d["sec_per_step"] = statistics.median(d["times"])
        print(json.dumps(d))
        return
    if args.profile:
        parse_config(args.profile)
        args.config = args.profile
        profile(args)
        return
    if args.configs is None:
        import torch

        from densemtl.engine.fastpath import native_bf16

        native = native_bf16(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        args.configs = DEFAULT_CONFIGS if native else NO_NATIVE_BF16_CONFIGS
        if not native:
            print("no native bf16 on this device: bf16 configurations left out (ask for them with --configs)")
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in configs:
        try:
            parse_config(c)
        except ValueError as e:
            ap.error(str(e))
    if "fp32" in configs:
        configs.remove("fp32")
    configs.insert(0, "fp32")  # the reference of the ratios
    tmp = None
    if args.cache_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="densemtl-inductor-")
        args.cache_dir = tmp.name
    print(f"{args.model} {args.backbone}, tasks {args.tasks}, {args.size} (HxW), batch {args.batch}; "
          f"{args.rounds} interleaved rounds x {args.steps} timed steps", flush=True)
    res = {c: {"times": [], "first": [], "peak": 0.0, "step": 0.0} for c in configs}
    info = {}
    for r in range(args.rounds):
        for c in configs:
            cmd = [sys.executable, os.path.abspath(__file__), "--_one", c, "--size", args.size, "--tasks", args.tasks,
                   "--model", args.model, "--backbone", args.backbone, "--batch", str(args.batch),
                   "--steps", str(args.steps), "--cache-dir", args.cache_dir]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode:
                sys.exit(f"configuration {c} failed:\n{p.stderr[-3000:]}")
            d = json.loads(p.stdout.strip().splitlines()[-1])
            res[c]["times"] += d["times"]
            res[c]["first"].append(d["first"])
            res[c]["peak"] = max(res[c]["peak"], d["peak_gib"])
            res[c]["step"] = max(res[c]["step"], d["step_gib"])
            res[c]["settings"] = d["settings"]
            info = d
            print(f"  round {r + 1} {c}: " + " ".join(f"{t:.2f}" for t in d["times"]) + f" s (first step {d['first']:.1f} s)",
                  flush=True)
    base = res["fp32"]
    base_s = statistics.median(base["times"])
    print()
    print("| configuration | resolved settings | s/step | images/s | vs fp32 | peak GiB | vs fp32 | step GiB | vs fp32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for c in configs:
        s = statistics.median(res[c]["times"])
        st = res[c]["settings"]
        desc = (f"{st['amp'] or 'fp32'}{', channels-last' if st['channels_last'] else ''}{', compile' if st['compile'] else ''}"
                f"{', fused Adam' if st['fused'] else ''}{', checkpointing' if st['ckpt'] else ''}")
        print(f"| {c} | {desc} | {s:.2f} | {args.batch / s:.2f} | {base_s / s:.2f}x | {res[c]['peak']:.2f} | "
              f"{res[c]['peak'] / base['peak']:.2f}x | {res[c]['step']:.2f} | {res[c]['step'] / base['step']:.2f}x |")
        res[c]["median"] = s
    for c in configs:
        if res[c]["settings"]["compile"]:
            med = res[c]["median"]
            cold, warm = res[c]["first"][0] - med, [f - med for f in res[c]["first"][1:]]
            print(f"{c}: compilation {cold:.0f} s (first round)" +
                  (f", {statistics.median(warm):.0f} s from the cache (later rounds)" if warm else ""))
    print(f"device {info['device']}, {info['threads']} threads")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if not k.startswith("_")}, "results": res}, f, indent=1)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
