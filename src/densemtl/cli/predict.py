"""``densemtl predict CHECKPOINT IMAGE_OR_DIR ... --out DIR``: colourised predictions per image.

Outputs mirror the input images' folders below the deepest folder holding all of them:
``predict RUN photos/`` writes ``OUT/<name>_<task>.png``; ``predict RUN a/ b/`` writes
``OUT/a/<name>_*.png`` and ``OUT/b/<name>_*.png``. Two images that would still share an
output name (``x.png`` and ``x.jpg`` in one folder) are refused before anything is written.
"""

from __future__ import annotations

import os
from pathlib import Path

from .args import out_dir, size_hw

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="predict every task on images and write colourised results")
    p.add_argument("checkpoint", help="checkpoint file or run directory")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True, type=out_dir, help="output folder")
    p.add_argument("--mode", choices=["resize", "pad"], default="resize",
                   help="resize to the training size (default) or pad to a multiple of 16; results are mapped back to the original size")
    p.add_argument("--size", default=None, type=size_hw, help="HxW to resize to (default: the training size)")
    p.add_argument("--amp", choices=["auto", "none", "bf16", "fp16"], default="auto",
                   help="autocast precision; auto: bf16 where the hardware computes it natively, else fp32")
    p.add_argument("--compile", choices=["auto", "true", "false"], default="auto",
                   help="torch.compile the model with its weights frozen (BatchNorm folded); auto: on a CUDA device "
                        "when at least 16 images of one size are predicted, never on CPU (docs/performance.md)")
    p.set_defaults(func=run)


def list_images(inputs) -> list[Path]:
    files = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXT)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such image or folder")
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_EXT))}) in {', '.join(inputs)}")
    unique = {os.path.abspath(f): f for f in files}  # an image named twice is predicted once
    return list(unique.values())


def output_names(files: list[Path]) -> list[Path]:
    """Output path stem of each image, relative to the output folder: its folder below the
    deepest folder holding every image, then its name without extension. Raises
    ``ValueError`` naming both images when two would share a stem."""
    parents = [Path(os.path.abspath(f)).parent for f in files]
    common = Path(os.path.commonpath(parents))
    names, seen = [], {}
    for f, parent in zip(files, parents):
        name = parent.relative_to(common) / f.stem
        if name in seen:
            raise ValueError(f"{seen[name]} and {f} would both be written as {name}_<task>.png; rename one of them "
                             f"or predict them into separate --out folders")
        seen[name] = f
        names.append(name)
    return names


def predict_image(model, image, size=None, mode: str = "resize", forward=None, fast=None) -> dict:
    """``image (H, W, 3)`` uint8 -> ``{task: decoded prediction at (H, W)}`` (numpy).

    ``forward``: the module to run (default ``model``; e.g. its compiled form), ``fast``: the
    :class:`~densemtl.engine.fastpath.FastPath` it was prepared for (autocast, memory format)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from ..engine.fastpath import FastPath
    from ..tasks import get_task

    h, w = image.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255)[None]
    d = model.size_divisor
    if mode == "pad":
        ph, pw = (-h) % d, (-w) % d
        xin = F.pad(x, (0, pw, 0, ph), mode="replicate")
    else:
        th, tw = size if size else (max(d, round(h / d) * d), max(d, round(w / d) * d))
        xin = F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False, antialias=True)
    fast = fast or FastPath()
    xin = fast.inputs(xin)
    with torch.no_grad(), fast.autocast(xin.device):
        out = (forward or model)(xin)
    res = {}
    for t in model.tasks:
        p = out[t][model.eval_scale].float()
        if mode == "pad":
            p = F.interpolate(p, size=xin.shape[-2:], mode="bilinear", align_corners=False)[..., :h, :w]
        else:
            p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
        res[t] = get_task(t).decode(p)[0].cpu().numpy()
        bad = int((~torch.isfinite(p)).sum()) or int((~np.isfinite(res[t])).sum())
        if bad:
            raise FloatingPointError(f"the {t} prediction holds {bad} NaN/Inf values")
    return res


def run(args) -> int:
    import numpy as np

    from ..data.io import read_rgb, write_png
    from ..engine import load_checkpoint, model_from_checkpoint
    from ..engine.fastpath import prepare_inference, resolve_inference
    from ..fileio import naming
    from ..tasks import get_task
    from ..viz import side_by_side

    ckpt = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(ckpt)
    model.eval()
    size = None
    if args.size:
        size = tuple(int(v) for v in args.size.lower().split("x"))
    elif (ckpt.get("config") or {}).get("data", {}).get("size"):
        size = tuple(ckpt["config"]["data"]["size"])
    else:
        from ..data import get_dataset_class

        ds = (ckpt.get("config") or {}).get("data", {}).get("dataset")
        size = tuple(get_dataset_class(ds).default_size) if ds else None
    files = list_images(args.inputs)
    names = output_names(files)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    nc = ckpt["model_config"].get("num_classes")
    fast = resolve_inference({"none": None}.get(args.amp, args.amp), {"true": True, "false": False}.get(args.compile, "auto"),
                             "cpu", num_images=len(files), one_size=args.mode == "resize" and size is not None)
    forward = prepare_inference(model, fast)
    for f, name in zip(files, names):
        img = read_rgb(f)
        try:
            preds = predict_image(model, img, size, args.mode, forward=forward, fast=fast)
        except FloatingPointError as e:
            raise FloatingPointError(f"{f}: {e}; nothing written for it (the weights of {ckpt['path']} "
                                     f"may be NaN/Inf)") from None
        panels = [img]
        for t, p in preds.items():
            rgb = get_task(t).render(p, num_classes=nc)
            write_png(out / f"{name}_{t}.png", rgb)
            panels.append(rgb)
            if t == "depth":
                with naming(out / f"{name}_depth.npy"):
                    np.save(out / f"{name}_depth.npy", p[0].astype(np.float32))
        write_png(out / f"{name}_all.png", side_by_side(panels))
    print(f"wrote predictions of {len(files)} image(s) for tasks {', '.join(model.tasks)} to {out}")
    return 0
