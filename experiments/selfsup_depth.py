"""Does self-supervised depth learn? Train semseg + disparity (Monodepth2 objective) on
procedural sequences and compare the median-scaled AbsRel of the depth before and after.

    python experiments/selfsup_depth.py [--iterations 400] [--pose network|dataset] [--motion lateral]

``--pose network`` learns the camera motion with the pose network (the paper's setting);
``--pose dataset`` uses the sequences' known motion, which isolates the depth objective.
The network follows the Table 5 presets where they apply to training from scratch: 3x3
disparity convs (Monodepth2's decoder), Adam betas (0.9, 0.999); the presets' learning rates
(1e-5 / 5e-5 / 1e-6) fine-tune Hoyer et al.'s pretrained model and are far too small for a
network trained from scratch in a few hundred iterations, so ``--lr`` / ``--lr-pose`` stay.
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
    ap.add_argument("--disparity-head", choices=["conv1x1", "conv3x3"], default="conv3x3",
                    help="prediction convs of the disparity (conv3x3: Monodepth2's, the Table 5 presets')")
    ap.add_argument("--beta2", type=float, default=0.999, help="Adam's beta2 (the Table 5 presets': 0.999)")
    ap.add_argument("--out", default="outputs/selfsup")
    args = ap.parse_args()
    out = Path(args.out)
    h, w = (int(v) for v in args.size.split("x"))
    data = out / f"data_{args.motion}"
    if not (data / "dataset.json").is_file():
        generate_dataset(data, num=args.num, size=(h, w), seed=0, progress=False, sequences=True, motion=args.motion)
    cfg = {
        "experiment": "selfsup", "run_name": f"{args.model}_{args.pose}_{args.motion}", "output_dir": str(out / "runs"), "tasks": "SP",
        "model": {"name": args.model, "backbone": "resnet18",
                  "options": {"supervised_scales": [0, 1, 2, 3], "mteb_scales": [], "disparity_head": args.disparity_head}},
        "data": {"dataset": "procedural", "root": str(data), "batch_size": 4, "val_batch_size": 16, "num_workers": 0},
        "selfsup": {"enabled": True, "pose_source": args.pose, "lr_pose": args.lr_pose},
        "loss": {"options": {"weights": {"semseg": 1.0, "disparity": 1.0}}},
        "optim": {"name": "adam", "lr_backbone": args.lr, "lr_decoder": args.lr, "betas": [0.9, args.beta2]},
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
    res = {"pose": args.pose, "motion": args.motion, "iterations": args.iterations, "disparity_head": args.disparity_head,
           "betas": [0.9, args.beta2], "seconds": round(time.perf_counter() - t0, 1),
           "abs_rel_before": before["abs_rel"], "abs_rel_after": after["abs_rel"],
           "delta1_before": before["delta1"], "delta1_after": after["delta1"]}
    print(json.dumps(res, indent=2))
    (out / f"result_{args.pose}_{args.motion}.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    torch.set_num_threads(torch.get_num_threads())
    main()
