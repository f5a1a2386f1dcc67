"""Trainer hooks (detectron2-style): progress, logging, evaluation, model selection, images,
checkpoints. A hook that keeps state across a resume defines ``state_dict`` /
``load_state_dict`` (its keys are top-level checkpoint keys)."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..tasks import get_task
from .distributed import is_main


class HookBase:
    """Override any of ``before_train``, ``after_step``, ``after_eval``, ``after_train``."""

    def before_train(self, trainer) -> None:
        pass

    def after_step(self, trainer, logs: dict) -> None:
        pass

    def after_eval(self, trainer, results: dict, record: dict) -> None:
        """Called on the main process after each evaluation, before ``record`` (the
        ``metrics.jsonl`` line) is written; hooks may add keys to it."""

    def after_train(self, trainer) -> None:
        pass


def _due(trainer, every: int) -> bool:
    return bool(every) and (trainer.iter % int(every) == 0 or trainer.iter == trainer.max_iter)


class ProgressHook(HookBase):
    """A progress bar with loss and ETA."""

    def before_train(self, trainer):
        from tqdm import tqdm

        self.bar = tqdm(total=trainer.max_iter, initial=trainer.iter, desc=trainer.cfg.experiment, dynamic_ncols=True,
                        disable=not (is_main() and trainer.cfg.train.progress))

    def after_step(self, trainer, logs):
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)

    def after_train(self, trainer):
        self.bar.close()


class LogHook(HookBase):
    """Training scalars to ``metrics.jsonl`` and TensorBoard every ``train.log_every`` steps."""

    def before_train(self, trainer):
        self.t0, self.i0 = time.perf_counter(), trainer.iter

    def after_step(self, trainer, logs):
        if not (is_main() and _due(trainer, trainer.cfg.train.log_every)):
            return
        dt = (time.perf_counter() - self.t0) / max(trainer.iter - self.i0, 1)
        self.t0, self.i0 = time.perf_counter(), trainer.iter
        rec = {"type": "train", "iter": trainer.iter, **logs, "sec_per_iter": dt,
               "lr": [g["lr"] for g in trainer.optimizer.param_groups]}
        trainer.run.metrics.write(rec)
        if trainer.run.tb is not None:
            for k, v in logs.items():
                trainer.run.tb.add_scalar(f"train/{k}", v, trainer.iter)
            for g in trainer.optimizer.param_groups:
                trainer.run.tb.add_scalar(f"lr/{g.get('name', 'group')}", g["lr"], trainer.iter)


class EvalHook(HookBase):
    """Evaluate every ``train.eval_every`` steps and at the end; the record goes to
    ``metrics.jsonl`` and TensorBoard after the hooks' ``after_eval``."""

    def after_step(self, trainer, logs):
        if trainer.val_loader is None or not _due(trainer, trainer.cfg.train.eval_every):
            return
        results = trainer.evaluate()
        if not is_main():
            return
        flat = {f"{t}/{k}": v for t, d in results.items() for k, v in d.items()}
        rec = {"type": "eval", "iter": trainer.iter, "split": trainer.cfg.data.val_split}
        for h in trainer.hooks:
            h.after_eval(trainer, results, rec)
        rec.update(flat)
        trainer.run.metrics.write(rec)
        if trainer.run.tb is not None:
            for k, v in flat.items():
                if np.isfinite(v):
                    trainer.run.tb.add_scalar(f"val/{k}", v, trainer.iter)


class BestCheckpointHook(HookBase):
    """Model selection: score each evaluation (higher is better) and keep the best one in
    ``checkpoints/best.pt``. ``train.select_metric``: ``task/metric``, or ``auto``: the
    headline metric for one task; for several, the mean signed relative change of the
    headline metrics against this run's first evaluation (each task's first finite, non-zero
    value)."""

    def __init__(self, select_metric: str = "auto"):
        self.select_metric = select_metric
        self.best: dict | None = None
        self.select_ref: dict | None = None

    def score(self, results: dict, tasks) -> float:
        sel = self.select_metric
        if sel != "auto":
            task, metric = sel.split("/", 1)
            if task not in results or metric not in results[task]:
                raise KeyError(f"train.select_metric '{sel}' is not among the evaluated metrics")
            v = results[task][metric]
            return v if get_task(task).metric_higher_is_better(metric) else -v
        heads = {t: results[t][get_task(t).headline_metric] for t in tasks}
        if len(tasks) == 1:
            t = tasks[0]
            return heads[t] if get_task(t).higher_is_better else -heads[t]
        if self.select_ref is None:
            self.select_ref = {}
        for t, v in heads.items():
            if t not in self.select_ref and math.isfinite(v) and v != 0:
                self.select_ref[t] = v
        terms = [(1 if get_task(t).higher_is_better else -1) * (heads[t] - ref) / abs(ref)
                 for t, ref in self.select_ref.items() if math.isfinite(heads[t])]
        return sum(terms) / len(terms) if terms else 0.0

    def after_eval(self, trainer, results, record):
        score = record["score"] = self.score(results, trainer.tasks)
        if self.best is None or score > self.best["score"]:
            self.best = {"score": score, "iter": trainer.iter, "metrics": results}
            trainer.save_checkpoint("best.pt")

    def state_dict(self) -> dict:
        return {"best": self.best, "select_ref": self.select_ref}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.select_ref = state.get("best"), state.get("select_ref")


class ImageHook(HookBase):
    """Input, ground truth and prediction of each task for the first validation images, to
    TensorBoard at the evaluations due every ``train.image_every`` steps."""

    def __init__(self, max_images: int = 2):
        self.max_images = max_images

    def after_eval(self, trainer, results, record):
        if trainer.run.tb is None or not _due(trainer, trainer.cfg.train.image_every):
            return
        with torch.no_grad():
            batch = next(iter(trainer.val_loader))
            x = batch["image"][: self.max_images].to(trainer.device)
            was_training = trainer.ddp_model.training
            trainer.ddp_model.eval()
            out = trainer.ddp_model(x)
            trainer.ddp_model.train(was_training)
        for i in range(x.shape[0]):
            rows = [np.asarray(x[i].permute(1, 2, 0).cpu().numpy() * 255, dtype=np.uint8)]
            for t in trainer.tasks:
                task = get_task(t)
                pred = task.decode(out[t][trainer.model.eval_scale][i : i + 1].float())[0]
                opts = {"num_classes": trainer.num_classes}
                rows.append(np.concatenate([task.render(batch["labels"][t][i], **opts), task.render(pred, **opts)], 1))
            w = max(r.shape[1] for r in rows)
            grid = np.concatenate([np.pad(r, ((0, 0), (0, w - r.shape[1]), (0, 0))) for r in rows], 0)
            trainer.run.tb.add_image(f"val/sample{i}", grid, trainer.iter, dataformats="HWC")


class CheckpointHook(HookBase):
    """Save ``checkpoints/last.pt`` every ``train.checkpoint_every`` steps and at the end."""

    def after_step(self, trainer, logs):
        if is_main() and _due(trainer, trainer.cfg.train.checkpoint_every):
            trainer.save_checkpoint("last.pt")
