"""Run directories: resolved config, environment, metrics history, checkpoints."""

from __future__ import annotations

import contextlib
import json
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from ..config import save_config
from .checkpoint import remove_stale_temporaries
from .fastpath import cpu_isa


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, timeout=5)
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def environment(device: torch.device) -> dict:
    from .. import __version__
    from .distributed import world_size

    return {
        "densemtl_version": __version__,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "world_size": world_size(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu_isa": cpu_isa(),
        "argv": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


class MetricsLog:
    """Append-only JSON-lines history (``metrics.jsonl``)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def read(self) -> list[dict]:
        """The records. A last line cut short (a crash while appending) is left out with a
        warning; a bad line before it is an error naming the file and line."""
        if not self.path.is_file():
            return []
        lines = self.path.read_text(errors="replace").splitlines()
        last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
        records = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError(f"a JSON {type(rec).__name__}, not a record")
            except ValueError as e:
                if i == last:
                    print(f"warning: {self.path}:{i + 1}: last line is incomplete ({e}), ignored; "
                          f"a crash while it was written leaves such a line", file=sys.stderr)
                    break
                raise ValueError(f"{self.path}:{i + 1}: not a JSON record ({e}); the file is corrupt (line {i + 1} "
                                 f"of {len(lines)}): remove or repair that line") from None
            records.append(rec)
        return records


@contextlib.contextmanager
def discard_if_unstarted(run_dir: Path):
    """A run directory this block creates is removed again (with the empty folders created
    above it) when the block fails before the run recorded anything: no checkpoint and no line
    in ``metrics.jsonl``. A failed start (a data error in the first batch, no memory for the
    first step...) leaves nothing behind; a run that trained and logged is kept."""
    from .distributed import is_main

    run_dir = Path(run_dir)
    top = run_dir  # the highest folder that does not exist yet
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    created = not run_dir.exists()
    try:
        yield
    except BaseException:
        log = run_dir / "metrics.jsonl"
        recorded = any((run_dir / "checkpoints").glob("*.pt")) or (log.is_file() and log.stat().st_size > 0)
        if created and is_main() and run_dir.is_dir() and not recorded:
            shutil.rmtree(run_dir, ignore_errors=True)
            d = run_dir.parent
            while d != top.parent and d.is_dir() and not any(d.iterdir()):
                d.rmdir()
                d = d.parent
        raise



def run_dir_for(cfg) -> Path:
    """``output_dir/experiment/run_name`` (``run_name`` default: ``seed<seed>``)."""
    name = cfg.run_name or f"seed{cfg.seed}"
    return Path(cfg.output_dir) / str(cfg.experiment) / str(name)


class RunDirectory:
    """A run's folder: ``config.yaml``, ``env.json``, ``metrics.jsonl``, ``tb/``, ``checkpoints/``.

    Only the main process calls :meth:`open`; the others keep ``tb = None``.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.metrics = MetricsLog(self.path / "metrics.jsonl")
        self.tb = None

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def open(self, cfg, env: dict, resume: bool, iteration: int) -> None:
        """Create the folder, write the resolved config and the environment (``env-resume-<iter>.json``
        on a resume), trim ``metrics.jsonl`` to the checkpoint's iteration on a resume (a new run
        starts it afresh) and open TensorBoard."""

        self.path.mkdir(parents=True, exist_ok=True)
        log = self.metrics.path
        if log.is_file():
            keep = [r for r in self.metrics.read() if resume and r.get("iter", 0) <= iteration]
            log.write_text("".join(json.dumps(r) + "\n" for r in keep))
        self.checkpoints.mkdir(exist_ok=True)
        remove_stale_temporaries(self.checkpoints, log=print)
        save_config(cfg, self.path / "config.yaml")
        (self.path / ("env.json" if not resume else f"env-resume-{iteration}.json")).write_text(json.dumps(env, indent=2))
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(self.path / "tb"), purge_step=iteration if resume else None)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
