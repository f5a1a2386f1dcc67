"""``densemtl figure CKPT_OR_RUN... --data ROOT --images N --out fig.png``: the paper's
qualitative figure (input, ground truth and each model's prediction of every task, one row
per image, the models' names as column titles); see docs/figures.md."""

from __future__ import annotations

from .args import out_file, size_hw


def add_parser(sub) -> None:
    p = sub.add_parser("figure", help="qualitative figure: input, ground truth and each model's predictions")
    p.add_argument("models", nargs="+", metavar="CKPT_OR_RUN",
                   help="run directories (checkpoints/best.pt, else last.pt) or checkpoint files, converted ones included")
    p.add_argument("--data", required=True, metavar="ROOT", help="dataset root the images and ground truth come from")
    p.add_argument("--dataset", default=None,
                   help="dataset name (default: the first model's evaluation dataset: uda.target for UDA runs)")
    p.add_argument("--split", default=None, help="split (default: the first model's validation split)")
    p.add_argument("--images", type=int, default=4, metavar="N", help="number of images, spread evenly over the split (default 4)")
    p.add_argument("--size", type=size_hw, default=None, help="HxW working size (default: the first model's data.size)")
    p.add_argument("--names", default=None, help="comma-separated column names, one per model (default: the method names)")
    p.add_argument("--out", required=True, type=out_file, help="PNG file to write")
    p.set_defaults(func=run)


def model_name(ckpt: dict) -> str:
    """A checkpoint's short method name for a column title (``DenseMTL``, ``MTL``...), with the
    UDA setting of domain-adaptation runs and ``(released)`` for converted checkpoints of the
    authors' models; options are left out (``--names`` sets any title)."""
    from omegaconf import OmegaConf

    from ..config import config_from_dict
    from ..engine.report import METHOD_LABELS, domain_setting

    mc = ckpt["model_config"]
    name = METHOD_LABELS.get(mc.get("name"), str(mc.get("name")))
    if ckpt.get("config"):
        _, setting = domain_setting(OmegaConf.to_container(config_from_dict(ckpt["config"]), resolve=True))
        name += f" ({setting})" if setting else ""
    return name + (" (released)" if ckpt.get("converted_from") else "")


def unique_names(names: list[str], paths: list[str], tasks: list) -> list[str]:
    """Names made distinct by the run folder (or file) they come from where two models of the
    same name predict a common task (and so share a task's columns)."""
    from pathlib import Path

    def origin(p):
        p = Path(p)
        return p.parent.parent.name if p.parent.name == "checkpoints" else p.stem

    def clash(i):
        return any(j != i and names[j] == names[i] and set(tasks[i]) & set(tasks[j]) for j in range(len(names)))

    return [f"{n} ({origin(p)})" if clash(i) else n for i, (n, p) in enumerate(zip(names, paths))]


def run(args) -> int:
    import torch
    from omegaconf import OmegaConf

    from ..config import config_from_dict
    from ..data import create_dataset, get_dataset_class
    from ..engine import builders, load_checkpoint, model_from_checkpoint
    from ..tasks import canonical_tasks, get_task
    from ..viz import qualitative_figure, spread_indices

    ckpts = [load_checkpoint(m) for m in args.models]
    names = unique_names([model_name(c) for c in ckpts], [c["path"] for c in ckpts],
                         [c["model_config"]["tasks"] for c in ckpts])
    if args.names is not None:
        names = [n.strip() for n in args.names.split(",")]
        if len(names) != len(ckpts) or not all(names):
            raise ValueError(f"--names: expected {len(ckpts)} non-empty comma-separated names (one per model), got {args.names!r}")
    with_config = next((c for c in ckpts if c.get("config")), None)
    if with_config is None and not args.dataset:
        raise ValueError(f"{ckpts[0]['path']} holds no training config: give the dataset with --dataset (e.g. --dataset nyud)")
    cfg = config_from_dict(with_config["config"]) if with_config else None
    if cfg is not None and cfg.uda.target.dataset:
        cfg = builders.target_config(cfg)
    dataset = args.dataset or cfg.data.dataset
    cls = get_dataset_class(dataset)
    same = cfg is not None and cfg.data.dataset == dataset
    options = {k: v for k, v in ((OmegaConf.to_container(cfg.data.options) or {}) if same else {}).items()
               if k not in ("label_subset", "label_subset_others")}  # every label is drawn
    size = (tuple(int(v) for v in args.size.lower().split("x")) if args.size
            else tuple(cfg.data.size) if same and cfg.data.size else None)
    split = args.split or (cfg.data.val_split if cfg is not None else "val")
    tasks = {t for c in ckpts for t in c["model_config"]["tasks"]}
    labelled = [t for t in tasks if cls.provides(get_task(t).source)]
    if not labelled:
        raise ValueError(f"dataset '{dataset}' has no label of the models' tasks ({', '.join(sorted(tasks))})")
    ds = create_dataset(dataset, args.data, split, labelled, size=size, augment=False, **options)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    models = []
    for name, c in zip(names, ckpts):
        nc = c["model_config"].get("num_classes")
        if "semseg" in c["model_config"]["tasks"] and "semseg" in labelled and nc != ds.num_classes:
            raise ValueError(f"{c['path']} predicts {nc} classes, dataset {dataset} at {args.data} has {ds.num_classes}")
        models.append((name, model_from_checkpoint(c).to(device)))
    indices = spread_indices(len(ds), args.images)
    qualitative_figure(models, ds, indices, args.out, device)
    print(f"wrote {args.out}: {len(indices)} image(s) of {dataset}/{split} at {args.data}, "
          f"tasks {', '.join(canonical_tasks(tasks))}, "
          f"models {', '.join(names)}")
    return 0
