"""``densemtl predict CHECKPOINT IMAGE_OR_DIR ... --out DIR``: colourised predictions per image."""

from __future__ import annotations

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
    return files


def predict_image(model, image, size=None, mode: str = "resize") -> dict:
    """``image (H, W, 3)`` uint8 -> ``{task: decoded prediction at (H, W)}`` (numpy)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

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
    with torch.no_grad():
        out = model(xin)
    res = {}
    for t in model.tasks:
        p = out[t][model.eval_scale].float()
        if mode == "pad":
            p = F.interpolate(p, size=xin.shape[-2:], mode="bilinear", align_corners=False)[..., :h, :w]
        else:
            p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
        res[t] = get_task(t).decode(p)[0].cpu().numpy()
    return res


def run(args) -> int:
    import numpy as np

    from ..data.io import read_rgb, write_png
    from ..engine import load_checkpoint, model_from_checkpoint
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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    nc = ckpt["model_config"].get("num_classes")
    files = list_images(args.inputs)
    for f in files:
        img = read_rgb(f)
        preds = predict_image(model, img, size, args.mode)
        panels = [img]
        for t, p in preds.items():
            rgb = get_task(t).render(p, num_classes=nc)
            write_png(out / f"{f.stem}_{t}.png", rgb)
            panels.append(rgb)
            if t == "depth":
                with naming(out / f"{f.stem}_depth.npy"):
                    np.save(out / f"{f.stem}_depth.npy", p[0].astype(np.float32))
        write_png(out / f"{f.stem}_all.png", side_by_side(panels))
    print(f"wrote predictions of {len(files)} image(s) for tasks {', '.join(model.tasks)} to {out}")
    return 0
