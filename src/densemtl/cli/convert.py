"""``densemtl convert official FILE.pkl --out CHECKPOINT``: the authors' released checkpoints.

``densemtl convert to-official CHECKPOINT --out FILE.pkl`` writes the reverse (authors' format);
``densemtl convert threeways DIR --out CHECKPOINT`` converts Hoyer et al.'s released
self-supervised depth model (the Table 5 initialisation, docs/selfsup.md).
"""

from __future__ import annotations

from .args import out_file


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="convert checkpoints from/to the authors' released format",
                       description="Convert the authors' DenseMTL checkpoints (astra-vision/DenseMTL) into densemtl "
                                   "checkpoints for eval, predict and train.init_from, and back (docs/checkpoints.md).")
    conv = p.add_subparsers(dest="convert_command", metavar="FORMAT", required=True)

    o = conv.add_parser("official", help="authors' state dict (.pkl) -> densemtl checkpoint")
    o.add_argument("file", help="the authors' file, e.g. sy_densemtl_SDN.pkl")
    o.add_argument("--out", required=True, type=out_file, help="densemtl checkpoint to write")
    o.add_argument("--tasks", default=None, help="expected task set (SD, SDN...); inferred from the keys")
    o.add_argument("--num-classes", type=int, default=None, help="expected class count; inferred from the keys")
    o.add_argument("--source-order", action="append", default=None, metavar="T=S1,S2",
                   help="source order of target T's fusion layer in the file (repeat per target, names or "
                        "letters, e.g. semseg=normals,depth or S=N,D); default: canonical order")
    o.add_argument("--detect-order", metavar="DATASET_ROOT", default=None,
                   help="find the source orders on labelled images of this dataset root (lowest loss)")
    o.add_argument("--dataset", default=None,
                   help="dataset the file was trained on (recorded for eval/predict; needed by --detect-order); "
                        "default: from a released file's name (sy_/vk_/cs_densemtl_*)")
    o.add_argument("--detect-split", default="val", help="split used by --detect-order (default val)")
    o.add_argument("--detect-images", type=int, default=4, help="images used by --detect-order (default 4)")
    o.add_argument("--fusion", choices=["add", "prod", "concat"], default=None,
                   help="mTEB fusion (add and prod files have the same keys; default add)")
    o.set_defaults(func=run_official)

    r = conv.add_parser("to-official", help="densemtl checkpoint -> authors' state dict (.pkl)")
    r.add_argument("checkpoint", help="densemtl checkpoint file or run directory")
    r.add_argument("--out", required=True, type=out_file, help="authors' file to write")
    r.add_argument("--source-order", action="append", default=None, metavar="T=S1,S2",
                   help="source order to write in each fusion layer; default: the order recorded at conversion, "
                        "else canonical")
    r.add_argument("--no-aliases", action="store_true", help="omit the params.* alias family")
    r.set_defaults(func=run_to_official)

    h = conv.add_parser("threeways", help="Hoyer et al.'s self-supervised depth model folder -> densemtl checkpoint",
                        description="Convert a released model folder of Hoyer et al. (encoder.pth, depth.pth, "
                                    "pose_encoder.pth, pose.pth), e.g. mono_cityscapes_1024x512_r101dil_aspp_dec6_lr5_"
                                    "fd2_crop512x512bs4, into a densemtl checkpoint: a depth model (task disparity) "
                                    "with its pose network, the initialisation of the Table 5 runs (docs/selfsup.md).")
    h.add_argument("folder", help="the model folder")
    h.add_argument("--out", required=True, type=out_file, help="densemtl checkpoint to write")
    h.add_argument("--dataset", default=None,
                   help="dataset it was trained on (recorded for eval); default: cityscapes for mono_cityscapes_* folders")
    h.set_defaults(func=run_threeways)


def run_official(args) -> int:
    from ..interop.official import convert_official_file, guess_dataset

    dataset = args.dataset
    if dataset is None:
        dataset = guess_dataset(args.file)
        if dataset:
            print(f"dataset: {dataset} (from the file name; override with --dataset)")
    if dataset:
        from ..data import get_dataset_class

        get_dataset_class(dataset)  # unknown name -> KeyError listing the datasets
    convert_official_file(
        args.file, args.out, tasks=args.tasks, num_classes=args.num_classes, source_order=args.source_order,
        fusion=args.fusion, dataset=dataset, detect_root=args.detect_order, detect_split=args.detect_split,
        detect_images=args.detect_images,
    )
    return 0


def run_to_official(args) -> int:
    from pathlib import Path

    import torch

    from ..engine import load_checkpoint
    from ..interop.official import export_official

    ckpt = load_checkpoint(args.checkpoint)
    conv = ckpt.get("converted_from") or {}
    order = args.source_order or conv.get("source_order")
    aliases = not args.no_aliases and (conv.get("layout") or {}).get("aliases", True)
    sd = export_official(ckpt["model"], ckpt["model_config"], source_order=order, aliases=aliases)
    from ..fileio import naming

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with naming(out):
        torch.save(sd, out)
    print(f"wrote {out}: {len(sd)} tensors in the authors' format")
    return 0


def run_threeways(args) -> int:
    from ..interop.threeways import convert_threeways_folder, guess_dataset

    dataset = args.dataset or guess_dataset(args.folder)
    if dataset:
        from ..data import get_dataset_class

        get_dataset_class(dataset)  # unknown name -> KeyError listing the datasets
    convert_threeways_folder(args.folder, args.out, dataset=dataset)
    return 0
