"""Trainer hooks (detectron2-style): logging, progress, evaluation, checkpointing."""

from __future__ import annotations

import time

import numpy as np
import torch

from .distributed import is_main


class HookBase:
    """Override any of ``before_train``, ``after_step``, ``after_train``."""

    def before_train(self, trainer) -> None:
        pass

    def after_step(self, trainer, logs: dict) -> None:
        pass

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
        trainer.metrics_log.write(rec)
        if trainer.tb is not None:
            for k, v in logs.items():
                trainer.tb.add_scalar(f"train/{k}", v, trainer.iter)
            for g in trainer.optimizer.param_groups:
                trainer.tb.add_scalar(f"lr/{g.get('name', 'group')}", g["lr"], trainer.iter)


class EvalHook(HookBase):
    """Evaluate every ``train.eval_every`` steps and at the end; keep the best checkpoint."""

    def after_step(self, trainer, logs):
        if trainer.val_loader is None or not _due(trainer, trainer.cfg.train.eval_every):
            return
        results = trainer.evaluate()
        if not is_main():
            return
        flat = {f"{t}/{k}": v for t, d in results.items() for k, v in d.items()}
        score = trainer.selection_score(results)
        rec = {"type": "eval", "iter": trainer.iter, "split": trainer.cfg.data.val_split, "score": score, **flat}
        trainer.metrics_log.write(rec)
        if trainer.tb is not None:
            for k, v in flat.items():
                if np.isfinite(v):
                    trainer.tb.add_scalar(f"val/{k}", v, trainer.iter)
            if _due(trainer, trainer.cfg.train.image_every):
                trainer.log_images()
        if trainer.best is None or score > trainer.best["score"]:
            trainer.best = {"score": score, "iter": trainer.iter, "metrics": results}
            trainer.save_checkpoint("best.pt")


class CheckpointHook(HookBase):
    """Save ``checkpoints/last.pt`` every ``train.checkpoint_every`` steps and at the end."""

    def after_step(self, trainer, logs):
        if is_main() and _due(trainer, trainer.cfg.train.checkpoint_every):
            trainer.save_checkpoint("last.pt")
