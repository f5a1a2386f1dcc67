"""Is this revision slower than another one? Training step and data loader of two git
revisions, interleaved in one run (A B A B ...) so that a busy machine slows both alike.

    python benchmarks/compare_revisions.py --old 16c09cb [--new WORKTREE] [--rounds 4]
    python benchmarks/compare_revisions.py --old HEAD --config bf16+cl --threads 2 --backbone resnet101 --size 224x288 --tasks SD

The old revision is checked out into a temporary git worktree; each side runs its own
``benchmarks/train_step.py`` (single-configuration mode ``--_one``: ``--config``, by default
eager fp32, the same model, losses, clip and Adam) and the loader loop below, with its own ``src`` first on
``PYTHONPATH``. Prints the best (minimum) of the rounds for each
and the ratio new / old: below 1 is faster. The minimum is the number least disturbed by
other processes; the spread of the rounds is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

LOADER = r"""
import json, sys, time, torch
from densemtl.data import collate, create_dataset
from densemtl.data import list_datasets
root, tasks, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
name = "procedural" if "procedural" in list_datasets() else "nyud"
ds = create_dataset(name, root, "train", tasks, size=(448, 576))
loader = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=0, collate_fn=collate, shuffle=True,
                                     generator=torch.Generator().manual_seed(0))
t0 = time.perf_counter()
n = sum(b["image"].shape[0] for b in loader)
print(json.dumps({"images_per_sec": n / (time.perf_counter() - t0)}))
"""


def run(src: Path, cmd: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=src.parent)
    if out.returncode:
        raise SystemExit(f"{src}: {' '.join(cmd[:3])} failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def one_flag(config: str) -> list[str]:
    """``train_step.py``'s single-configuration flag in the form every revision accepts: a bare
    ``--_one`` (eager fp32) or ``--_one --amp A [--channels-last]`` (older revisions had only
    these), ``--_one CONFIG`` for the other levers (revisions that know them)."""
    parts = set(config.split("+"))
    if parts <= {"fp32", "bf16", "fp16", "cl"}:
        amp = next((p for p in ("bf16", "fp16") if p in parts), None)
        return ["--_one", *(["--amp", amp] if amp else []), *(["--channels-last"] if "cl" in parts else [])]
    return ["--_one", config]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True, help="git revision to compare against")
    ap.add_argument("--new", default=str(ROOT), help="source tree of the new side (default: this checkout)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--model", default="densemtl")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--size", default="128x160", help="HxW of the training step")
    ap.add_argument("--tasks", default="SDN")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--config", default="fp32", help="train_step.py configuration of both sides (e.g. bf16+cl)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--num-images", type=int, default=16, help="procedural scenes (576x448) the loader reads")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.old], check=True,
                       capture_output=True)
        try:
            sides = {"old": old / "src", "new": Path(args.new) / "src"}
            data = Path(tmp) / "data"
            subprocess.run([sys.executable, "-c", "import sys; from densemtl.data.synth import generate_dataset; "
                            f"generate_dataset(sys.argv[1], num={args.num_images}, size=(448, 576), seed=0, progress=False)",
                            str(data)], check=True, env={**os.environ, "PYTHONPATH": str(sides["new"])})
            step = [*one_flag(args.config), "--size", args.size, "--tasks", args.tasks, "--model", args.model, "--backbone", args.backbone,
                    "--batch", str(args.batch), "--steps", str(args.steps), "--threads", str(args.threads)]
            load = [sys.executable, "-c", LOADER, str(data), "SDNE", "2"]
            res = {s: {"step": [], "load": []} for s in sides}
            for r in range(args.rounds):
                for s, src in sides.items():
                    bench = str(src.parent / "benchmarks" / "train_step.py")
                    res[s]["step"].append(run(src, [sys.executable, bench, *step])["sec_per_step"])
                    res[s]["load"].append(run(src, load)["images_per_sec"])
                print(f"round {r + 1}/{args.rounds}: step old {res['old']['step'][-1]:.3f} s, new {res['new']['step'][-1]:.3f} s; "
                      f"loader old {res['old']['load'][-1]:.1f}, new {res['new']['load'][-1]:.1f} images/s", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True)
    o, n = res["old"], res["new"]
    print(f"\n{args.model} {args.backbone} {args.tasks} {args.size} batch {args.batch}, {args.config}, {args.threads} thread(s); loader 576x448 SDNE, "
          f"0 workers; best of {args.rounds} rounds (range)")
    print(f"train step  old {min(o['step']):.3f} s ({min(o['step']):.3f}-{max(o['step']):.3f})  "
          f"new {min(n['step']):.3f} s ({min(n['step']):.3f}-{max(n['step']):.3f})  new/old {min(n['step']) / min(o['step']):.3f}")
    print(f"loader      old {max(o['load']):.1f} img/s ({min(o['load']):.1f}-{max(o['load']):.1f})  "
          f"new {max(n['load']):.1f} img/s ({min(n['load']):.1f}-{max(n['load']):.1f})  new/old time "
          f"{max(o['load']) / max(n['load']):.3f}")


if __name__ == "__main__":
    main()
