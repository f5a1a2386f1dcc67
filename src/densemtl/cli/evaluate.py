"""``densemtl eval RUN_DIR_OR_CHECKPOINT``: every metric of the model's tasks on a split."""

from __future__ import annotations

import json
from pathlib import Path

from .args import out_dir, out_file


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a run or checkpoint on a split")
    p.add_argument("target", help="run directory (uses checkpoints/best.pt, else last.pt) or checkpoint file")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. data.root=/elsewhere")
    p.add_argument("--split", default=None, help="split to evaluate (default: the run's validation split; for UDA runs "
                                                   "the target's, whose root is uda.target.root)")
    p.add_argument("--domain", choices=["auto", "source", "target"], default="auto",
                   help="UDA runs: evaluate on the target domain (auto) or on the source data")
    p.add_argument("--save-predictions", metavar="DIR", type=out_dir, help="write decoded predictions (<id>.npz) here")
    p.add_argument("--no-boundary", action="store_true", help="skip ODS/OIS edge F (slow)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--json", metavar="FILE", type=out_file, help="also write the metrics as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch
    from omegaconf import OmegaConf

    from ..config import apply_overrides, config_from_dict
    from ..engine import builders, load_checkpoint, model_from_checkpoint
    from ..engine.distributed import init_from_env, is_main
    from ..engine.evaluate import evaluate
    from ..fileio import naming

    ckpt = load_checkpoint(args.target)
    device = init_from_env()
    base = ckpt.get("config") or {"tasks": list(ckpt["model_config"]["tasks"])}
    cfg = apply_overrides(config_from_dict(base), args.overrides)
    if not ckpt.get("config") and not any(o.startswith("data.root=") for o in args.overrides):
        raise ValueError(f"{ckpt['path']} holds no training config: give the data, e.g. data.dataset=nyud data.root=/path")
    if args.batch_size:
        cfg.data.val_batch_size = args.batch_size
    model = model_from_checkpoint(ckpt)
    model.to(device)
    if cfg.uda.target.dataset and args.domain != "source":
        cfg = builders.target_config(cfg)
    elif args.domain == "target":
        raise ValueError(f"{ckpt['path']} is not a domain-adaptation run (no uda.target)")
    args.split = args.split or cfg.data.val_split
    ds = builders.build_dataset(cfg, args.split, train=False)
    if ds.num_classes != ckpt["model_config"].get("num_classes") and "semseg" in model.tasks:
        raise ValueError(f"the checkpoint predicts {ckpt['model_config']['num_classes']} classes, dataset "
                         f"{cfg.data.dataset} at {cfg.data.root} has {ds.num_classes}")
    loader, _ = builders.build_loader(ds, int(cfg.data.val_batch_size), False, 0, int(cfg.data.num_workers))
    opts = {**ds.meter_options(), "boundary": not args.no_boundary, "num_thresholds": int(cfg.eval.num_thresholds),
            "median_scaling": bool(cfg.eval.depth_median_scaling)}
    results = evaluate(model, loader, model.tasks, opts, device, progress=True, save_dir=args.save_predictions)
    if is_main():
        print(f"{ckpt['path']} on {cfg.data.dataset}/{args.split} at {cfg.data.root} ({len(ds)} images):")
        for t, metrics in results.items():
            shown = {k: round(v, 4) for k, v in metrics.items() if not k.startswith("IoU_")}
            print(f"  {t}: " + ", ".join(f"{k} {v}" for k, v in shown.items()))
        if args.json:
            with naming(args.json):
                Path(args.json).write_text(json.dumps({"checkpoint": ckpt["path"], "split": args.split, "metrics": results}, indent=2))
    return 0
