"""Source-only vs adversarial UDA (S-D) for MTL and DenseMTL on the procedural domain shift:
source = default style, target = 'shifted' style (wider lens, lower camera, darker and warmer,
stronger textures), evaluated on the target's val split; Delta_SD against STL-UDA.

    python experiments/uda_procedural.py [--iterations 300] [--out outputs/uda_procedural]

Thin wrapper around ``densemtl demo --uda`` that also writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from densemtl.cli.main import main as cli
from densemtl.cli.table import find_runs
from densemtl.engine.report import build_table, load_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--num-images", type=int, default=400)
    ap.add_argument("--size", default="80x64", help="WxH")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="outputs/uda_procedural")
    args = ap.parse_args()
    t0 = time.perf_counter()
    cli(["demo", "--uda", "--out", args.out, "--iterations", str(args.iterations), "--num-images", str(args.num_images),
         "--size", args.size, "--batch-size", str(args.batch_size), "--seed", str(args.seed)])
    table = build_table([load_run(d) for d in find_runs([Path(args.out) / "runs"])])
    rows = [{"setting": r["setting"], "method": r["method"], "tasks": r["tasks"],
             "target": {t: m[0] for t, m in r["metrics"].items()}, "delta_vs_stl_uda": r["delta"][0] if r["delta"] else None}
            for r in table["rows"]]
    res = {"iterations": args.iterations, "size": args.size, "batch_size": args.batch_size, "seconds": round(time.perf_counter() - t0), "rows": rows}
    (Path(args.out) / "result.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
