"""Source-only vs adversarial UDA (S-D) for MTL and DenseMTL on the procedural domain shift:
source = default style, target = 'shifted' style (wider lens, lower camera, darker and warmer,
stronger textures), evaluated on the target's val split; Delta_SD against STL-UDA.

    python experiments/uda_procedural.py [--iterations 300] [--depth-map minmax|ratio] [--out outputs/uda_procedural]

Thin wrapper around ``densemtl demo --uda`` (the Table 6 presets' alignment: mean over the
(task, scale) pairs, discriminator flip, unit normals, the source's whole set, median-scaled
depth) that also writes the rows as JSON, with each run's target depth RMSE both
median-scaled (the Table 6 protocol) and in absolute metres.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from densemtl.cli.main import main as cli
from densemtl.config import config_from_dict
from densemtl.cli.table import find_runs
from densemtl.engine.report import build_table, load_run


def absolute_depth_rmse(run_dir: Path) -> float | None:
    """Target depth RMSE (m) of a run's last checkpoint without median scaling (None: no depth)."""
    from densemtl.engine import builders, load_checkpoint, model_from_checkpoint
    from densemtl.engine.evaluate import evaluate

    ck = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    cfg = config_from_dict(ck["config"])
    if "depth" not in ck["model_config"]["tasks"]:
        return None
    tcfg = builders.target_config(cfg)
    ds = builders.build_dataset(tcfg, tcfg.data.val_split, train=False)
    loader, _ = builders.build_loader(ds, 32, False, 0, 0)
    model = model_from_checkpoint(ck)
    res = evaluate(model, loader, ("depth",), {**ds.meter_options(), "median_scaling": False}, torch.device("cpu"))
    return res["depth"]["rmse"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--num-images", type=int, default=400)
    ap.add_argument("--size", default="80x64", help="WxH")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--depth-map", choices=["minmax", "ratio"], default="minmax",
                    help="depth discriminator's input (minmax: the released map, the presets')")
    ap.add_argument("--out", default="outputs/uda_procedural")
    ap.add_argument("--reuse", action="store_true", help="reuse finished runs in --out (densemtl demo --reuse)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    code = cli(["demo", "--uda", "--out", args.out, "--iterations", str(args.iterations), "--num-images", str(args.num_images),
                "--size", args.size, "--batch-size", str(args.batch_size), "--seed", str(args.seed),
                "--uda-depth-map", args.depth_map] + (["--reuse"] if args.reuse else []))
    if code:
        raise SystemExit(code)
    runs = find_runs([Path(args.out) / "runs"])
    table = build_table([load_run(d) for d in runs])
    absolute = {str(d): absolute_depth_rmse(d) for d in runs}
    rows = [{"setting": r["setting"], "method": r["method"], "tasks": r["tasks"],
             "target": {t: m[0] for t, m in r["metrics"].items()}, "delta_vs_stl_uda": r["delta"][0] if r["delta"] else None,
             "depth_rmse_absolute": [absolute[d] for d in r["runs"] if absolute[d] is not None] or None}
            for r in table["rows"]]
    res = {"iterations": args.iterations, "size": args.size, "batch_size": args.batch_size, "depth_map": args.depth_map,
           "seconds": round(time.perf_counter() - t0), "rows": rows}
    (Path(args.out) / "result.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
