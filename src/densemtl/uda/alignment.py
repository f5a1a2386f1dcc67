"""Output-level adversarial alignment (paper section 4.5): the pieces of one training step.

Order within a step (done by the trainer):

1. supervised loss on the source batch, backward;
2. :meth:`AdversarialAlignment.generator_loss` on the target batch's outputs (discriminators
   frozen, every discriminator asked to say "source"), times ``weight``, backward;
3. the model's optimiser step;
4. :meth:`AdversarialAlignment.discriminator_step` on the *detached* source and target outputs.

Maps that depend on the source batch's labels (the released min-max depth map) get them
through :meth:`AdversarialAlignment.source_options`, called once per step on the source labels
and passed to both calls.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..tasks import get_task
from .adversarial import SOURCE_LABEL, TARGET_LABEL, bce_to_label, build_discriminator_optimizer, set_requires_grad
from .discriminator import build_discriminators
from .maps import alignment_maps, map_channels
from .schedule import build_poly_scheduler

REDUCTIONS = ("sum", "mean")  # uda.reduction: how the (task, scale) pairs' losses combine


class DomainCritic(nn.Module):
    """All discriminators as one module: ``forward(maps, label) -> {key: BCE loss}`` (so that
    one DistributedDataParallel wrapper can reduce their gradients)."""

    def __init__(self, discriminators: nn.ModuleDict):
        super().__init__()
        self.discriminators = discriminators

    def forward(self, maps: dict[str, torch.Tensor], label: float) -> dict[str, torch.Tensor]:
        missing = [k for k in maps if k not in self.discriminators]
        if missing:
            raise KeyError(f"no discriminator for model output(s) {missing}; discriminators: {list(self.discriminators)}")
        return {k: bce_to_label(self.discriminators[k](m), label) for k, m in maps.items()}


class AdversarialAlignment:
    """Discriminators (one per task and output scale), their Adam optimiser and poly decay.

    Args:
        tasks: aligned tasks; scales: output scales to align (the model's supervised scales).
        num_classes: segmentation classes (width of the self-information map).
        weight: adversarial loss weight of the model (paper: 0.005).
        lr, betas, power, max_steps: Adam and polynomial decay of the discriminators.
        depth_ref: metres mapped to 0.5 by the ``ratio`` depth map (:func:`densemtl.tasks.depth.depth_map`).
        reduction: ``sum`` or ``mean`` of the per-(task, scale) BCE losses (the released code: mean).
        depth_map: ``ratio`` (fixed, label-free) or ``minmax`` (relu of the code, min-max
            normalised by the source batch's label codes, the released code).
        normals_map: ``shifted`` (unit vectors mapped to [0, 1]) or ``unit`` (the released code).
        flip: discriminators mirror their input with probability 0.5 (the released code).
        depth_range: ``(min_depth, max_depth)`` whose codes replace the source range of a batch
            without valid depth (``minmax`` map).
    """

    def __init__(self, tasks, scales, num_classes: int | None, *, weight: float = 0.005, lr: float = 1e-4,
                 betas=(0.9, 0.99), power: float = 0.9, max_steps: int = 1, depth_ref: float = 10.0,
                 reduction: str = "sum", depth_map: str = "ratio", normals_map: str = "shifted", flip: bool = False,
                 depth_range=(1e-3, 80.0), device: torch.device | str = "cpu"):
        if reduction not in REDUCTIONS:
            raise ValueError(f"uda.reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
        self.tasks, self.scales, self.weight = tuple(tasks), tuple(sorted(int(s) for s in scales)), float(weight)
        self.reduction = reduction
        discs = build_discriminators(self.tasks, self.scales, map_channels(self.tasks, num_classes), flip=bool(flip))
        self.critic = DomainCritic(discs).to(device)
        # the module the discriminator step calls: ``critic`` itself, or its DistributedDataParallel
        # wrapper with several processes (the generator pass calls the bare ``critic``)
        self.ddp_critic: nn.Module = self.critic
        self.optimizer = build_discriminator_optimizer(discs, lr=lr, betas=betas)
        self.max_steps = int(max_steps)
        self.scheduler = build_poly_scheduler(self.optimizer, max_steps, power)
        self.map_options = {"depth": {"mode": depth_map, "ref_depth": float(depth_ref)}, "normals": {"mode": normals_map}}
        self.depth_range = tuple(float(v) for v in depth_range)

    def source_options(self, labels: dict) -> dict:
        """Per-step map options from the source batch's ``labels`` ``{task: label}``
        (:meth:`densemtl.tasks.Task.alignment_options`), for this step's source and target maps."""
        lo, hi = self.depth_range
        out = {}
        for t in self.tasks:
            if t in labels:
                extra = get_task(t).alignment_options(labels[t], **self.map_options.get(t, {}), min_depth=lo, max_depth=hi)
                if extra:
                    out[t] = extra
        return out

    def _maps(self, outputs, size, step_options=None):
        opts = {t: {**self.map_options.get(t, {}), **(step_options or {}).get(t, {})} for t in self.tasks}
        return alignment_maps({t: {s: outputs[t][s] for s in self.scales} for t in self.tasks}, size, opts)

    def _reduce(self, losses: dict) -> torch.Tensor:
        total = sum(losses.values())
        return total / len(losses) if self.reduction == "mean" else total

    def check_outputs(self, outputs) -> None:
        for t in self.tasks:
            missing = [s for s in self.scales if s not in outputs.get(t, {})]
            if missing:
                raise ValueError(f"uda: the model gives no '{t}' output at scale(s) {missing} in training "
                                 f"(it has {sorted(outputs.get(t, {}))}); set uda.scales to a subset")

    def generator_loss(self, target_outputs, size, step_options=None) -> tuple[torch.Tensor, dict]:
        """``weight * sum_k BCE(D_k(map_k(target)), source)`` (``mean_k`` with ``reduction="mean"``);
        the discriminators get no gradient. ``step_options``: :meth:`source_options`."""
        set_requires_grad(self.critic, False)
        try:
            losses = self.critic(self._maps(target_outputs, size, step_options), SOURCE_LABEL)
        finally:
            set_requires_grad(self.critic, True)
        total = self.weight * self._reduce(losses)
        # outputs left out of the alignment take part with weight 0, so that every head has a
        # gradient in this pass (DistributedDataParallel expects all parameters to be used)
        unused = [v for t, preds in target_outputs.items() for s, v in preds.items()
                  if t not in self.tasks or s not in self.scales]
        if unused:
            total = total + 0.0 * sum(v.float().sum() for v in unused)
        return total, {f"adv/{k}": float(v.detach()) for k, v in losses.items()}

    def discriminator_step(self, source_outputs, target_outputs, size, step_options=None) -> dict:
        """One Adam step of the discriminators on detached maps (source -> 0, target -> 1):
        ``0.5 * (R_k BCE_src + R_k BCE_tgt)`` with ``R`` the sum or the mean over the pairs (each
        discriminator's gradient differs from the released code's ``mean_src + mean_tgt`` only by
        a constant factor, to which Adam is invariant)."""
        with torch.no_grad():
            src = {k: v.detach() for k, v in self._maps(source_outputs, size, step_options).items()}
            tgt = {k: v.detach() for k, v in self._maps(target_outputs, size, step_options).items()}
        self.optimizer.zero_grad(set_to_none=True)
        finite = torch.tensor(float(all(bool(torch.isfinite(v).all()) for v in (*src.values(), *tgt.values()))),
                              device=next(iter(src.values())).device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)  # every process skips together
        if not bool(finite):
            # fp16 overflow (the scaler skipped the model's step too): skip this update
            return {"loss/discriminators": float("nan"), "lr/discriminators": self.optimizer.param_groups[0]["lr"]}
        ls, lt = self.ddp_critic(src, SOURCE_LABEL), self.ddp_critic(tgt, TARGET_LABEL)
        loss = 0.5 * (self._reduce(ls) + self._reduce(lt))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite discriminator loss {float(loss)}")
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return {"loss/discriminators": float(loss.detach()), "lr/discriminators": self.optimizer.param_groups[0]["lr"]}

    def state_dict(self) -> dict:
        return {"critic": self.critic.state_dict(), "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        # the decay follows this run's schedule.iterations (a resume may extend it)
        decay = self.scheduler.lr_lambdas[0]
        decay.max_steps = self.max_steps
        for g, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            g["lr"] = base * decay(self.scheduler.last_epoch)
