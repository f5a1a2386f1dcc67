"""``densemtl demo``: build every registered model and run it on one image."""

from __future__ import annotations

import time

import numpy as np
import torch

from ..models import count_parameters, create_model, list_models
from ..tasks import parse_task_set


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="build every model and run one image through it")
    p.add_argument("--tasks", default="SDN")
    p.add_argument("--backbone", default="resnet101")
    p.add_argument("--num-classes", type=int, default=40)
    p.add_argument("--size", default="448x576", help="HxW of the demo image (default NYUDv2's 448x576)")
    p.add_argument("--image", default=None, help="optional RGB image file (resized to --size)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def _load_image(path: str | None, h: int, w: int, seed: int) -> torch.Tensor:
    if path:
        from PIL import Image

        img = Image.open(path).convert("RGB").resize((w, h), Image.BILINEAR)
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([xx, yy, 1 - xx * yy])
    return (0.8 * base + 0.2 * torch.rand(3, h, w, generator=g)).unsqueeze(0)


def run(args) -> int:
    tasks = parse_task_set(args.tasks)
    h, w = (int(v) for v in args.size.lower().split("x"))
    torch.manual_seed(args.seed)
    x = _load_image(args.image, h, w, args.seed)
    print(f"densemtl demo: tasks {'-'.join(t[0].upper() for t in tasks)}, backbone {args.backbone} "
          f"(random init), one {h}x{w} image, eval mode, {torch.get_num_threads()} CPU threads")
    for name in list_models():
        groups = [[t] for t in tasks] if name == "stl" else [list(tasks)]
        for g in groups:
            model = create_model(name, g, args.num_classes, args.backbone).eval()
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = model(x)
            dt = time.perf_counter() - t0
            label = f"{name}[{g[0]}]" if name == "stl" else name
            print(f"\n{label:<16} {count_parameters(model) / 1e6:7.2f} M params   forward {dt:6.2f} s")
            for t, preds in out.items():
                shapes = ", ".join(f"scale {s}: {tuple(p.shape)}" for s, p in sorted(preds.items()))
                print(f"  {t:<8} {shapes}")
    return 0
