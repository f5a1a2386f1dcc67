"""Streaming meters: accumulate sufficient statistics over a split, then compute metrics.

Every meter's state is a dict of tensors that are *summed* across processes, so distributed
evaluation is ``meter.all_reduce()`` (or ``a.merge(b)``) before ``compute()``.
"""

from __future__ import annotations

import torch

from .base import check_finite


class Meter:
    """Base class. Subclasses define ``_init_state()``, ``update()`` and ``compute()``."""

    task = ""

    def __init__(self):
        self.state: dict[str, torch.Tensor] = self._init_state()

    def _init_state(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def reset(self) -> None:
        self.state = self._init_state()

    def _check(self, **tensors) -> None:
        check_finite(self.task, **tensors)

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError

    def diagnostics(self) -> list[str]:
        """One line per problem the metrics hide (e.g. predictions clamped into range on
        whole images); empty when there is none. Read after ``all_reduce``."""
        return []

    def merge(self, other: "Meter") -> "Meter":
        for k, v in other.state.items():
            self.state[k] = self.state[k] + v.to(self.state[k].device)
        return self

    def all_reduce(self) -> None:
        """Sum the state over all processes of the default process group (no-op if none)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            # NCCL reduces CUDA tensors only; the states live on the CPU
            dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
            for k, v in self.state.items():
                t = v.to(dev) if dev is not None else v
                dist.all_reduce(t, op=dist.ReduceOp.SUM)
                self.state[k] = t.cpu() if dev is not None else t
