"""``densemtl demo``: the fairest small comparison that fits in about 15 minutes on a 2-core
CPU: every method starts from one shared encoder (pretrained once on other procedural scenes
and cached), trains on the same data in the same order, and is compared with Delta against
the single-task networks; prints the table with a one-line note, writes a qualitative figure
and learning curves. ``--uda``: source-only vs adversarial domain adaptation instead."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from .args import out_dir

# name: (model, options, label); the supervised demo's methods, in table order
DEMO_METHODS = {"stl": ("stl", {}, "STL"), "mtl": ("mtl", {}, "MTL"), "padnet3ways": ("padnet3ways", {}, "3-ways PAD-Net"),
                "densemtl": ("densemtl", {"mteb_scales": [1]}, "DenseMTL")}
# what `make demo` runs: measured on 2 cores, 3-ways PAD-Net's 250 steps alone took 432 s of the
# 24 minutes the five-method demo needed (README)
DEFAULT_METHODS = ("stl", "mtl", "densemtl")
# --uda: procedural source (default style) -> target (shifted style), task set S-D (Table 6 rows)
UDA_METHODS = (("stl_uda_semseg", "stl", "S", True), ("stl_uda_depth", "stl", "D", True),
               ("mtl_source", "mtl", "SD", False), ("mtl_uda", "mtl", "SD", True),
               ("densemtl_source", "densemtl", "SD", False), ("densemtl_uda", "densemtl", "SD", True))


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="small end-to-end comparison on the bundled procedural dataset")
    p.add_argument("--out", default=None, type=out_dir, help="output folder (default outputs/demo, or outputs/demo_uda with --uda)")
    p.add_argument("--iterations", type=int, default=None,
                   help="training steps per method (default 150; --uda: 120)")
    p.add_argument("--num-images", type=int, default=None,
                   help="procedural scenes to train and evaluate on, 80 %% train (default 1000; --uda: 600)")
    p.add_argument("--size", default="80x64", help="WxH (default 80x64)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--seed", type=int, default=0, help="training seed (initialisation and data order) and data generator seed")
    p.add_argument("--tasks", default="SD", help="task set of the multi-task methods (default SD)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated, from {', '.join(DEMO_METHODS)} (default {','.join(DEFAULT_METHODS)}: 3-ways PAD-Net "
                        f"costs as much as DenseMTL and does not fit the 15 minutes; stl is the reference of Delta and "
                        f"always runs)")
    p.add_argument("--pretrain-iterations", type=int, default=200,
                   help="steps of the shared encoder's pretraining (an MTL S-D-N model on other scenes; cached in --out)")
    p.add_argument("--scratch", action="store_true", help="no shared pretrained encoder: every method from random weights")
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
    n = int(args.iterations or 120)
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
    return run_uda(args) if args.uda else run_supervised(args)


def demo_spec(args, out: Path):
    """The demo as a one-seed study (see docs/study.md) in ``out``."""
    from ..study.spec import StudySpec

    w, h = (int(v) for v in args.size.lower().split("x"))
    n, p = int(args.iterations or 150), int(args.pretrain_iterations)
    names = [m.strip() for m in str(args.methods).split(",") if m.strip()]
    unknown = [m for m in names if m not in DEMO_METHODS]
    if unknown:
        raise ValueError(f"--methods: unknown method {unknown[0]!r}; choose from {', '.join(DEMO_METHODS)}")
    names = ["stl"] + [m for m in DEMO_METHODS if m in names and m != "stl"]
    methods = {m: {"model": DEMO_METHODS[m][0], "options": DEMO_METHODS[m][1], "label": DEMO_METHODS[m][2]} for m in names}
    compare = [[a, b] for a, b in (("densemtl", "padnet3ways"), ("densemtl", "mtl")) if a in methods and b in methods]
    recipe = {"optim": {"name": "adam", "lr_backbone": 1e-3, "lr_decoder": 1e-3, "betas": [0.9, 0.98], "clip_grad_norm": 10.0}}
    return StudySpec({
        "name": "demo", "csv": str(out / "demo.csv"), "work_dir": str(out / "work"),
        "data": {"generator_seed": args.seed, "num_images": int(args.num_images or 1000), "size": [h, w]},
        # the shared encoder: an MTL S-D-N model on other scenes (another generator seed), trained once and cached
        "pretrain": {"generator_seed": args.seed + 1000, "num_images": 600, "model": "mtl", "tasks": "SDN", "seed": args.seed,
                     "run": {"schedule": {"iterations": p, "milestones": [max(1, int(p * 0.8))]},
                             "train": {"eval_every": p, "checkpoint_every": p}}},
        "seeds": [args.seed], "settings": ["scratch" if args.scratch else "pretrained"], "task_sets": [args.tasks],
        "methods": methods, "compare": compare,
        "run": {**recipe, "model": {"backbone": args.backbone, "pretrained": False},
                "data": {"batch_size": args.batch_size, "val_batch_size": 32, "num_workers": 0},
                "schedule": {"iterations": n, "milestones": [max(1, int(n * 0.8))], "gamma": 0.1},
                "train": {"log_every": 10, "eval_every": max(1, n // 5), "checkpoint_every": n, "image_every": 0,
                          "progress": True}},
    }, "densemtl demo")


def run_supervised(args) -> int:
    import torch

    from ..study.analysis import curve_deltas, groups, paired_differences, task_set_label
    from ..study.plots import study_figures
    from ..study.report import load, main_table, paired_table
    from ..study.runner import run_study

    t_start = time.perf_counter()
    out = Path(args.out or "outputs/demo")
    spec = demo_spec(args, out)
    if not args.reuse:  # retrain the methods; the data and the shared encoder stay cached
        for p in (spec.csv, spec.curves_dir, spec.plots_dir, spec.work_dir / "runs"):
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    setting, ts = spec.settings[0], spec.task_sets[0]
    print(f"[demo] {', '.join(m['label'] for m in spec.methods.values())} on {task_set_label(ts)}, "
          f"{'from one shared pretrained encoder' if setting == 'pretrained' else 'from scratch'}; threads: {torch.get_num_threads()}")
    run_study(spec, log=print)
    rows, curves = load(spec)
    gs = groups(spec, rows)
    deltas = curve_deltas(spec, rows, curves)
    table = main_table(spec, gs, deltas, setting, ts)
    pairs = paired_table(spec, paired_differences(spec, rows, gs))
    md = "\n".join(table + ([""] + pairs if pairs else []))
    (out / "table.md").write_text(md + "\n")
    figures = study_figures(spec, rows, curves, deltas, spec.plots_dir)
    fig = qualitative_figure(spec, out / "figure.png")
    print("\n" + md + "\n")
    print("[demo] " + note(spec, gs, setting, ts))
    print(f"[demo] outputs: {out}/table.md, {spec.csv}, {fig}, learning curves {', '.join(str(f) for f in figures)}; "
          f"runs in {spec.work_dir / 'runs'}")
    print(f"[demo] total time {time.perf_counter() - t_start:.0f} s")
    return 0


def note(spec, gs, setting: str, ts: str) -> str:
    """One line: what the table shows (and does not)."""
    from ..study.analysis import task_set_label

    d = {g.method: g.delta.mean for g in gs if g.setting == setting and g.tasks == ts and g.method != spec.reference
         and g.delta is not None and g.delta.n}
    ranked = ", ".join(f"{spec.methods[m]['label']} {v:+.2f}" for m, v in sorted(d.items(), key=lambda kv: -kv[1]))
    start = "from one shared encoder pretrained on other scenes" if setting == "pretrained" else "from scratch"
    return (f"Δ {task_set_label(ts)} vs STL after {spec.iterations() * spec.batch_size()} images, every method {start}, "
            f"same data order: {ranked}. One seed at a small budget: an illustration, not evidence; "
            f"docs/results.md has the multi-seed study.")


def qualitative_figure(spec, path: Path, images: int = 3) -> Path:
    """The paper's Figure 4 grid (``densemtl figure``, docs/figures.md) of the demo's runs: input,
    ground truth and every method's prediction of each task for ``images`` validation scenes."""
    from ..data import create_dataset
    from ..engine import load_checkpoint, model_from_checkpoint
    from ..study.runner import data_root, run_dir
    from ..study.spec import Run
    from ..tasks import parse_task_set
    from ..viz import qualitative_figure as draw, spread_indices

    setting, ts, seed = spec.settings[0], spec.task_sets[0], spec.seeds[0]
    val = create_dataset("procedural", data_root(spec, spec.data["generator_seed"], spec.data["num_images"]), "val",
                         parse_task_set(ts), size=tuple(spec.data["size"]))
    models = []
    for name, m in spec.methods.items():  # STL: one run per task of the set, one column per task
        for tasks in ([t for t in ts] if spec.is_single_task(name) else [ts]):
            ck = load_checkpoint(run_dir(spec, Run(setting, name, tasks, seed)) / "checkpoints" / "last.pt")
            models.append((m["label"], model_from_checkpoint(ck)))
    draw(models, val, spread_indices(len(val), images), path)
    return path


def run_uda(args) -> int:
    import torch

    from ..data.synth import generate_dataset
    from ..engine import Trainer
    from ..engine.report import build_table, load_run, to_csv, to_markdown

    t_start = time.perf_counter()
    out = Path(args.out or "outputs/demo_uda")
    data_root = out / "data"
    w, h = (int(v) for v in args.size.lower().split("x"))
    num = int(args.num_images or 600)
    iterations = int(args.iterations or 120)
    if not (data_root / "dataset.json").is_file():
        print(f"[demo] generating {num} procedural scenes ({w}x{h}) in {data_root} ...")
        generate_dataset(data_root, num=num, size=(h, w), seed=args.seed, progress=False)
    target_root = out / "data_shifted"
    if not (target_root / "dataset.json").is_file():
        print(f"[demo] generating {num} procedural scenes in the 'shifted' style in {target_root} ...")
        generate_dataset(target_root, num=num, size=(h, w), seed=args.seed + 1, style="shifted", progress=False)
    print(f"[demo] data: {data_root} (procedural indoor scenes, 8 classes); threads: {torch.get_num_threads()}")
    run_dirs = []
    for name, model, tasks, adversarial in UDA_METHODS:
        cfg = demo_config(name, model, tasks, args, data_root, out, target_root, adversarial)
        run_dir = Path(cfg.output_dir) / "demo" / name
        done = (run_dir / "checkpoints" / "last.pt").is_file() and '"type": "eval"' in (run_dir / "metrics.jsonl").read_text() \
            if (run_dir / "metrics.jsonl").is_file() else False
        if args.reuse and done:
            print(f"[demo] {name}: reusing {run_dir}")
        else:
            t0 = time.perf_counter()
            print(f"[demo] training {name} ({model}, tasks {tasks}, {args.backbone}, {iterations} iterations) ...")
            if run_dir.exists():
                shutil.rmtree(run_dir)
            Trainer(cfg, run_dir=run_dir).train()
            print(f"[demo] {name} done in {time.perf_counter() - t0:.0f} s")
        run_dirs.append(run_dir)
    table = build_table([load_run(d) for d in run_dirs])
    md = to_markdown(table)
    (out / "table.md").write_text(md + "\n")
    (out / "table.csv").write_text(to_csv(table))
    print("\n" + md + "\n")
    print(f"[demo] source: procedural default style, target: 'shifted' style (evaluated on its val split), {w}x{h}, "
          f"{args.backbone} from scratch, {iterations} iterations; Delta vs STL-UDA.")
    print(f"[demo] outputs: {out}/table.md, {out}/table.csv, runs in {out}/runs/demo/")
    print(f"[demo] total time {time.perf_counter() - t_start:.0f} s")
    return 0
