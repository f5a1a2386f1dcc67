"""Does the fast default train the same model as eager fp32? The demo setting (DenseMTL S-D-N,
ResNet-18, procedural scenes at 80x64, batch 8, `densemtl demo`'s recipe) trained with

* ``fp32``: the eager reference: ``train.amp=null train.channels_last=false train.compile=false
  optim.fused=false``;
* ``fast``: what ``densemtl train`` picks on this machine (every switch ``auto``),

for several seeds, evaluated every ``--eval-every`` iterations. Prints, per logged iteration,
the training loss (mean ± std over seeds) of both, and the final validation metrics; a row
"agrees" when the two means differ by less than twice the standard error of their difference
(sqrt(s_fp32^2 / n + s_fast^2 / n)), i.e. within seed noise. Writes ``result.json`` and
``curves.png`` to ``--out``.

    python experiments/fast_vs_fp32.py [--seeds 3] [--iterations 120] [--out outputs/fast_vs_fp32]

Cost: 2 x seeds DenseMTL runs of the demo setting (about 3 minutes each on 2 idle cores at the
defaults, i.e. about 20 minutes for 3 seeds, plus generating the 600 scenes once).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

MODES = {
    "fp32": {"train.amp": None, "train.channels_last": False, "train.compile": False, "optim.fused": False},
    "fast": {"train.amp": "auto", "train.channels_last": "auto", "train.compile": "auto", "optim.fused": "auto"},
}


def config(args, data_root: Path, out: Path, mode: str, seed: int):
    from densemtl.config import config_from_dict

    w, h = (int(v) for v in args.size.lower().split("x"))
    n = int(args.iterations)
    d = {
        "experiment": mode, "run_name": f"seed{seed}", "output_dir": str(out / "runs"), "seed": seed, "tasks": "SDN",
        "model": {"name": "densemtl", "backbone": args.backbone, "pretrained": False},
        "data": {"dataset": "procedural", "root": str(data_root), "size": [h, w], "batch_size": args.batch_size,
                 "val_batch_size": 32, "num_workers": 0},
        "optim": {"name": "adam", "lr_backbone": 1e-3, "lr_decoder": 1e-3, "betas": [0.9, 0.98], "clip_grad_norm": 10.0},
        "schedule": {"iterations": n, "milestones": [int(n * 0.8)], "gamma": 0.1},
        "train": {"log_every": args.log_every, "eval_every": args.eval_every or n, "checkpoint_every": n,
                  "image_every": n, "progress": False},
    }
    for key, value in MODES[mode].items():
        section, name = key.split(".")
        d[section][name] = value
    return config_from_dict(d)


def mean_std(values):
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def agrees(a, b, n: int) -> bool:
    (ma, sa), (mb, sb) = a, b
    se = math.sqrt(sa**2 / n + sb**2 / n)
    return abs(ma - mb) <= 2 * se if se > 0 else ma == mb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=120)
    ap.add_argument("--eval-every", type=int, default=40)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--num-images", type=int, default=600)
    ap.add_argument("--size", default="80x64", help="WxH (the demo's)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--out", default="outputs/fast_vs_fp32")
    args = ap.parse_args()

    import torch

    from densemtl.data.synth import generate_dataset
    from densemtl.engine import Trainer
    from densemtl.engine.fastpath import resolve
    from densemtl.engine.rundir import MetricsLog

    t0 = time.perf_counter()
    out = Path(args.out)
    data_root = out / "data"
    w, h = (int(v) for v in args.size.lower().split("x"))
    if not (data_root / "dataset.json").is_file():
        print(f"generating {args.num_images} procedural scenes ({w}x{h}) in {data_root} ...", flush=True)
        generate_dataset(data_root, num=args.num_images, size=(h, w), seed=0, progress=False)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    fast = resolve(config(args, data_root, out, "fast", 0), device)
    print(f"fast default on this machine: {fast.describe()}", flush=True)
    logs = {m: {} for m in MODES}
    seconds = {m: [] for m in MODES}
    for seed in range(args.seeds):
        for mode in MODES:  # interleaved, so a machine whose speed drifts affects both alike
            cfg = config(args, data_root, out, mode, seed)
            t = time.perf_counter()
            trainer = Trainer(cfg)
            trainer.train()
            seconds[mode].append(time.perf_counter() - t)
            logs[mode][seed] = MetricsLog(trainer.run_dir / "metrics.jsonl").read()
            print(f"{mode} seed {seed}: {seconds[mode][-1]:.0f} s", flush=True)

    n = args.seeds
    train_rows, eval_rows = [], []
    iters = sorted({r["iter"] for r in logs["fp32"][0] if r["type"] == "train"})
    for it in iters:
        vals = {m: [next((r["loss"] for r in logs[m][s] if r["type"] == "train" and r["iter"] == it), None)
                    for s in range(n)] for m in MODES}
        a, b = mean_std(vals["fp32"]), mean_std(vals["fast"])
        train_rows.append({"iter": it, "fp32": a, "fast": b, "agrees": agrees(a, b, n)})
    evals = sorted({r["iter"] for r in logs["fp32"][0] if r["type"] == "eval"})
    keys = [k for k in next(r for r in logs["fp32"][0] if r["type"] == "eval")
            if "/" in k and isinstance(next(r for r in logs["fp32"][0] if r["type"] == "eval")[k], (int, float))]
    for it in evals:
        for k in keys:
            vals = {m: [next((r.get(k) for r in logs[m][s] if r["type"] == "eval" and r["iter"] == it), None)
                        for s in range(n)] for m in MODES}
            a, b = mean_std(vals["fp32"]), mean_std(vals["fast"])
            eval_rows.append({"iter": it, "metric": k, "fp32": a, "fast": b, "agrees": agrees(a, b, n)})

    print(f"\ntraining loss (mean ± std over {n} seeds)")
    print("| iteration | fp32 | fast | within seed noise |\n|---|---|---|---|")
    for r in train_rows:
        print(f"| {r['iter']} | {r['fp32'][0]:.4f} ± {r['fp32'][1]:.4f} | {r['fast'][0]:.4f} ± {r['fast'][1]:.4f} | "
              f"{'yes' if r['agrees'] else 'NO'} |")
    print(f"\nvalidation metrics (mean ± std over {n} seeds)")
    print("| iteration | metric | fp32 | fast | within seed noise |\n|---|---|---|---|---|")
    for r in eval_rows:
        print(f"| {r['iter']} | {r['metric']} | {r['fp32'][0]:.4f} ± {r['fp32'][1]:.4f} | "
              f"{r['fast'][0]:.4f} ± {r['fast'][1]:.4f} | {'yes' if r['agrees'] else 'NO'} |")
    n_ok = sum(r["agrees"] for r in train_rows + eval_rows)
    total = len(train_rows) + len(eval_rows)
    print(f"\n{n_ok}/{total} rows within seed noise (expected about 95 % by chance alone); "
          f"seconds per run: fp32 {statistics.median(seconds['fp32']):.0f}, fast {statistics.median(seconds['fast']):.0f}")
    res = {"fast_default": vars(fast), "seeds": n, "iterations": args.iterations, "train": train_rows, "eval": eval_rows,
           "seconds_per_run": {m: v for m, v in seconds.items()}, "total_seconds": round(time.perf_counter() - t0)}
    (out / "result.json").write_text(json.dumps(res, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for m, colour in (("fp32", "tab:blue"), ("fast", "tab:orange")):
            mu = [r[m][0] for r in train_rows]
            sd = [r[m][1] for r in train_rows]
            ax.plot(iters, mu, color=colour, label=f"{m} (mean of {n} seeds)")
            ax.fill_between(iters, [a - b for a, b in zip(mu, sd)], [a + b for a, b in zip(mu, sd)], color=colour, alpha=0.2)
        ax.set_xlabel("iteration")
        ax.set_ylabel("training loss")
        ax.set_yscale("log")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "curves.png", dpi=120)
    except ImportError:
        pass
    print(f"wrote {out / 'result.json'}")


if __name__ == "__main__":
    main()
