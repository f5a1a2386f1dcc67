"""``densemtl eval RUN_DIR_OR_CHECKPOINT``: every metric of the model's tasks on a split, at
every supervised output scale (the evaluation scale first; ODS/OIS edge F at that scale only),
under the run's protocol, another one, or both side by side (``--protocol``)."""

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
    p.add_argument("--protocol", choices=["standard", "paper", "both"], default=None,
                   help="metrics of the standard definitions, of the authors' release (paper), or both side by side in "
                        "one pass (default: the run's protocol; docs/fidelity.md)")
    p.add_argument("--json", metavar="FILE", type=out_file, help="also write the metrics as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch
    from omegaconf import OmegaConf

    from ..config import apply_overrides, config_from_dict
    from ..engine import builders, load_checkpoint, model_from_checkpoint
    from ..engine.distributed import init_from_env, is_main
    from ..engine.evaluate import evaluate_all, scale_key
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
    protocols = protocols_to_run(args.protocol, cfg.protocol)
    cfg.protocol = protocols[0]  # its labels are the batches' `labels`
    ds = builders.build_dataset(cfg, args.split, train=False, extra_protocols=protocols[1:])
    if ds.num_classes != ckpt["model_config"].get("num_classes") and "semseg" in model.tasks:
        raise ValueError(f"the checkpoint predicts {ckpt['model_config']['num_classes']} classes, dataset "
                         f"{cfg.data.dataset} at {cfg.data.root} has {ds.num_classes}")
    loader, _ = builders.build_loader(ds, int(cfg.data.val_batch_size), False, 0, int(cfg.data.num_workers))
    opts = {**ds.meter_options(), "boundary": not args.no_boundary, "num_thresholds": int(cfg.eval.num_thresholds),
            "median_scaling": bool(cfg.eval.depth_median_scaling)}
    found = evaluate_all(model, loader, model.tasks, opts, device, progress=True, save_dir=args.save_predictions,
                         protocols=protocols)  # {protocol: {scale: {task: metrics}}}
    eval_scale = model.eval_scale
    scales = sorted(found[protocols[0]], key=lambda s: (s != eval_scale, s))
    if is_main():
        print(f"{ckpt['path']} on {cfg.data.dataset}/{args.split} at {cfg.data.root} ({len(ds)} images):")
        if len(protocols) > 1:
            print(side_by_side({p: {scale_key(s, eval_scale): found[p][s] for s in scales} for p in protocols}, model.tasks))
        else:
            print(f"  protocol: {protocols[0]}")
            for s in scales:
                if len(scales) > 1:
                    print(f" scale {s}" + (" (evaluation scale)" if s == eval_scale else ""))
                for t, metrics in found[protocols[0]][s].items():
                    shown = {k: round(v, 4) for k, v in metrics.items() if not k.startswith("IoU_")}
                    print(f"  {t}: " + ", ".join(f"{k} {v}" for k, v in shown.items()))
        if args.json:
            out = {"checkpoint": ckpt["path"], "split": args.split, "eval_scale": eval_scale}
            if len(protocols) == 1:
                out.update(protocol=protocols[0], metrics=found[protocols[0]][eval_scale],
                           scales={str(s): r for s, r in sorted(found[protocols[0]].items())})
            else:
                out["metrics_by_protocol"] = {p: found[p][eval_scale] for p in protocols}
                out["scales_by_protocol"] = {p: {str(s): r for s, r in sorted(found[p].items())} for p in protocols}
            with naming(args.json):
                Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


BOTH = ("standard", "paper")


def protocols_to_run(choice: str | None, run_protocol: str) -> list[str]:
    """``[primary, *others]``: the run's protocol by default, ``both`` = standard and paper
    (the run's own first: its labels are the batches' own)."""
    if choice is None:
        return [run_protocol]
    if choice == "both":
        return [run_protocol] + [p for p in BOTH if p != run_protocol] if run_protocol in BOTH else list(BOTH)
    return [choice]


def side_by_side(by_protocol: dict, tasks) -> str:
    """``{protocol: {prefix: {task: {metric: value}}}}`` (prefix: ``""`` for the evaluation
    scale, ``s<k>/`` for scale k, as in metrics.jsonl): one row per ``prefix task/metric``, one
    column per protocol (standard first); ``-`` where a protocol does not report the metric."""
    names = [p for p in BOTH if p in by_protocol] + [p for p in by_protocol if p not in BOTH]
    rows = []
    for prefix in by_protocol[names[0]]:
        for t in tasks:
            keys: list[str] = []
            for p in names:
                keys += [k for k in by_protocol[p][prefix][t] if k not in keys and not k.startswith("IoU_")]
            rows += [(f"{prefix}{t}/{k}", [by_protocol[p][prefix][t].get(k) for p in names]) for k in keys]
    width = max([len(r[0]) for r in rows] + [len("metric")])
    lines = [f"  {'metric':<{width}}  " + "  ".join(f"{p:>12}" for p in names)]
    for key, vals in rows:
        lines.append(f"  {key:<{width}}  " + "  ".join(f"{v:>12.4f}" if v is not None else f"{'-':>12}" for v in vals))
    return "\n".join(lines)
