"""Adversarial output alignment for multi-task domain adaptation (paper section 4.5).

Each step, after the source batch's supervised backward: the model sees a target batch and
learns to make the (frozen) per-task, per-scale discriminators answer "source"; after the
model's optimiser step the discriminators take one step on the detached source and target
maps. The unlabelled target stream is seeded and positioned by the iteration, so a resumed
run sees the same target batches.
"""

from __future__ import annotations

from ...uda.alignment import AdversarialAlignment
from ..builders import build_dataset, build_loader, target_config
from ..checkpoint import CheckpointError
from .base import Objective, StepContext, register_objective


@register_objective("adversarial")
class AdversarialDomainAlignment(Objective):
    checkpoint_key = "uda"

    @classmethod
    def enabled(cls, cfg):
        return bool(cfg.uda.adversarial)

    def __init__(self, trainer):
        cfg, u = trainer.cfg, trainer.cfg.uda
        self.device, self.fast = trainer.device, trainer.fast
        self.batch_size = int(cfg.data.batch_size)
        self.alignment = AdversarialAlignment(
            trainer.tasks, u.scales if u.scales is not None else trainer.model.supervised_scales, trainer.num_classes,
            weight=float(u.weight), lr=float(u.lr), betas=tuple(u.betas), power=float(u.power),
            max_steps=int(cfg.schedule.iterations), depth_ref=float(u.depth_ref), reduction=str(u.reduction),
            depth_map=str(u.depth_map), normals_map=str(u.normals_map), flip=bool(u.flip),
            depth_range=tuple(trainer.train_set.depth_range), device=self.device)
        tcfg = target_config(cfg)
        self.target_set = build_dataset(tcfg, tcfg.data.train_split, train=True)
        self.loader, self.sampler = build_loader(self.target_set, self.batch_size, True, int(cfg.seed) + 1,
                                                  int(cfg.data.num_workers))
        self.per_epoch = self.sampler.per_epoch() // self.batch_size
        if self.per_epoch == 0:
            raise ValueError(f"the target training split has {len(self.target_set)} samples, fewer than data.batch_size")
        self._stream = None

    def wrap_distributed(self, wrap):
        self.alignment.ddp_critic = wrap(self.alignment.critic)

    def _batches(self, start: int):
        """Endless, seeded, per-epoch shuffled target batches from position ``start``."""
        epoch, offset = divmod(start, self.per_epoch)
        while True:
            self.sampler.set_epoch(epoch, offset * self.batch_size)
            self.target_set.set_epoch(epoch)
            yield from self.loader
            epoch, offset = epoch + 1, 0

    def after_backward(self, trainer, ctx: StepContext):
        """Target batch: the model learns to make the frozen discriminators answer "source"."""
        if self._stream is None:
            self._stream = self._batches(trainer.iter)
        xt = self.fast.inputs(next(self._stream)["image"].to(self.device, non_blocking=True))
        with self.fast.autocast(self.device):
            out_t = trainer.ddp_model(xt)
        self.alignment.check_outputs(out_t)
        # maps that depend on the source batch's labels (the min-max depth map) use the same
        # source statistics for this step's target and source maps
        ctx.extra["map_options"] = self.alignment.source_options(ctx.labels)
        adv, info = self.alignment.generator_loss(out_t, xt.shape[-2:], ctx.extra["map_options"])
        (trainer.scaler.scale(adv) if trainer.scaler.is_enabled() else adv).backward()
        ctx.logs["loss/adversarial"] = float(adv.detach())
        ctx.logs["loss"] += ctx.logs["loss/adversarial"]
        ctx.logs.update(info)
        ctx.extra["target_outputs"] = out_t

    def after_optimizer_step(self, trainer, ctx: StepContext):
        ctx.logs.update(self.alignment.discriminator_step(ctx.outputs, ctx.extra["target_outputs"], ctx.image.shape[-2:],
                                                          ctx.extra["map_options"]))

    def state_dict(self):
        return self.alignment.state_dict()

    def load_state_dict(self, state, path):
        if not state:
            raise CheckpointError(f"{path} has no discriminators: it was not written by an adversarial (uda) run")
        self.alignment.load_state_dict(state)
