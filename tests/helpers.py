"""Helpers shared by the tests (imported as ``from helpers import ...``; fixtures live in conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"  # real data samples: ../shared/data


def tiny_config(root, out, **over):
    """A config dict for a fast CPU run on ``synth_root``."""
    cfg = {
        "experiment": "t", "run_name": "r", "output_dir": str(out), "seed": 0, "tasks": "SD",
        "model": {"name": "densemtl", "backbone": "resnet18", "pretrained": False},
        "data": {"dataset": "procedural", "root": str(root), "batch_size": 2, "val_batch_size": 4, "num_workers": 0, "limit_val": 4},
        "optim": {"name": "adam", "lr_backbone": 1e-3, "lr_decoder": 1e-3},
        "schedule": {"iterations": 4, "milestones": [3]},
        "train": {"log_every": 1, "eval_every": 2, "checkpoint_every": 1, "progress": False, "deterministic": True,
                  # the fp32 reference path on every machine ('auto' would pick bf16 where it is native)
                  "amp": None, "channels_last": False, "compile": False},
    }
    for k, v in over.items():
        node = cfg
        *path, last = k.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = v
    return cfg


def run_one_and_two_processes(script, single_cfg, multi_cfg, out, port_base: int = 29500):
    """Run ``script CONFIG RUN_DIR RESULT`` once in one process with ``single_cfg`` and once as
    two Gloo processes (torchrun's environment variables) with ``multi_cfg``; returns the
    result files ``(out/single.pt, out/multi.pt)`` that the script's rank 0 writes."""
    import subprocess
    import sys

    single, multi = out / "single.pt", out / "multi.pt"
    subprocess.run([sys.executable, str(script), str(single_cfg), str(out / "s_run"), str(single)], check=True)
    port = str(port_base + os.getpid() % 1000)
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": port, "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(script), str(multi_cfg), str(out / "m_run"), str(multi)], env=env))
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    return single, multi
