"""``densemtl demo``: train and compare STL, MTL, 3-ways PAD-Net and DenseMTL (S-D-N) on the
bundled procedural dataset at a small scale, print a Table-1-style comparison with Delta and
write a qualitative figure. Runs on a CPU in about 10 minutes (2 cores)."""

from __future__ import annotations

import time
from pathlib import Path

from .args import out_dir

DEMO_METHODS = (("stl_semseg", "stl", "S"), ("stl_depth", "stl", "D"), ("stl_normals", "stl", "N"),
                ("mtl", "mtl", "SDN"), ("padnet3ways", "padnet3ways", "SDN"), ("densemtl", "densemtl", "SDN"))
# --uda: procedural source (default style) -> target (shifted style), task set S-D (Table 6 rows)
UDA_METHODS = (("stl_uda_semseg", "stl", "S", True), ("stl_uda_depth", "stl", "D", True),
               ("mtl_source", "mtl", "SD", False), ("mtl_uda", "mtl", "SD", True),
               ("densemtl_source", "densemtl", "SD", False), ("densemtl_uda", "densemtl", "SD", True))


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="small end-to-end comparison on the bundled procedural dataset")
    p.add_argument("--out", default=None, type=out_dir, help="output folder (default outputs/demo, or outputs/demo_uda with --uda)")
    p.add_argument("--iterations", type=int, default=120)
    p.add_argument("--num-images", type=int, default=600)
    p.add_argument("--size", default="80x64", help="WxH (default 80x64)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reuse", action="store_true", help="reuse finished runs in --out instead of retraining")
    p.add_argument("--uda", action="store_true",
                   help="domain adaptation instead: source-only vs adversarial UDA (S-D) from the default to the "
                        "'shifted' procedural style, evaluated on the shifted domain (default --out outputs/demo_uda), "
                        "with the Table 6 presets' alignment (mean over pairs, flip, source split all, median-scaled depth)")
    p.add_argument("--uda-depth-map", choices=["minmax", "ratio"], default="minmax",
                   help="--uda: depth map of the depth discriminator (default minmax, the Table 6 presets'; docs/uda.md)")
    p.set_defaults(func=run)


def demo_config(name, model, tasks, args, data_root, out, target_root=None, adversarial=False):
    from ..config import config_from_dict

    w, h = (int(v) for v in args.size.lower().split("x"))
    n = int(args.iterations)
    extra, data = {}, {}
    if target_root is not None:  # the Table 6 presets' alignment (configs/_base_/uda/adversarial.yaml, recipe.yaml)
        extra["uda"] = {"target": {"dataset": "procedural", "root": str(target_root), "size": [h, w]}, "adversarial": adversarial,
                        "reduction": "mean", "depth_map": getattr(args, "uda_depth_map", "minmax"), "normals_map": "unit",
                        "flip": True,
                        "depth_ref": 3.0}  # depth_map ratio: indoor scenes, 3 m -> 0.5 in the depth discriminator's input
        extra["eval"] = {"depth_median_scaling": True}
        data = {"train_split": "all"}  # the source's whole set
    return config_from_dict({**extra,
        "experiment": "demo", "run_name": name, "output_dir": str(out / "runs"), "seed": args.seed, "tasks": tasks,
        "model": {"name": model, "backbone": args.backbone, "pretrained": False},
        "data": {"dataset": "procedural", "root": str(data_root), "size": [h, w], "batch_size": args.batch_size,
                 "val_batch_size": 32, "num_workers": 0, **data},
        # one recipe for every method at this scale (random init, short schedule)
        "optim": {"name": "adam", "lr_backbone": 1e-3, "lr_decoder": 1e-3, "betas": [0.9, 0.98], "clip_grad_norm": 10.0},
        "schedule": {"iterations": n, "milestones": [max(1, int(n * 0.8))], "gamma": 0.1},
        "train": {"log_every": 10, "eval_every": n, "checkpoint_every": n, "image_every": n, "progress": True},
    })


def run(args) -> int:
    import torch

    from ..data import create_dataset
    from ..data.synth import generate_dataset
    from ..engine import Trainer, load_checkpoint
    from ..engine.report import build_table, load_run, to_csv, to_markdown
    from ..models import model_from_config
    from ..tasks import get_task
    from ..viz import save_grid

    t_start = time.perf_counter()
    out = Path(args.out or ("outputs/demo_uda" if args.uda else "outputs/demo"))
    data_root = out / "data"
    w, h = (int(v) for v in args.size.lower().split("x"))
    if not (data_root / "dataset.json").is_file():
        print(f"[demo] generating {args.num_images} procedural scenes ({w}x{h}) in {data_root} ...")
        generate_dataset(data_root, num=args.num_images, size=(h, w), seed=args.seed, progress=False)
    target_root = None
    if args.uda:
        target_root = out / "data_shifted"
        if not (target_root / "dataset.json").is_file():
            print(f"[demo] generating {args.num_images} procedural scenes in the 'shifted' style in {target_root} ...")
            generate_dataset(target_root, num=args.num_images, size=(h, w), seed=args.seed + 1, style="shifted", progress=False)
    print(f"[demo] data: {data_root} (procedural indoor scenes, 8 classes); threads: {torch.get_num_threads()}")
    run_dirs = []
    methods = UDA_METHODS if args.uda else [m + (False,) for m in DEMO_METHODS]
    for name, model, tasks, adversarial in methods:
        cfg = demo_config(name, model, tasks, args, data_root, out, target_root, adversarial)
        run_dir = Path(cfg.output_dir) / "demo" / name
        done = (run_dir / "checkpoints" / "last.pt").is_file() and '"type": "eval"' in (run_dir / "metrics.jsonl").read_text() \
            if (run_dir / "metrics.jsonl").is_file() else False
        if args.reuse and done:
            print(f"[demo] {name}: reusing {run_dir}")
        else:
            t0 = time.perf_counter()
            print(f"[demo] training {name} ({model}, tasks {tasks}, {args.backbone}, {args.iterations} iterations) ...")
            if run_dir.exists():
                import shutil

                shutil.rmtree(run_dir)
            Trainer(cfg, run_dir=run_dir).train()
            print(f"[demo] {name} done in {time.perf_counter() - t0:.0f} s")
        run_dirs.append(run_dir)
    table = build_table([load_run(d) for d in run_dirs])
    md = to_markdown(table)
    (out / "table.md").write_text(md + "\n")
    (out / "table.csv").write_text(to_csv(table))
    if args.uda:
        print("\n" + md + "\n")
        print(f"[demo] source: procedural default style, target: 'shifted' style (evaluated on its val split), {w}x{h}, "
              f"{args.backbone} from scratch, {args.iterations} iterations; Delta vs STL-UDA.")
        print(f"[demo] outputs: {out}/table.md, {out}/table.csv, runs in {out}/runs/demo/")
        print(f"[demo] total time {time.perf_counter() - t_start:.0f} s")
        return 0
    # qualitative figure: input, ground truth, each multi-task method's predictions
    val = create_dataset("procedural", data_root, "val", "SDN", size=(h, w))
    picks = [0, 1, 2]
    models = {}
    for d in run_dirs:
        ck = load_checkpoint(d / "checkpoints" / "last.pt")
        m = model_from_config(ck["model_config"])
        m.load_state_dict(ck["model"])
        models[d.name] = m.eval()
    rows, titles = [], []
    nc = val.num_classes
    for i in picks:
        s = val[i]
        x = s["image"][None]
        img = (s["image"].permute(1, 2, 0).numpy() * 255).astype("uint8")
        gt = [get_task(t).render(s["labels"][t], num_classes=nc) for t in ("semseg", "depth", "normals")]
        rows.append([img, *gt])
        titles.append(f"{s['id']} GT")
        for name in ("mtl", "padnet3ways", "densemtl"):
            with torch.no_grad():
                o = models[name](x)
            preds = [get_task(t).render(get_task(t).decode(o[t][0])[0], num_classes=nc) for t in ("semseg", "depth", "normals")]
            rows.append([img, *preds])
            titles.append(name)
    fig = save_grid(rows, out / "figure.png", row_titles=titles, col_titles=["input", "semseg", "depth", "normals"])
    print("\n" + md + "\n")
    print(f"[demo] procedural dataset, {w}x{h}, {args.backbone} from scratch, {args.iterations} iterations x batch "
          f"{args.batch_size}: a smoke-scale comparison, not the paper's numbers.")
    print(f"[demo] outputs: {out}/table.md, {out}/table.csv, {fig}, runs in {out}/runs/demo/ "
          f"(TensorBoard: tensorboard --logdir {out}/runs)")
    print(f"[demo] total time {time.perf_counter() - t_start:.0f} s")
    return 0
