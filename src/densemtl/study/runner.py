"""Run a study: generate its data, pretrain the shared encoder once, train every planned run
that has no row in the CSV yet (resuming one that was interrupted), and append each finished
run's row and learning curve.

Everything is keyed so that the work can be stopped at any point (Ctrl-C, SIGTERM, SIGKILL,
power cut) and continued by running the same command again, here or on another machine
(commit the CSV and the curves, or copy them): a row is written only once its run has
finished, the runs already in the CSV are skipped, and an interrupted run resumes from its
last checkpoint (``train.checkpoint_every``).
"""

from __future__ import annotations

import json
import shutil
import socket
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..config import config_from_dict
from ..data.synth import generate_dataset
from ..engine import HookBase, Trainer
from ..engine.fastpath import cpu_isa
from ..engine.trainer import default_hooks
from ..engine.rundir import MetricsLog
from ..fileio import file_lock
from ..tasks import parse_task_set
from .results import append_row, read_rows, row_key, write_curve
from .spec import Run, StudySpec


class AlphaHook(HookBase):
    """Adds the mean |alpha| of each cross-task attention weight (the mTEB's learned gates,
    ``alpha/<parameter>``) to every evaluation record."""

    def after_eval(self, trainer, results, record):
        for name, p in trainer.model.named_parameters():
            if ".alpha." in name:
                record[f"alpha/{name}"] = float(p.detach().abs().mean())


def data_root(spec: StudySpec, generator_seed: int, num_images: int) -> Path:
    d = spec.data
    h, w = d["size"]
    return spec.work_dir / "data" / f"gen{generator_seed}_n{num_images}_{h}x{w}_{d['style']}_v{d['val_fraction']:g}"


def _lock_path(folder: Path) -> Path:
    """The lock file of a study folder (a dataset, the encoder's run, one run): a hidden sibling."""
    return folder.parent / f".{folder.name}.lock"


def ensure_dataset(spec: StudySpec, generator_seed: int, num_images: int, log=print) -> Path:
    """The procedural set with these parameters under ``work_dir/data`` (generated if absent;
    a second process asking for it meanwhile, e.g. the other shard, waits for it)."""
    root = data_root(spec, generator_seed, num_images)
    with file_lock(_lock_path(root), on_wait=lambda: log(f"[study] waiting for another process to generate {root}")):
        return _ensure_dataset(spec, root, generator_seed, num_images, log)


def _ensure_dataset(spec: StudySpec, root: Path, generator_seed: int, num_images: int, log) -> Path:
    d = spec.data
    if (root / "dataset.json").is_file():
        meta = json.loads((root / "dataset.json").read_text())
        want = {"seed": generator_seed, "num": num_images, "style": d["style"], "default_size": list(d["size"])}
        got = {k: meta.get(k) for k in want}
        if got != want:
            raise ValueError(f"{root / 'dataset.json'}: holds {got}, the study needs {want}; remove {root}")
        return root
    log(f"[study] generating {num_images} procedural scenes (generator seed {generator_seed}, {d['size'][1]}x{d['size'][0]}) "
        f"in {root} ...")
    return Path(generate_dataset(root, num=num_images, size=tuple(d["size"]), seed=generator_seed, style=d["style"],
                                 val_fraction=d["val_fraction"], progress=False))


def run_dir(spec: StudySpec, run: Run) -> Path:
    """Where ``run`` trains: ``work_dir/runs/<config hash>/<setting>/<method>_<tasks>/seed<seed>``."""
    return spec.work_dir / "runs" / spec.config_hash(run) / run.setting / f"{run.method}_{run.tasks}" / f"seed{run.seed}"


def finished_evals(run_dir: Path, max_iter: int) -> list[dict] | None:
    """The run's evaluation records if it finished (an evaluation at ``max_iter`` is logged), else None."""
    evals = [r for r in MetricsLog(Path(run_dir) / "metrics.jsonl").read() if r.get("type") == "eval"]
    return evals if evals and evals[-1]["iter"] >= max_iter else None


def train(cfg: dict, run_dir: Path, log=print) -> list[dict]:
    """Train ``cfg`` in ``run_dir`` to the end: resume from ``checkpoints/last.pt`` if the run
    was interrupted, start afresh if it never saved one; returns its evaluation records."""
    conf = config_from_dict(cfg)
    max_iter = int(conf.schedule.iterations)
    done = finished_evals(run_dir, max_iter)
    if done is not None:
        return done
    resume = (run_dir / "checkpoints" / "last.pt").is_file()
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)  # started but never checkpointed: nothing to keep
    hooks = default_hooks(conf) + [AlphaHook()]
    Trainer(conf, run_dir=run_dir, resume=resume, hooks=hooks).train()
    done = finished_evals(run_dir, max_iter)
    if done is None:
        raise RuntimeError(f"{run_dir}: training ended without an evaluation at iteration {max_iter} "
                           f"(train.eval_every must be > 0)")
    return done


def ensure_pretrained(spec: StudySpec, log=print) -> Path:
    """The shared encoder's checkpoint (trained once per pretrain hash, resumable; a second
    process asking for it meanwhile waits for it)."""
    p = spec.pretrain
    root = ensure_dataset(spec, p["generator_seed"], p["num_images"], log)
    run_dir = spec.work_dir / "pretrain" / spec.pretrain_hash()
    cfg = spec.pretrain_config(root, run_dir.parent)
    with file_lock(_lock_path(run_dir), on_wait=lambda: log(f"[study] waiting for another process to pretrain the shared encoder in {run_dir}")):
        if finished_evals(run_dir, int(config_from_dict(cfg).schedule.iterations)) is None:
            log(f"[study] pretraining the shared encoder: {p['model']} on {p['tasks']}, generator seed {p['generator_seed']} "
                f"({p['num_images']} scenes) -> {run_dir}")
        train(cfg, run_dir, log)
    return run_dir / "checkpoints" / "last.pt"


def _costs(run_dir: Path) -> tuple[float, float]:
    """(seconds of the whole run incl. evaluations, median seconds per training step) from the log."""
    recs = [r for r in MetricsLog(run_dir / "metrics.jsonl").read() if r.get("type") == "train" and "sec_per_iter" in r]
    total, prev = 0.0, 0
    for r in recs:
        total += r["sec_per_iter"] * (r["iter"] - prev)
        prev = r["iter"]
    return total, (statistics.median(r["sec_per_iter"] for r in recs) if recs else float("nan"))


def make_row(spec: StudySpec, run: Run, evals: list[dict], run_dir: Path) -> dict:
    tasks = parse_task_set(run.tasks)
    final = evals[-1]
    seconds, per_iter = _costs(run_dir)
    m = spec.methods[run.method]
    h, w = spec.data["size"]
    row = {"config_hash": spec.config_hash(run), "seed": run.seed, "setting": run.setting, "method": run.method,
           "tasks": run.tasks, "study_hash": spec.study_hash(run.setting), "model": m["model"],
           "backbone": spec.run.get("model", {}).get("backbone", "resnet101"), "size": f"{w}x{h}",
           "batch_size": spec.batch_size(), "iterations": final["iter"], "images_seen": final["iter"] * spec.batch_size(),
           "train_seconds": round(seconds, 1), "sec_per_iter": round(per_iter, 4),
           "finished": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "host": f"{socket.gethostname()} ({cpu_isa()})",
           "threads": torch.get_num_threads()}
    row.update({k: v for k, v in final.items() if "/" in k and k.split("/")[0] in tasks})
    return row


def pending_runs(spec: StudySpec, shard: tuple[int, int] = (1, 1)) -> list[Run]:
    """Planned runs without a row in the CSV; with ``shard=(i, n)`` only every n-th run of the
    plan from the i-th (the same split on every machine, whatever is already done)."""
    done = {row_key(r) for r in read_rows(spec.csv)}
    i, n = shard
    out = []
    for k, run in enumerate(spec.plan()):
        key = (spec.config_hash(run), str(run.seed), run.setting, run.method, run.tasks)
        if k % n == i - 1 and key not in done:
            out.append(run)
    return out


def run_study(spec: StudySpec, shard: tuple[int, int] = (1, 1), max_runs: int | None = None, log=print) -> list[dict]:
    """Train the pending runs (at most ``max_runs``), appending each row; returns the new rows."""
    todo = pending_runs(spec, shard)
    total = len(spec.plan())
    log(f"[study] {spec.name}: {total} runs planned, {len(todo)} to do" + (f" in shard {shard[0]}/{shard[1]}" if shard != (1, 1) else "")
        + (f", this time at most {max_runs}" if max_runs else "") + f"; results: {spec.csv}")
    if max_runs is not None:
        todo = todo[:max_runs]
    if not todo:
        return []
    root = ensure_dataset(spec, spec.data["generator_seed"], spec.data["num_images"], log)
    init = ensure_pretrained(spec, log) if any(r.setting == "pretrained" for r in todo) else None
    rows = []
    for k, run in enumerate(todo, 1):
        folder = run_dir(spec, run)
        with file_lock(_lock_path(folder), wait=False) as mine:
            if not mine:  # two unsharded commands side by side: each run is trained by one of them
                log(f"[study] {k}/{len(todo)} {run.name}: being trained by another process; skipped here")
                continue
            row = _train_and_record(spec, run, folder, root, init, f"{k}/{len(todo)}", log)
            if row is not None:
                rows.append(row)
    return rows


def _train_and_record(spec: StudySpec, run: Run, folder: Path, root: Path, init, count: str, log) -> dict | None:
    """Train one run (its lock held) and append its row; None if another process recorded it."""
    cfg = spec.run_config(run, root, folder.parent, init)
    t0 = time.perf_counter()
    log(f"[study] {count} {run.name} ({spec.methods[run.method]['model']}) in {folder}")
    evals = train(cfg, folder, log)
    row = make_row(spec, run, evals, folder)
    write_curve(spec.curves_dir, row, evals, spec.batch_size())
    if append_row(spec.csv, row):
        log(f"[study] {run.name} recorded ({time.perf_counter() - t0:.0f} s)")
        return row
    log(f"[study] {run.name} was recorded meanwhile by another process; not added twice")
    return None
