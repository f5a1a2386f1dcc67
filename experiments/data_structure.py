"""Cross-task structure of the procedural generator (and, for reference, of the real NYUDv2
samples in ../shared/data when present): what semantics says about depth and normals and
back, and how many semantic boundaries are also depth / normal discontinuities.
See densemtl.data.structure for each number's definition; docs/results.md for the results.

    python experiments/data_structure.py [--num 150] [--size 160x128] [--style default] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from densemtl.data.structure import cross_task_structure
from densemtl.data.synth import STYLES, render_scene

NYU = Path(__file__).resolve().parents[2] / "shared" / "data" / "nyuv2-real-samples" / "consolidated"


def procedural(num: int, size, style: str, seed: int = 0) -> tuple[dict, float]:
    t0 = time.perf_counter()
    samples = [render_scene(seed, i, size, style) for i in range(num)]
    seconds = time.perf_counter() - t0
    out = cross_task_structure(samples)
    # appearance alone: the best class guess per colour bin (8 levels per channel)
    c = np.concatenate([s["semseg"].ravel() for s in samples]).astype(np.int64)
    rgb = np.concatenate([s["image"].reshape(-1, 3) for s in samples]).astype(np.int64) // 32
    joint = np.zeros((512, c.max() + 1))
    np.add.at(joint, (rgb[:, 0] * 64 + rgb[:, 1] * 8 + rgb[:, 2], c), 1)
    out["acc_class_from_colour"] = float(joint.max(1).sum() / len(c))
    return out, seconds


def nyu_samples(labels: str = "seg40"):
    """The 6 real NYUDv2 test images with depth (raw or in-painted Kinect), labels at 1/4
    resolution; normals from the depth after a 4-pixel smoothing (as `data prepare nyud`)."""
    from PIL import Image

    from densemtl.data.geometry import normals_from_depth

    K = np.array([[518.86, 0, 325.58], [0, 519.47, 253.74], [0, 0, 1]])
    out = []
    for f in sorted((NYU / "depth" / "test").glob("*.png")):
        d = np.asarray(Image.open(f)).astype(np.float64) / 1000.0
        s = np.asarray(Image.open(NYU / labels / "test" / f.name)).astype(np.int64) - 1
        s[s < 0] = 255
        n = normals_from_depth(d, K, smooth_sigma=4.0)
        out.append({"semseg": s[::4, ::4], "depth": d[::4, ::4], "normals": n[::4, ::4]})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num", type=int, default=150)
    ap.add_argument("--size", default="160x128", help="WxH")
    ap.add_argument("--style", default="default", choices=sorted(STYLES))
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    res, seconds = procedural(args.num, (h, w), args.style)
    table = {f"procedural ({args.style}, {args.num} scenes)": res}
    if (NYU / "depth").is_dir():
        table["NYUDv2 real samples (6, 40 classes)"] = cross_task_structure(nyu_samples("seg40"))
    keys = [k for k in res if k != "pixels"]
    names = list(table)
    print("| measure | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for k in keys:
        print(f"| {k} | " + " | ".join(f"{table[n][k]:.3f}" if k in table[n] else "-" for n in names) + " |")
    print(f"\nrendering {args.num} scenes took {seconds:.1f} s (one process)")
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
