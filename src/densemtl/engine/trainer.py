"""The training loop: data, model and optimiser built from the config; the training regime
in objectives (:mod:`densemtl.engine.objectives`); everything else in hooks.

``Trainer(cfg, run_dir).train()`` trains on one CPU, one GPU or, launched with
``torchrun --nproc_per_node N -m densemtl train ...``, many GPUs (DistributedDataParallel).
See docs/architecture.md for one batch's path through the code.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ..tasks import get_protocol, parse_task_set
from . import builders, fastpath, warmstart
from .checkpoint import check_model_config, load_checkpoint, load_weights, save_checkpoint
from .distributed import barrier, init_from_env, is_distributed, is_main
from .evaluate import evaluate_scales
from .hooks import BestCheckpointHook, CheckpointHook, EvalHook, HookBase, ImageHook, LogHook, ProgressHook
from .objectives import OBJECTIVES, StepContext, objective_classes
from .rng import rng_state, seed_everything, set_rng_state
from .rundir import RunDirectory, environment, run_dir_for
from .signals import TerminationHook, exit_code


def default_hooks(cfg: DictConfig) -> list[HookBase]:
    return [TerminationHook(), ProgressHook(), LogHook(), EvalHook(),
            BestCheckpointHook(cfg.train.select_metric, cfg.train.select_scale), ImageHook(), CheckpointHook()]


class Trainer:
    """Builds everything from ``cfg`` and owns the training state.

    Attributes: ``model`` is the bare multi-task model (its weights, its ``state_dict``);
    ``ddp_model`` is what the training step calls: ``model`` itself, or its
    DistributedDataParallel wrapper with several processes. ``objectives``: the training
    regime (one primary objective giving the task losses, then auxiliary ones);
    ``hooks``: progress, logging, evaluation, model selection, checkpoints.

    State saved in checkpoints: model, optimiser, scheduler, task weighting, AMP scaler,
    objectives' and hooks' states, iteration and RNG states; data order is a function of
    (seed, epoch) and augmentation of (seed, epoch, index), so ``resume`` continues exactly.
    """

    def __init__(self, cfg: DictConfig, run_dir: str | Path | None = None, resume: bool = False, hooks=None):
        self.cfg = cfg
        self.device = init_from_env()
        self.run = RunDirectory(run_dir if run_dir else run_dir_for(cfg))
        self.tasks, self.protocol = parse_task_set(cfg.tasks), get_protocol(cfg.protocol)
        seed_everything(int(cfg.seed))
        if self.device.type == "cpu":
            torch.set_flush_denormal(True)  # denormal activations slow CPU kernels ~2x after some training
        self.fast = fastpath.resolve(cfg, self.device)  # autocast, memory format, compile, fused Adam: chosen once
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            if torch.cuda.is_available():
                torch.backends.cudnn.benchmark = False
        self.train_set, self.train_loader, self.sampler, self.batches_per_epoch = builders.build_train_data(cfg)
        self.val_set, self.val_loader = builders.build_eval_data(cfg, self.train_set)
        self.num_classes = self.train_set.num_classes
        self.model = builders.build_model(cfg, self.num_classes).to(self.device)
        init_ck = warmstart.load_init_checkpoint(cfg) if not resume else None
        src = cfg.train.init_decoder_source
        warmstart.init_model(self.model, init_ck, cfg.train.init_parts, src, log=print if is_main() else lambda _: None)
        if cfg.train.init_depth_bias and not resume:
            keep = [t for t in self.tasks if warmstart.decoder_initialised(t, init_ck, cfg.train.init_parts, src)]
            warmstart.init_head_biases(self.model, self.train_set, self.tasks, skip=keep)
        self.fast.prepare(self.model)  # memory format, activation checkpointing
        self.weighting = builders.build_weighting(cfg).to(self.device)
        self.objectives = [cls(self) for cls in objective_classes(cfg)]
        for o in self.objectives if not resume else ():
            o.warm_start(init_ck)
        extra = [g for o in self.objectives for g in o.param_groups()]
        self.optimizer = builders.build_optimizer(cfg, self.model, self.weighting, extra, fused=self.fast.fused)
        self.scheduler = builders.build_scheduler(cfg, self.optimizer)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.fast.amp == "fp16")
        self.ddp_model = self.fast.wrap(self._distribute(cfg))  # compiled if fast.compile (eager on failure)
        shared = list(self.model.encoder.body.children())[-1]
        self.shared_parameters = [p for p in shared.parameters() if p.requires_grad]
        self.iter, self.max_iter = 0, int(cfg.schedule.iterations)
        self.meter_options = {**(self.val_set or self.train_set).meter_options(), "boundary": bool(cfg.eval.edge_boundary),
                              "num_thresholds": int(cfg.eval.num_thresholds),
                              "median_scaling": bool(cfg.eval.depth_median_scaling)}
        self.hooks = list(hooks) if hooks is not None else default_hooks(cfg)
        if resume:
            self._resume()
        if is_main():
            env = environment(self.device)
            env.update(protocol=self.protocol.name, fast_path=self.fast.as_dict(),
                       dataset={"name": cfg.data.dataset, "num_classes": self.num_classes,
                                "class_names": list(self.train_set.class_names),
                                "train": len(self.train_set), "val": len(self.val_set) if self.val_set is not None else 0})
            self.run.open(cfg, env, resume, self.iter)

    # --- construction ----------------------------------------------------------------------
    def _distribute(self, cfg) -> torch.nn.Module:
        if not is_distributed():
            return self.model
        if cfg.loss.weighting == "gradnorm":
            raise ValueError("loss.weighting=gradnorm is not supported with multiple processes")
        if cfg.train.sync_bn:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)

        def wrap(module):
            return torch.nn.parallel.DistributedDataParallel(
                module, device_ids=[self.device.index] if self.device.type == "cuda" else None)

        for o in self.objectives:
            o.wrap_distributed(wrap)
        return wrap(self.model)

    # --- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {
            "model_config": self.model.model_config,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "weighting": self.weighting.state_dict(),
            **{cls.checkpoint_key: None for cls in OBJECTIVES.values() if cls.checkpoint_key},
            **{o.checkpoint_key: o.state_dict() for o in self.objectives if o.checkpoint_key},
            "scaler": self.scaler.state_dict(),
            "iteration": self.iter,
            "rng": rng_state(),
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "protocol": self.protocol.name,
            "dataset": {"name": self.cfg.data.dataset, "num_classes": self.num_classes,
                        "class_names": list(self.train_set.class_names),
                        **{k: v for k, v in self.meter_options.items() if k in ("min_depth", "max_depth")}},
        }
        for h in self.hooks:
            if hasattr(h, "state_dict"):
                state.update(h.state_dict())
        return state

    def save_checkpoint(self, name: str = "last.pt") -> Path:
        return save_checkpoint(self.state_dict(), self.run.checkpoints / name)

    def _resume(self) -> None:
        path = self.run.checkpoints / "last.pt"
        ckpt = load_checkpoint(path)
        check_model_config(ckpt, self.model.model_config, "last checkpoint")
        load_weights(self.model, ckpt["model"], str(path))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.weighting.load_state_dict(ckpt["weighting"])
        for o in self.objectives:
            if o.checkpoint_key:
                o.load_state_dict(ckpt.get(o.checkpoint_key), str(path))
        self.scaler.load_state_dict(ckpt["scaler"])
        self.iter = int(ckpt["iteration"])
        for h in self.hooks:
            if hasattr(h, "load_state_dict"):
                h.load_state_dict(ckpt)
        set_rng_state(ckpt["rng"])
        if is_main():
            print(f"resumed {self.run.path} at iteration {self.iter}/{self.max_iter}")

    # --- training ----------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.run.path

    def objective(self, name: str):
        """The active objective registered as ``name`` (e.g. ``"adversarial"``)."""
        found = [o for o in self.objectives if o.name == name]
        if not found:
            raise KeyError(f"objective '{name}' is not active; active: {', '.join(o.name for o in self.objectives)}")
        return found[0]

    @property
    def best(self) -> dict | None:
        """The best evaluation so far (from the model-selection hook, if there is one)."""
        return next((h.best for h in self.hooks if hasattr(h, "best")), None)

    def step(self, batch: dict) -> dict:
        cfg = self.cfg
        x = self.fast.inputs(batch["image"].to(self.device, non_blocking=True))
        labels = {t: v.to(self.device, non_blocking=True) for t, v in batch["labels"].items()}
        self.ddp_model.train()
        if cfg.train.freeze_bn:
            for m in self.ddp_model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        self.optimizer.zero_grad(set_to_none=True)
        with self.fast.autocast(self.device):
            out = self.ddp_model(x)
        ctx = StepContext(batch, x, labels, out)
        losses = self.objectives[0].losses(ctx)
        total, info = self.weighting.backward(losses, shared_parameters=self.shared_parameters,
                                              scaler=self.scaler if self.scaler.is_enabled() else None)
        ctx.logs.update({"loss": float(total), **{f"loss/{t}": float(v.detach()) for t, v in losses.items()}, **info})
        for o in self.objectives:
            o.after_backward(self, ctx)
        if cfg.optim.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            ctx.logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, float(cfg.optim.clip_grad_norm)))
        if not math.isfinite(ctx.logs["loss"]) and not self.scaler.is_enabled():
            # before the step: the weights stay those of the last good iteration
            raise FloatingPointError(f"non-finite loss {ctx.logs['loss']} at iteration {self.iter + 1}: {ctx.logs}")
        self.scaler.step(self.optimizer)  # with fp16 the scaler skips non-finite steps itself
        self.scaler.update()
        self.scheduler.step()
        self.weighting.step_end()
        for o in self.objectives:
            o.after_optimizer_step(self, ctx)
        return ctx.logs

    def train(self) -> dict | None:
        for h in self.hooks:
            h.before_train(self)
        bs = int(self.cfg.data.batch_size)
        try:
            while self.iter < self.max_iter:
                epoch, offset = divmod(self.iter, self.batches_per_epoch)
                self.sampler.set_epoch(epoch, offset * bs)
                self.train_set.set_epoch(epoch)
                for batch in self.train_loader:
                    logs = self.step(batch)
                    self.iter += 1
                    for h in self.hooks:
                        h.after_step(self, logs)
                    if self.iter % self.batches_per_epoch == 0:
                        self.weighting.epoch_end()
                    if self.iter >= self.max_iter:
                        break
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (TerminationHook)
            if is_main():
                path = self.save_checkpoint("last.pt")
                print(f"\ninterrupted at iteration {self.iter}: saved {path}; continue with "
                      f"`densemtl train --resume {self.run.path}`")
            raise SystemExit(exit_code(e))
        finally:
            for h in self.hooks:
                h.after_train(self)
            self.run.close()
        barrier()
        return self.best

    def evaluate(self, scales=None) -> dict:
        """Run's protocol: ``{task: {metric: v}}`` at the evaluation scale; ``scales`` ("all"/list): ``{scale: ...}``."""
        one, c = scales is None, self.cfg
        out = evaluate_scales(self.ddp_model, self.val_loader, self.tasks, self.meter_options, self.device, self.fast.amp,
                              self.fast.channels_last, progress=bool(c.train.progress),
                              scales=[self.model.eval_scale] if one else None if scales == "all" else scales,
                              boundary_scales={self.model.eval_scale, c.train.select_scale} - {None}, protocol=self.protocol)
        return out[self.model.eval_scale] if one else out
