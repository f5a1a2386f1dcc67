"""Task weighting methods, kept separate from the model (the nash-mtl ``WeightMethod`` idea).

``method = create_weighting("fixed", tasks)``; each training step:
``total, info = method.backward(losses, shared_parameters=...)`` does the backward pass
(GradNorm needs the shared parameters); ``method.step_end()`` after the optimiser step;
``method.epoch_end()`` at the end of each epoch (DWA). Learnable weights are
``method.parameters()`` for the trainer's optimiser.
"""

from __future__ import annotations

import inspect
import math
from typing import Callable, Iterable, Mapping

import torch
import torch.nn as nn

from ..registry import Registry
from ..tasks import parse_task_set, task_set_name

WEIGHTINGS: Registry[Callable[..., "WeightMethod"]] = Registry("weighting")

# grid-searched by the authors on the MTL baseline (the paper's section 4.1; docs/training.md)
PAPER_WEIGHTS = {
    "SD": {"semseg": 50.0, "depth": 1.0},
    "SDN": {"semseg": 100.0, "depth": 1.0, "normals": 100.0},
    "SDNE": {"semseg": 100.0, "depth": 1.0, "normals": 100.0, "edges": 50.0},
}


def register_weighting(name: str):
    """Class decorator registering a :class:`WeightMethod` subclass under ``name``."""

    def deco(cls):
        WEIGHTINGS.add(name, cls)
        cls.registry_name = name
        return cls

    return deco


def list_weightings() -> list[str]:
    return WEIGHTINGS.names()


def weighting_options(name: str) -> dict[str, object]:
    """Options of a weighting method (``loss.options``) and their defaults."""
    params = inspect.signature(WEIGHTINGS.get(name).__init__).parameters
    return {k: (None if p.default is p.empty else p.default) for k, p in params.items() if k not in ("self", "tasks")}


def create_weighting(name: str, tasks: Iterable[str], **options) -> "WeightMethod":
    return WEIGHTINGS.get(name)(parse_task_set(tasks), **options)


class WeightMethod(nn.Module):
    """Base: ``weights()`` -> current per-task weights; the total is their weighted sum."""

    def __init__(self, tasks: tuple[str, ...]):
        super().__init__()
        self.tasks = tuple(tasks)

    def weights(self) -> dict[str, float]:
        raise NotImplementedError

    def _stack(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        missing = [t for t in self.tasks if t not in losses]
        if missing:
            raise KeyError(f"losses for task(s) {missing} are missing")
        return torch.stack([losses[t] for t in self.tasks])

    def total(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        w = self.weights()
        return sum(w[t] * losses[t] for t in self.tasks)

    def backward(self, losses: Mapping[str, torch.Tensor], shared_parameters=None, scaler=None):
        """Weighted total, backward pass. Returns ``(total, {"weight/<task>": w})``."""
        total = self.total(losses)
        (scaler.scale(total) if scaler is not None else total).backward()
        return total.detach(), {f"weight/{t}": float(v) for t, v in self.weights().items()}

    def step_end(self) -> None:
        """Called after each optimiser step."""

    def epoch_end(self) -> None:
        """Called at the end of each epoch."""


@register_weighting("fixed")
class FixedWeights(WeightMethod):
    """Constant weights; default = the paper's presets (SD 50/1, SDN 100/1/100,
    SDNE 100/1/100/50, one task: 1)."""

    def __init__(self, tasks, weights: Mapping[str, float] | None = None):
        super().__init__(tasks)
        if weights is None:
            code = task_set_name(tasks)
            if len(self.tasks) == 1:
                weights = {self.tasks[0]: 1.0}
            elif code in PAPER_WEIGHTS:
                weights = PAPER_WEIGHTS[code]
            else:
                raise ValueError(
                    f"no preset task weights for task set {code} (presets: {', '.join(PAPER_WEIGHTS)}); "
                    f"give them explicitly, e.g. loss.options.weights={{semseg: 1, normals: 1}}"
                )
        unknown = sorted(set(weights) - set(self.tasks))
        missing = [t for t in self.tasks if t not in weights]
        if unknown or missing:
            raise ValueError(f"loss.options.weights: the task weights must name exactly the tasks {list(self.tasks)}; "
                             f"missing {missing}, unknown {unknown}")
        bad = {t: w for t, w in weights.items()
               if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0}
        if bad:
            t, w = next(iter(bad.items()))
            raise ValueError(f"loss.options.weights.{t}: expected a number >= 0, got {w!r}")
        if not any(weights[t] > 0 for t in self.tasks):
            raise ValueError(f"loss.options.weights: at least one task weight must be > 0, got {dict(weights)}")
        self._w = {t: float(weights[t]) for t in self.tasks}

    def weights(self):
        return dict(self._w)


@register_weighting("uncertainty")
class UncertaintyWeights(WeightMethod):
    """Kendall et al. (CVPR 2018): learnable log-variances ``s_t``;
    total = sum_t exp(-s_t) L_t + s_t. Optimise ``parameters()`` with the model."""

    def __init__(self, tasks, init: float = 0.0):
        super().__init__(tasks)
        self.log_vars = nn.Parameter(torch.full((len(self.tasks),), float(init)))

    def weights(self):
        return {t: float(math.exp(-v)) for t, v in zip(self.tasks, self.log_vars.detach().tolist())}

    def total(self, losses):
        L = self._stack(losses)
        return (torch.exp(-self.log_vars) * L + self.log_vars).sum()


@register_weighting("dwa")
class DynamicWeightAverage(WeightMethod):
    """Liu et al. (CVPR 2019): ``w_t = T exp(r_t / temp) / sum_i exp(r_i / temp)`` with
    ``r_t`` = ratio of the task's mean loss over the last two epochs; weights are 1 for the
    first two epochs. Call ``epoch_end()`` once per epoch."""

    def __init__(self, tasks, temperature: float = 2.0):
        super().__init__(tasks)
        self.temperature = float(temperature)
        self.history: list[list[float]] = []
        self._sum = [0.0] * len(self.tasks)
        self._n = 0
        self._w = {t: 1.0 for t in self.tasks}

    def weights(self):
        return dict(self._w)

    def backward(self, losses, shared_parameters=None, scaler=None):
        L = self._stack(losses).detach()
        self._sum = [a + float(b) for a, b in zip(self._sum, L.tolist())]
        self._n += 1
        return super().backward(losses, shared_parameters, scaler)

    def epoch_end(self):
        if self._n:
            self.history.append([s / self._n for s in self._sum])
        self._sum, self._n = [0.0] * len(self.tasks), 0
        if len(self.history) >= 2:
            prev, prev2 = self.history[-1], self.history[-2]
            r = torch.tensor([a / max(b, 1e-12) for a, b in zip(prev, prev2)])
            w = len(self.tasks) * torch.softmax(r / self.temperature, 0)
            self._w = {t: float(v) for t, v in zip(self.tasks, w)}

    def get_extra_state(self):
        return {"history": self.history, "w": self._w}

    def set_extra_state(self, state):
        self.history, self._w = state["history"], state["w"]


@register_weighting("gradnorm")
class GradNorm(WeightMethod):
    """Chen et al. (ICML 2018): learnable weights ``w_t`` trained so that the gradient norm of
    each weighted task loss on the shared parameters approaches
    ``mean_norm * (relative inverse training rate)^alpha``; renormalised to sum to T after
    each optimiser step. Needs ``shared_parameters`` (e.g. the last shared layer)."""

    def __init__(self, tasks, alpha: float = 1.5):
        super().__init__(tasks)
        self.alpha = float(alpha)
        self.task_weights = nn.Parameter(torch.ones(len(self.tasks)))
        self.register_buffer("initial_losses", torch.zeros(len(self.tasks)))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    def weights(self):
        return {t: float(v) for t, v in zip(self.tasks, self.task_weights.detach())}

    def backward(self, losses, shared_parameters=None, scaler=None):
        if shared_parameters is None:
            raise ValueError("gradnorm needs shared_parameters (e.g. the encoder's last layer)")
        shared = [p for p in shared_parameters if p.requires_grad]
        L = self._stack(losses)
        if not bool(self.initialised):
            self.initial_losses.copy_(L.detach())
            self.initialised.fill_(True)
        w = self.task_weights
        norms = []
        for i in range(len(self.tasks)):
            g = torch.autograd.grad(w[i] * L[i], shared, retain_graph=True, create_graph=True, allow_unused=True)
            norms.append(torch.cat([x.flatten() for x in g if x is not None]).norm())
        G = torch.stack(norms)
        ratio = L.detach() / self.initial_losses.clamp_min(1e-12)
        target = (G.mean() * (ratio / ratio.mean()) ** self.alpha).detach()
        gn_loss = (G - target).abs().sum()
        w_grad = torch.autograd.grad(gn_loss, w, retain_graph=True)[0]
        total = (w.detach() * L).sum()
        (scaler.scale(total) if scaler is not None else total).backward()
        w.grad = w_grad
        info = {f"weight/{t}": float(v) for t, v in zip(self.tasks, w.detach())}
        info["gradnorm_loss"] = float(gn_loss.detach())
        return total.detach(), info

    @torch.no_grad()
    def step_end(self):
        w = self.task_weights.clamp_(min=1e-4)
        w.mul_(len(self.tasks) / w.sum())
