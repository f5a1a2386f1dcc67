"""The training engine: one loop, hooks for everything else.

``Trainer(cfg, run_dir).train()`` trains on one CPU, one GPU or, launched with
``torchrun --nproc_per_node N -m densemtl train ...``, many GPUs (DistributedDataParallel).
"""

from __future__ import annotations

import math
import random
import signal
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ..config import save_config
from ..losses import task_losses
from ..tasks import get_task, parse_task_set
from . import builders
from .checkpoint import (CheckpointError, check_model_config, load_checkpoint, load_parts, load_weights, remove_stale_temporaries,
                         rng_state, save_checkpoint, set_rng_state)
from .distributed import barrier, init_from_env, is_distributed, is_main, world_size
from .evaluate import amp_context, evaluate
from .hooks import CheckpointHook, EvalHook, LogHook, ProgressHook
from .rundir import MetricsLog, environment
from .signals import TerminationHook, exit_code

LOWER_IS_BETTER = {"rmse", "rmse_pixel", "abs_rel", "sq_rel", "rmse_log", "mean_angle", "median_angle", "rmse_angle"}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_dir_for(cfg: DictConfig) -> Path:
    name = cfg.run_name or f"seed{cfg.seed}"
    return Path(cfg.output_dir) / str(cfg.experiment) / str(name)


class Trainer:
    """Builds everything from ``cfg`` and owns the training state.

    State saved in checkpoints: model, optimiser, scheduler, task weighting, AMP scaler,
    iteration, RNG states and the best evaluation so far; data order is a function of
    (seed, epoch) and augmentation of (seed, epoch, index), so ``resume`` continues exactly.
    """

    def __init__(self, cfg: DictConfig, run_dir: str | Path | None = None, resume: bool = False, hooks=None):
        self.cfg = cfg
        self.device = init_from_env()
        self.run_dir = Path(run_dir) if run_dir else run_dir_for(cfg)
        self.tasks = parse_task_set(cfg.tasks)
        seed_everything(int(cfg.seed))
        if self.device.type == "cpu":
            torch.set_flush_denormal(True)  # denormal activations slow CPU kernels ~2x after some training
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            if torch.cuda.is_available():
                torch.backends.cudnn.benchmark = False
        # data
        self.train_set = builders.build_dataset(cfg, cfg.data.train_split, train=True)
        self.val_set = None
        if cfg.train.eval_every and not cfg.uda.target.dataset:  # UDA: evaluated on the target (_build_target)
            self.val_set = builders.build_dataset(cfg, cfg.data.val_split, train=False)
        self.train_loader, self.sampler = builders.build_loader(self.train_set, int(cfg.data.batch_size), True, int(cfg.seed), int(cfg.data.num_workers))
        self.val_loader = None
        if self.val_set is not None:
            self.val_loader, _ = builders.build_loader(self.val_set, int(cfg.data.val_batch_size), False, 0, int(cfg.data.num_workers))
        self.target_set = self.target_loader = None
        if cfg.uda.target.dataset:
            self._build_target(cfg)
        self.batches_per_epoch = self.sampler.per_epoch() // int(cfg.data.batch_size)
        if self.batches_per_epoch == 0:
            raise ValueError(f"the training split has {len(self.train_set)} samples, fewer than data.batch_size={cfg.data.batch_size} x {world_size()} processes")
        # model
        self.num_classes = self.train_set.num_classes
        self.model = builders.build_model(cfg, self.num_classes).to(self.device)
        init_ck = load_checkpoint(cfg.train.init_from) if cfg.train.init_from and not resume else None
        if init_ck is not None:
            if cfg.train.init_parts is None:
                check_model_config(init_ck, self.model.model_config, "init_from checkpoint")
                load_weights(self.model, init_ck["model"], init_ck["path"])
            else:
                parts = [p for p in cfg.train.init_parts if p != "posenet"]
                if parts:
                    load_parts(self.model, init_ck["model"], parts, init_ck["path"])
        if cfg.train.init_depth_bias and "depth" in self.tasks and not resume and not self._depth_initialised(init_ck):
            self._init_depth_bias()
        if cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.weighting = builders.build_weighting(cfg).to(self.device)
        self.posenet = None
        if cfg.selfsup.enabled:  # noqa: SIM102
            from ..selfsup import PoseNet

            if "disparity" not in self.tasks:
                raise ValueError("selfsup.enabled needs the 'disparity' task (e.g. tasks=SP)")
            if cfg.selfsup.pose_source not in ("network", "dataset"):
                raise ValueError(f"selfsup.pose_source must be 'network' or 'dataset', got {cfg.selfsup.pose_source!r}")
            if cfg.selfsup.pose_source == "network":
                self.posenet = PoseNet(cfg.selfsup.pose_backbone, pretrained=cfg.selfsup.pose_pretrained or False).to(self.device)
            pose_ck = self._pose_checkpoint(init_ck) if self.posenet is not None and not resume else None
            if pose_ck is not None:
                self.posenet.load_state_dict(pose_ck["posenet"])
        elif "disparity" in self.tasks:
            raise ValueError("the 'disparity' task is self-supervised: set selfsup.enabled=true")
        extra = [("pose", self.posenet, cfg.selfsup.lr_pose)] if self.posenet is not None else []
        self.optimizer = builders.build_optimizer(cfg, self.model, self.weighting, extra)
        self.scheduler = builders.build_scheduler(cfg, self.optimizer)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.train.amp == "fp16")
        self.net = self.model
        if is_distributed():
            if cfg.loss.weighting == "gradnorm":
                raise ValueError("loss.weighting=gradnorm is not supported with multiple processes")
            if cfg.train.sync_bn:
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
                self.net = self.model
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.uda = None
        if cfg.uda.adversarial:
            from ..uda.alignment import AdversarialAlignment

            u = cfg.uda
            self.uda = AdversarialAlignment(
                self.tasks, u.scales if u.scales is not None else self.net.supervised_scales, self.num_classes,
                weight=float(u.weight), lr=float(u.lr), betas=tuple(u.betas), power=float(u.power),
                max_steps=int(cfg.schedule.iterations), depth_ref=float(u.depth_ref), device=self.device)
            if is_distributed():
                self.uda.net = torch.nn.parallel.DistributedDataParallel(
                    self.uda.critic, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        shared = list(self.net.encoder.body.children())[-1]
        self.shared_parameters = [p for p in shared.parameters() if p.requires_grad]
        self.iter = 0
        self.max_iter = int(cfg.schedule.iterations)
        self.best = None
        self.select_ref = None
        self.meter_options = {**(self.val_set or self.train_set).meter_options(), "boundary": bool(cfg.eval.edge_boundary),
                              "num_thresholds": int(cfg.eval.num_thresholds)}
        self.metrics_log = MetricsLog(self.run_dir / "metrics.jsonl")
        self.tb = None
        if resume:
            self._resume()
        if is_main():
            self._prepare_run_dir(resume)
        self.hooks = list(hooks) if hooks is not None else [TerminationHook(), ProgressHook(), LogHook(), EvalHook(), CheckpointHook()]

    def _pose_checkpoint(self, init_ck) -> dict | None:
        """Where the pose network starts from: ``selfsup.init_pose``, else ``train.init_from``
        (whole model, or with ``posenet`` in ``train.init_parts``); ``None``: fresh."""
        parts = self.cfg.train.init_parts
        if self.cfg.selfsup.init_pose:
            ck, explicit = load_checkpoint(self.cfg.selfsup.init_pose), True
        elif init_ck is not None and (parts is None or "posenet" in parts):
            ck, explicit = init_ck, parts is not None
        else:
            return None
        if not ck.get("posenet"):
            if explicit:
                raise CheckpointError(f"{ck['path']} holds no pose network ('posenet'); it was not a self-supervised depth run")
            return None  # a whole-model init without a pose network: the pose network starts afresh
        return ck

    def _depth_initialised(self, init_ck) -> bool:
        """Whether ``train.init_from`` already filled the depth decoder (then its bias is kept)."""
        parts = self.cfg.train.init_parts
        return init_ck is not None and (parts is None or any(
            p in ("decoders", "decoders.depth") or p.startswith("decoders.depth.") for p in parts))

    def _init_depth_bias(self, n: int = 16) -> None:
        """Set the depth heads' bias to the inverse-depth code of the median valid depth of the
        first ``n`` training images (read without augmentation; no RNG is consumed). Like
        initialising a regression output at the target mean, it spares the network hundreds of
        steps of learning the code's offset (codes span ~8..650 for 1..80 m)."""
        from ..losses import depth_to_code

        vals = []
        for i in range(min(n, len(self.train_set))):
            d = self.train_set.load(i)["labels"]["depth"]
            d = d[(d > self.train_set.depth_range[0]) & (d <= self.train_set.depth_range[1])]
            if d.size:
                vals.append(np.median(d))
        if vals:
            code = float(depth_to_code(torch.tensor(float(np.median(vals)))))
            for conv in self.model.prediction_layers().get("depth", []):
                with torch.no_grad():
                    conv.bias.fill_(code)

    # --- run directory and checkpoints -----------------------------------------------------
    def _prepare_run_dir(self, resume: bool) -> None:
        import json

        self.run_dir.mkdir(parents=True, exist_ok=True)
        log = self.metrics_log.path
        if log.is_file():
            # resume: drop records written after the checkpoint; a new run: start afresh
            keep = [r for r in self.metrics_log.read() if resume and r.get("iter", 0) <= self.iter]
            log.write_text("".join(json.dumps(r) + "\n" for r in keep))
        (self.run_dir / "checkpoints").mkdir(exist_ok=True)
        remove_stale_temporaries(self.run_dir / "checkpoints", log=print)
        save_config(self.cfg, self.run_dir / "config.yaml")
        env = environment(self.device)
        env.update(dataset={"name": self.cfg.data.dataset, "num_classes": self.num_classes,
                            "class_names": list(self.train_set.class_names), "train": len(self.train_set),
                            "val": len(self.val_set) if self.val_set is not None else 0})
        (self.run_dir / ("env.json" if not resume else f"env-resume-{self.iter}.json")).write_text(json.dumps(env, indent=2))
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.iter if resume else None)

    def state_dict(self) -> dict:
        return {
            "model_config": self.net.model_config,
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "weighting": self.weighting.state_dict(),
            "posenet": self.posenet.state_dict() if self.posenet is not None else None,
            "uda": self.uda.state_dict() if self.uda is not None else None,
            "scaler": self.scaler.state_dict(),
            "iteration": self.iter,
            "rng": rng_state(),
            "best": self.best,
            "select_ref": self.select_ref,
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "dataset": {"name": self.cfg.data.dataset, "num_classes": self.num_classes,
                        "class_names": list(self.train_set.class_names), **{k: v for k, v in self.meter_options.items() if k in ("min_depth", "max_depth")}},
        }

    def save_checkpoint(self, name: str = "last.pt") -> Path:
        return save_checkpoint(self.state_dict(), self.run_dir / "checkpoints" / name)

    def _resume(self) -> None:
        path = self.run_dir / "checkpoints" / "last.pt"
        ckpt = load_checkpoint(path)
        check_model_config(ckpt, self.net.model_config, "last checkpoint")
        load_weights(self.net, ckpt["model"], str(path))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.weighting.load_state_dict(ckpt["weighting"])
        if self.posenet is not None:
            self.posenet.load_state_dict(ckpt["posenet"])
        if self.uda is not None:
            if not ckpt.get("uda"):
                raise CheckpointError(f"{path} has no discriminators: it was not written by an adversarial (uda) run")
            self.uda.load_state_dict(ckpt["uda"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.iter = int(ckpt["iteration"])
        self.best, self.select_ref = ckpt.get("best"), ckpt.get("select_ref")
        set_rng_state(ckpt["rng"])
        if is_main():
            print(f"resumed {self.run_dir} at iteration {self.iter}/{self.max_iter}")

    # --- training ----------------------------------------------------------------------------
    def step(self, batch: dict) -> dict:
        cfg = self.cfg
        x = batch["image"].to(self.device, non_blocking=True)
        if cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        labels = {t: v.to(self.device, non_blocking=True) for t, v in batch["labels"].items()}
        self.model.train()
        if cfg.train.freeze_bn:
            for m in self.model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        self.optimizer.zero_grad(set_to_none=True)
        with amp_context(self.device, cfg.train.amp):
            out = self.model(x)
        losses = self._selfsup_losses(out, batch, x, labels) if cfg.selfsup.enabled else task_losses(out, labels)
        total, info = self.weighting.backward(losses, shared_parameters=self.shared_parameters,
                                              scaler=self.scaler if self.scaler.is_enabled() else None)
        logs = {"loss": float(total), **{f"loss/{t}": float(v.detach()) for t, v in losses.items()}, **info}
        if self.uda is not None:
            out_t = self._adversarial_backward(logs)
        if cfg.optim.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, float(cfg.optim.clip_grad_norm)))
        if not math.isfinite(logs["loss"]) and not self.scaler.is_enabled():
            # before the step: the weights stay those of the last good iteration
            raise FloatingPointError(f"non-finite loss {logs['loss']} at iteration {self.iter + 1}: {logs}")
        self.scaler.step(self.optimizer)  # with fp16 the scaler skips non-finite steps itself
        self.scaler.update()
        self.scheduler.step()
        self.weighting.step_end()
        if self.uda is not None:
            logs.update(self.uda.discriminator_step(out, out_t, x.shape[-2:]))
        return logs

    def _adversarial_backward(self, logs: dict) -> dict:
        """Target batch: the model learns to make the (frozen) discriminators answer "source"."""
        xt = self._next_target_batch()["image"].to(self.device, non_blocking=True)
        if self.cfg.train.channels_last:
            xt = xt.contiguous(memory_format=torch.channels_last)
        with amp_context(self.device, self.cfg.train.amp):
            out_t = self.model(xt)
        self.uda.check_outputs(out_t)
        adv, info = self.uda.generator_loss(out_t, xt.shape[-2:])
        (self.scaler.scale(adv) if self.scaler.is_enabled() else adv).backward()
        logs["loss/adversarial"] = float(adv.detach())
        logs["loss"] += logs["loss/adversarial"]
        logs.update(info)
        return out_t

    def _build_target(self, cfg) -> None:
        """UDA target domain: its val split replaces the source's for evaluation; with
        ``uda.adversarial`` its train split feeds unlabelled batches (labels never used)."""
        tcfg = builders.target_config(cfg)
        if cfg.train.eval_every:
            self.val_set = builders.build_dataset(tcfg, tcfg.data.val_split, train=False)
            if "semseg" in self.tasks and self.val_set.num_classes != self.train_set.num_classes:
                raise ValueError(
                    f"source {cfg.data.dataset} has {self.train_set.num_classes} classes but target {tcfg.data.dataset} "
                    f"has {self.val_set.num_classes}: use a common label set (data.options.label_set and "
                    f"uda.target.options.label_set, e.g. uda8 for VKITTI2 -> Cityscapes)")
            self.val_loader, _ = builders.build_loader(self.val_set, int(cfg.data.val_batch_size), False, 0, int(cfg.data.num_workers))
        if cfg.uda.adversarial:
            self.target_set = builders.build_dataset(tcfg, tcfg.data.train_split, train=True)
            self.target_loader, self.target_sampler = builders.build_loader(
                self.target_set, int(cfg.data.batch_size), True, int(cfg.seed) + 1, int(cfg.data.num_workers))
            self.target_per_epoch = self.target_sampler.per_epoch() // int(cfg.data.batch_size)
            if self.target_per_epoch == 0:
                raise ValueError(f"the target training split has {len(self.target_set)} samples, fewer than data.batch_size")
            self._target_stream = None

    def _target_batches(self, start: int):
        """Endless, seeded, per-epoch shuffled target batches from position ``start`` (so a
        resumed run sees the same target batches)."""
        epoch, offset = divmod(start, self.target_per_epoch)
        while True:
            self.target_sampler.set_epoch(epoch, offset * int(self.cfg.data.batch_size))
            self.target_set.set_epoch(epoch)
            yield from self.target_loader
            epoch, offset = epoch + 1, 0

    def _next_target_batch(self) -> dict:
        if self._target_stream is None:
            self._target_stream = self._target_batches(self.iter)
        return next(self._target_stream)

    def _selfsup_losses(self, out, batch, x, labels) -> dict:
        """Supervised tasks at ``selfsup.supervised_scales`` + the Monodepth2 objective for disparity."""
        from ..selfsup import self_supervised_depth_loss

        s = self.cfg.selfsup
        sup = {t: {k: v for k, v in out[t].items() if k in set(s.supervised_scales)} for t in self.tasks if t != "disparity"}
        losses = task_losses(sup, {t: labels[t] for t in sup}) if sup else {}
        frames = {k: v.to(self.device) for k, v in batch["frames"].items()}
        if self.posenet is not None:
            poses = {k: self.posenet.relative_pose(x, frames[k], source_is_previous=k < 0) for k in frames}
        elif "poses" in batch:  # selfsup.pose_source=dataset: the known camera motion
            poses = {k: batch["poses"][k].to(self.device) for k in frames}
        else:
            raise ValueError(f"selfsup.pose_source=dataset, but {self.cfg.data.dataset} gives no camera poses "
                             f"(procedural sequences do); use selfsup.pose_source=network")
        disp = {k: v.float() for k, v in out["disparity"].items() if k in set(s.disparity_scales)}
        losses["disparity"], _ = self_supervised_depth_loss(disp, batch["image"].to(self.device), frames, poses,
                                                            batch["K"].to(self.device), float(s.smoothness))
        return losses

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
                      f"`densemtl train --resume {self.run_dir}`")
            raise SystemExit(exit_code(e))
        finally:
            for h in self.hooks:
                h.after_train(self)
            if self.tb is not None:
                self.tb.close()
        barrier()
        return self.best

    # --- evaluation ----------------------------------------------------------------------------
    def evaluate(self) -> dict:
        return evaluate(self.model, self.val_loader, self.tasks, self.meter_options, self.device,
                        self.cfg.train.amp, bool(self.cfg.train.channels_last), progress=bool(self.cfg.train.progress))

    def selection_score(self, results: dict) -> float:
        """Higher is better. ``train.select_metric``: ``task/metric`` or ``auto`` (the headline
        metric for one task; for several, the mean signed relative change of the headline
        metrics against this run's first evaluation)."""
        sel = self.cfg.train.select_metric
        if sel != "auto":
            task, metric = sel.split("/", 1)
            if task not in results or metric not in results[task]:
                raise KeyError(f"train.select_metric '{sel}' is not among the evaluated metrics")
            v = results[task][metric]
            return -v if metric in LOWER_IS_BETTER else v
        heads = {t: results[t][get_task(t).headline_metric] for t in self.tasks}
        if len(self.tasks) == 1:
            t = self.tasks[0]
            return heads[t] if get_task(t).higher_is_better else -heads[t]
        if self.select_ref is None:
            self.select_ref = {}
        for t, v in heads.items():  # a task's reference is its first finite, non-zero value
            if t not in self.select_ref and math.isfinite(v) and v != 0:
                self.select_ref[t] = v
        terms = [(1 if get_task(t).higher_is_better else -1) * (heads[t] - ref) / abs(ref)
                 for t, ref in self.select_ref.items() if math.isfinite(heads[t])]
        return sum(terms) / len(terms) if terms else 0.0

    @torch.no_grad()
    def log_images(self, max_images: int = 2) -> None:
        """Input, ground truth and prediction of each task for the first validation images."""
        batch = next(iter(self.val_loader))
        x = batch["image"][:max_images].to(self.device)
        self.model.eval()
        out = self.model(x)
        self.model.train()
        for i in range(x.shape[0]):
            rows = [np.asarray(x[i].permute(1, 2, 0).cpu().numpy() * 255, dtype=np.uint8)]
            for t in self.tasks:
                task = get_task(t)
                pred = task.decode(out[t][self.net.eval_scale][i : i + 1].float())[0]
                opts = {"num_classes": self.num_classes}
                rows.append(np.concatenate([task.render(batch["labels"][t][i], **opts), task.render(pred, **opts)], 1))
            w = max(r.shape[1] for r in rows)
            grid = np.concatenate([np.pad(r, ((0, 0), (0, w - r.shape[1]), (0, 0))) for r in rows], 0)
            self.tb.add_image(f"val/sample{i}", grid, self.iter, dataformats="HWC")
