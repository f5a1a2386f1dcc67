"""Output-level adversarial alignment (paper section 4.5): the pieces of one training step.

Order within a step (done by the trainer):

1. supervised loss on the source batch, backward;
2. :meth:`AdversarialAlignment.generator_loss` on the target batch's outputs (discriminators
   frozen, every discriminator asked to say "source"), times ``weight``, backward;
3. the model's optimiser step;
4. :meth:`AdversarialAlignment.discriminator_step` on the *detached* source and target outputs.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .adversarial import SOURCE_LABEL, TARGET_LABEL, bce_to_label, build_discriminator_optimizer, set_requires_grad
from .discriminator import build_discriminators
from .maps import alignment_maps, map_channels
from .schedule import build_poly_scheduler


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
        depth_ref: metres mapped to 0.5 by the depth map (:func:`densemtl.tasks.depth.depth_map`).
    """

    def __init__(self, tasks, scales, num_classes: int | None, *, weight: float = 0.005, lr: float = 1e-4,
                 betas=(0.9, 0.99), power: float = 0.9, max_steps: int = 1, depth_ref: float = 10.0,
                 device: torch.device | str = "cpu"):
        self.tasks, self.scales, self.weight = tuple(tasks), tuple(sorted(int(s) for s in scales)), float(weight)
        discs = build_discriminators(self.tasks, self.scales, map_channels(self.tasks, num_classes))
        self.critic = DomainCritic(discs).to(device)
        # the module the discriminator step calls: ``critic`` itself, or its DistributedDataParallel
        # wrapper with several processes (the generator pass calls the bare ``critic``)
        self.ddp_critic: nn.Module = self.critic
        self.optimizer = build_discriminator_optimizer(discs, lr=lr, betas=betas)
        self.max_steps = int(max_steps)
        self.scheduler = build_poly_scheduler(self.optimizer, max_steps, power)
        self.map_options = {"depth": {"ref_depth": float(depth_ref)}}

    def _maps(self, outputs, size):
        return alignment_maps({t: {s: outputs[t][s] for s in self.scales} for t in self.tasks}, size, self.map_options)

    def check_outputs(self, outputs) -> None:
        for t in self.tasks:
            missing = [s for s in self.scales if s not in outputs.get(t, {})]
            if missing:
                raise ValueError(f"uda: the model gives no '{t}' output at scale(s) {missing} in training "
                                 f"(it has {sorted(outputs.get(t, {}))}); set uda.scales to a subset")

    def generator_loss(self, target_outputs, size) -> tuple[torch.Tensor, dict]:
        """``weight * sum_k BCE(D_k(map_k(target)), source)``; the discriminators get no gradient."""
        set_requires_grad(self.critic, False)
        try:
            losses = self.critic(self._maps(target_outputs, size), SOURCE_LABEL)
        finally:
            set_requires_grad(self.critic, True)
        total = self.weight * sum(losses.values())
        # outputs left out of the alignment take part with weight 0, so that every head has a
        # gradient in this pass (DistributedDataParallel expects all parameters to be used)
        unused = [v for t, preds in target_outputs.items() for s, v in preds.items()
                  if t not in self.tasks or s not in self.scales]
        if unused:
            total = total + 0.0 * sum(v.float().sum() for v in unused)
        return total, {f"adv/{k}": float(v.detach()) for k, v in losses.items()}

    def discriminator_step(self, source_outputs, target_outputs, size) -> dict:
        """One Adam step of the discriminators on detached maps (source -> 0, target -> 1)."""
        with torch.no_grad():
            src = {k: v.detach() for k, v in self._maps(source_outputs, size).items()}
            tgt = {k: v.detach() for k, v in self._maps(target_outputs, size).items()}
        self.optimizer.zero_grad(set_to_none=True)
        finite = torch.tensor(float(all(bool(torch.isfinite(v).all()) for v in (*src.values(), *tgt.values()))),
                              device=next(iter(src.values())).device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)  # every process skips together
        if not bool(finite):
            # fp16 overflow (the scaler skipped the model's step too): skip this update
            return {"loss/discriminators": float("nan"), "lr/discriminators": self.optimizer.param_groups[0]["lr"]}
        ls, lt = self.ddp_critic(src, SOURCE_LABEL), self.ddp_critic(tgt, TARGET_LABEL)
        loss = 0.5 * (sum(ls.values()) + sum(lt.values()))
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
