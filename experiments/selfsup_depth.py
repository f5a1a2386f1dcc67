"""Does self-supervised depth learn? Train semseg + disparity (Monodepth2 objective) on
procedural sequences and compare the median-scaled AbsRel of the depth before and after.

    python experiments/selfsup_depth.py [--iterations 400] [--pose network|dataset] [--motion lateral]

``--pose network`` learns the camera motion with the pose network (the paper's setting);
``--pose dataset`` uses the sequences' known motion, which isolates the depth objective.
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
    ap.add_argument("--iterations", type=int, default=400)
    ap.add_argument("--pose", choices=["network", "dataset"], default="network")
    ap.add_argument("--motion", choices=["random", "forward", "lateral"], default="lateral")
    ap.add_argument("--lr", type=float, default=1e-4, help="depth network (Monodepth2: 1e-4)")
    ap.add_argument("--lr-pose", type=float, default=1e-4, help="pose network (1e-3 diverged on lateral motion)")
    ap.add_argument("--num", type=int, default=300)
    ap.add_argument("--size", default="64x80", help="HxW")
    ap.add_argument("--model", default="densemtl")
    ap.add_argument("--out", default="outputs/selfsup")
    args = ap.parse_args()
    out = Path(args.out)
    h, w = (int(v) for v in args.size.split("x"))
    data = out / f"data_{args.motion}"
    if not (data / "dataset.json").is_file():
        generate_dataset(data, num=args.num, size=(h, w), seed=0, progress=False, sequences=True, motion=args.motion)
    cfg = {
        "experiment": "selfsup", "run_name": f"{args.model}_{args.pose}_{args.motion}", "output_dir": str(out / "runs"), "tasks": "SP",
        "model": {"name": args.model, "backbone": "resnet18", "options": {"supervised_scales": [0, 1, 2, 3], "mteb_scales": []}},
        "data": {"dataset": "procedural", "root": str(data), "batch_size": 4, "val_batch_size": 16, "num_workers": 0},
        "selfsup": {"enabled": True, "pose_source": args.pose, "lr_pose": args.lr_pose},
        "loss": {"options": {"weights": {"semseg": 1.0, "disparity": 1.0}}},
        "optim": {"name": "adam", "lr_backbone": args.lr, "lr_decoder": args.lr},
        "schedule": {"iterations": args.iterations, "milestones": [max(1, int(args.iterations * 0.8))]},
        "train": {"log_every": 20, "eval_every": args.iterations, "checkpoint_every": args.iterations, "progress": False},
    }
    run = out / "runs" / "selfsup" / cfg["run_name"]
    shutil.rmtree(run, ignore_errors=True)
    t0 = time.perf_counter()
    tr = Trainer(config_from_dict(cfg), run_dir=run)
    before = tr.evaluate()["disparity"]
    tr.train()
    after = tr.evaluate()["disparity"]
    res = {"pose": args.pose, "motion": args.motion, "iterations": args.iterations, "seconds": round(time.perf_counter() - t0, 1),
           "abs_rel_before": before["abs_rel"], "abs_rel_after": after["abs_rel"],
           "delta1_before": before["delta1"], "delta1_after": after["delta1"]}
    print(json.dumps(res, indent=2))
    (out / f"result_{args.pose}_{args.motion}.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    torch.set_num_threads(torch.get_num_threads())
    main()
