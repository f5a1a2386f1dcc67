"""Golden losses: 10 training steps per model and per training objective, fixed seed.

A refactoring must not change what is computed. This script trains every model (stl, mtl,
padnet, padnet3ways, densemtl) and the self-supervised-depth and adversarial-UDA objectives for
10 steps on freshly generated procedural data (ResNet-18, 48x64, deterministic mode, one
thread) and records every logged loss of every step. Record before a change, check after it:

    python experiments/golden_losses.py --record golden.json     # on the old commit
    python experiments/golden_losses.py --check golden.json      # on the new commit (tol 1e-6)

The datasets are generated into a temporary folder each time (the generator is deterministic
per seed), so the check needs no files but the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import torch

STEPS = 10


def _dataset_name() -> str:
    from densemtl.data import list_datasets

    return "procedural" if "procedural" in list_datasets() else "nyud"


def _config(root, out, **over):
    cfg = {
        "experiment": "golden", "run_name": "r", "output_dir": str(out), "seed": 0, "tasks": "SD",
        "model": {"name": "densemtl", "backbone": "resnet18", "pretrained": False},
        "data": {"dataset": _dataset_name(), "root": str(root), "batch_size": 2, "num_workers": 0, "augment": True},
        "optim": {"name": "adam", "lr_backbone": 1e-4, "lr_decoder": 1e-4},
        "schedule": {"iterations": STEPS, "milestones": [STEPS]},
        "train": {"log_every": 1, "eval_every": 0, "checkpoint_every": 0, "progress": False, "deterministic": True,
                  # the precision defaults may become hardware-dependent: pin them
                  "amp": None, "channels_last": False},
    }
    for k, v in over.items():
        node = cfg
        *path, last = k.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = v
    return cfg


def _cases(sup, seq, src, tgt):
    yield "stl_semseg", sup, {"tasks": "S", "model.name": "stl"}
    yield "stl_depth", sup, {"tasks": "D", "model.name": "stl"}
    yield "mtl_SDN", sup, {"tasks": "SDN", "model.name": "mtl", "optim.name": "sgd"}
    yield "padnet_SDN", sup, {"tasks": "SDN", "model.name": "padnet"}
    yield "padnet3ways_SDNE", sup, {"tasks": "SDNE", "model.name": "padnet3ways"}
    yield "densemtl_SDN", sup, {"tasks": "SDN", "model.name": "densemtl"}
    yield "densemtl_SD_uncertainty", sup, {"tasks": "SD", "model.name": "densemtl", "loss.weighting": "uncertainty"}
    yield "selfsup_SP", seq, {"tasks": "SP", "model.name": "densemtl", "selfsup.enabled": True,
                              "model.options": {"supervised_scales": [0, 1, 2, 3]},
                              "loss.options": {"weights": {"semseg": 1.0, "disparity": 1.0}}}
    yield "uda_SD", src, {"tasks": "SD", "model.name": "densemtl", "uda.adversarial": True,
                          "uda.target.dataset": _dataset_name(), "uda.target.root": str(tgt), "train.eval_every": 0}


def run(out_dir: Path) -> dict:
    from densemtl.config import config_from_dict
    from densemtl.data.synth import generate_dataset
    from densemtl.engine.trainer import Trainer

    torch.set_num_threads(1)
    gen = dict(num=12, size=(48, 64), workers=1, progress=False)
    sup = generate_dataset(out_dir / "sup", seed=0, **gen)
    seq = generate_dataset(out_dir / "seq", seed=0, sequences=True, motion="lateral", **gen)
    tgt = generate_dataset(out_dir / "tgt", seed=1, style="shifted", **gen)
    results = {}
    for name, root, over in _cases(sup, seq, sup, tgt):
        cfg = config_from_dict(_config(root, out_dir / "runs", run_name=name, **over))
        trainer = Trainer(cfg, run_dir=out_dir / "runs" / name, hooks=[])
        steps = []
        for batch in _batches(trainer):
            logs = trainer.step(batch)
            trainer.iter += 1
            steps.append({k: float(v) for k, v in logs.items() if k == "loss" or k.startswith("loss/")})
            if trainer.iter >= STEPS:
                break
        trainer.run.close()
        results[name] = steps
        print(f"{name}: loss {steps[0]['loss']:.6f} -> {steps[-1]['loss']:.6f}", flush=True)
    return results


def _batches(trainer):
    epoch = 0
    while True:
        trainer.sampler.set_epoch(epoch, 0)
        trainer.train_set.set_epoch(epoch)
        yield from trainer.train_loader
        epoch += 1


def compare(ref: dict, new: dict, tol: float) -> list[str]:
    problems = []
    for name, steps in ref.items():
        if name not in new:
            problems.append(f"{name}: missing")
            continue
        for i, (a, b) in enumerate(zip(steps, new[name])):
            for k, va in a.items():
                vb = b.get(k)
                if vb is None:
                    problems.append(f"{name} step {i + 1}: {k} missing")
                elif not math.isclose(va, vb, rel_tol=tol, abs_tol=tol):
                    problems.append(f"{name} step {i + 1}: {k} {va!r} != {vb!r}")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--record", type=Path, help="write the losses to this JSON file")
    g.add_argument("--check", type=Path, help="compare with the losses in this JSON file")
    p.add_argument("--tol", type=float, default=1e-6, help="relative and absolute tolerance (default 1e-6)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        new = run(Path(d))
    if args.record:
        args.record.write_text(json.dumps({"torch": torch.__version__, "steps": STEPS, "losses": new}, indent=1))
        print(f"recorded {len(new)} cases to {args.record}")
        return 0
    ref = json.loads(args.check.read_text())["losses"]
    problems = compare(ref, new, args.tol)
    for line in problems:
        print(line)
    print(f"{len(ref)} cases, {sum(len(s) for s in ref.values())} steps: "
          f"{'all equal' if not problems else f'{len(problems)} differences'} (tol {args.tol:g})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
