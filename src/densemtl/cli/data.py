"""``densemtl data``: prepare, verify and synthesise datasets."""

from __future__ import annotations

import json
import sys
import time

from .args import out_dir


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="prepare, verify or generate datasets")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    prep = dsub.add_parser("prepare", help="convert an official dataset release into densemtl's layout")
    prep.add_argument("dataset", choices=["nyud"], help="dataset to prepare")
    prep.add_argument("--mat", required=True, help="nyu_depth_v2_labeled.mat (MATLAB v7.3)")
    prep.add_argument("--splits", required=True, help="official splits.mat (trainNdxs, testNdxs)")
    prep.add_argument("--mapping", required=True, help="classMapping40.mat (mapClass: 894 -> 40 classes)")
    prep.add_argument("--out", required=True, type=out_dir, help="output root")
    prep.add_argument("--limit", type=int, default=None, help="convert only the first N frames (testing)")
    prep.set_defaults(func=run_prepare)

    ver = dsub.add_parser("verify", help="open every file of a dataset and check it")
    ver.add_argument("config", nargs="?", help="a run config (YAML) whose data.dataset / data.root are checked")
    ver.add_argument("--dataset", help="dataset name (nyud, cityscapes, vkitti2, synthia)")
    ver.add_argument("--root", help="dataset root")
    ver.add_argument("--splits", default="train,val", help="comma-separated splits (default train,val)")
    ver.add_argument("--tasks", default=None, help="tasks to check (default: all the dataset provides natively)")
    ver.add_argument("--json", action="store_true", help="print the summary as JSON")
    ver.set_defaults(func=run_verify)

    syn = dsub.add_parser("synth", help="generate the procedural indoor dataset (NYUDv2 layout)")
    syn.add_argument("--out", required=True, type=out_dir, help="output folder: new or empty (see --force)")
    syn.add_argument("--force", action="store_true",
                     help="replace a non-empty --out folder whole (written aside, swapped in when complete)")
    syn.add_argument("--num", type=int, default=1000)
    syn.add_argument("--size", default="160x128", help="WxH (default 160x128)")
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--style", default="default", help="appearance preset: default or shifted (domain shift)")
    syn.add_argument("--workers", type=int, default=None)
    syn.add_argument("--sequences", action="store_true", help="also write frames t-1, t+1 and their relative poses")
    syn.add_argument("--motion", choices=["random", "forward", "lateral"], default="random",
                     help="camera motion of --sequences: random small motions, driving forward like a car, or "
                          "moving sideways at near-constant speed")
    syn.set_defaults(func=run_synth)


def _wh(spec: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in spec.lower().split("x"))
    except ValueError:
        raise ValueError(f"size must be WxH, e.g. 160x128, got '{spec}'") from None
    return h, w


def run_prepare(args) -> int:
    from ..data.prepare_nyud import prepare_nyud

    t0 = time.perf_counter()
    sizes = prepare_nyud(args.mat, args.splits, args.mapping, args.out, limit=args.limit)
    print(f"wrote NYUDv2 to {args.out}: {sizes['train']} train / {sizes['val']} val images in {time.perf_counter() - t0:.1f} s")
    return 0


def run_verify(args) -> int:
    from ..data import create_dataset, get_dataset_class

    name, root = args.dataset, args.root
    if args.config:
        from ..config import load_config

        cfg = load_config(args.config)
        name, root = name or cfg.data.dataset, root or cfg.data.root
    if not name or not root:
        raise ValueError("give --dataset and --root, or a config file with data.dataset and data.root")
    cls = get_dataset_class(name)
    tasks = args.tasks or "".join({"semseg": "S", "depth": "D", "normals": "N", "edges": "E"}[t] for t in cls.native_tasks)
    from ..data.verify import split_overlaps, verify_dataset

    status = 0
    datasets = {split: create_dataset(name, root, split, tasks, augment=False) for split in args.splits.split(",") if split}
    overlaps = split_overlaps(datasets)
    for split, ds in datasets.items():
        summary, problems = verify_dataset(ds, progress=sys.stderr.isatty())
        problems += overlaps.get(split, [])
        if args.json:
            print(json.dumps({**summary, "problems": problems}, indent=2))
        else:
            print(f"{name} {split}: {summary['samples']} samples, {summary['ok']} ok, {summary['bad']} bad; "
                  f"size {summary['size'][1]}x{summary['size'][0]}; depth range {summary['depth_range_m']}")
            present = {k: v for k, v in summary["class_pixels"].items() if v}
            print(f"  classes present: {len(present)}/{len(summary['class_pixels'])}")
            for p in problems:
                print(f"  BAD {p}")
        status = status or (1 if problems else 0)
    return status


def run_synth(args) -> int:
    from ..data.synth import generate_dataset

    from ..fileio import naming

    h, w = _wh(args.size)
    t0 = time.perf_counter()
    with naming(args.out):
        out = generate_dataset(args.out, args.num, (h, w), args.seed, args.style, workers=args.workers,
                               progress=sys.stderr.isatty(), sequences=args.sequences, motion=args.motion,
                               overwrite=args.force)
    print(f"wrote {args.num} procedural scenes ({w}x{h}, seed {args.seed}, style {args.style}) to {out} "
          f"in {time.perf_counter() - t0:.1f} s; read it with dataset 'procedural' (data.dataset=procedural)")
    return 0
