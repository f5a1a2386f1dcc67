"""Does self-supervised depth learn? Train semseg + disparity (Monodepth2 objective, pose
network) on procedural sequences and compare the median-scaled AbsRel of the depth before and
after training.

    python experiments/selfsup_depth.py [--iterations 200] [--out outputs/selfsup]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from densemtl.config import config_from_dict
from densemtl.data.synth import generate_dataset
from densemtl.engine import Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--num", type=int, default=300)
    ap.add_argument("--size", default="64x80", help="HxW")
    ap.add_argument("--model", default="densemtl")
    ap.add_argument("--out", default="outputs/selfsup")
    args = ap.parse_args()
    out = Path(args.out)
    h, w = (int(v) for v in args.size.split("x"))
    data = out / "data"
    if not (data / "dataset.json").is_file():
        generate_dataset(data, num=args.num, size=(h, w), seed=0, progress=False, sequences=True)
    cfg = {
        "experiment": "selfsup", "run_name": args.model, "output_dir": str(out / "runs"), "tasks": "SP",
        "model": {"name": args.model, "backbone": "resnet18", "options": {"supervised_scales": [0, 1, 2, 3]}},
        "data": {"dataset": "nyud", "root": str(data), "batch_size": 4, "val_batch_size": 16, "num_workers": 0},
        "selfsup": {"enabled": True},
        "loss": {"options": {"weights": {"semseg": 1.0, "disparity": 1.0}}},
        "optim": {"name": "adam", "lr_backbone": 5e-4, "lr_decoder": 5e-4},
        "schedule": {"iterations": args.iterations, "milestones": [int(args.iterations * 0.8)]},
        "train": {"log_every": 20, "eval_every": args.iterations, "checkpoint_every": args.iterations, "progress": False},
    }
    run = out / "runs" / "selfsup" / args.model
    shutil.rmtree(run, ignore_errors=True)
    t0 = time.perf_counter()
    tr = Trainer(config_from_dict(cfg), run_dir=run)
    before = tr.evaluate()["disparity"]
    tr.train()
    after = tr.evaluate()["disparity"]
    res = {"iterations": args.iterations, "seconds": round(time.perf_counter() - t0, 1),
           "abs_rel_before": before["abs_rel"], "abs_rel_after": after["abs_rel"],
           "delta1_before": before["delta1"], "delta1_after": after["delta1"]}
    print(json.dumps(res, indent=2))
    (out / "result.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    torch.set_num_threads(torch.get_num_threads())
    main()
