"""``densemtl models``: table of registered models with parameter counts."""

from __future__ import annotations

import torch

from ..models import count_parameters, create_model, list_models, model_description, model_options
from ..tasks import get_task, parse_task_set


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list registered models with parameter counts")
    p.add_argument("--tasks", default="SDN", help="task set, e.g. SD, SDN, SDNE (default SDN)")
    p.add_argument("--backbone", default="resnet101", help="timm backbone (default resnet101)")
    p.add_argument("--num-classes", type=int, default=40, help="semantic classes (default 40, NYUDv2)")
    p.add_argument("--options", action="store_true", help="also list each model's options")
    p.set_defaults(func=run)


def parameter_table(tasks, backbone: str, num_classes: int) -> list[dict]:
    """One row per registered model: parameters (on the meta device, nothing allocated)."""
    tasks = parse_task_set(tasks)
    rows = []
    for name in list_models():
        with torch.device("meta"):
            if name == "stl":
                models = [create_model(name, [t], num_classes, backbone) for t in tasks]
            else:
                models = [create_model(name, tasks, num_classes, backbone)]
        total = sum(count_parameters(m) for m in models)
        enc = sum(count_parameters(m.encoder) for m in models)
        rows.append({
            "name": name, "params": total, "encoder": enc, "heads": total - enc,
            "networks": len(models), "scales": models[0].supervised_scales,
            "description": model_description(name),
        })
    return rows


def run(args) -> int:
    tasks = parse_task_set(args.tasks)
    code = "-".join(get_task(t).letter for t in tasks)
    rows = parameter_table(tasks, args.backbone, args.num_classes)
    print(f"Registered models for task set {code}, backbone {args.backbone}, {args.num_classes} classes")
    print(f"{'model':<12} {'params':>10} {'encoder':>10} {'decoders':>10} {'nets':>4}  {'sup. scales':<11}  description")
    for r in rows:
        print(
            f"{r['name']:<12} {r['params'] / 1e6:>9.2f}M {r['encoder'] / 1e6:>9.2f}M {r['heads'] / 1e6:>9.2f}M "
            f"{r['networks']:>4}  {str(r['scales']):<11}  {r['description']}"
        )
        if args.options:
            for k, v in model_options(r["name"]).items():
                print(f"{'':<14}{k} = {v!r}")
    print("(stl: one network per task, counts summed; params = learnable parameters)")
    return 0
