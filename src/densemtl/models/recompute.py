"""Activation checkpointing that leaves BatchNorm statistics as an ordinary step would.

``recompute(module, fn, *args)`` runs ``fn(*args)`` without keeping its intermediate
activations; the backward pass runs it again to get them (``torch.utils.checkpoint``,
non-reentrant, with the RNG state restored so dropout draws the same mask). The second
forward would update the running statistics of ``module``'s BatchNorm layers a second time;
they are put back to their values from before the recomputation, so training with or
without checkpointing gives the same parameters, gradients and running statistics.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint


@contextlib.contextmanager
def _keep_batchnorm_statistics(module: nn.Module):
    saved = [(b, b.clone()) for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)


def recompute(module: nn.Module, fn, *args):
    """``fn(*args)`` (``fn`` uses ``module``'s layers), checkpointed when gradients are on."""
    if not torch.is_grad_enabled():
        return fn(*args)
    return checkpoint(fn, *args, use_reentrant=False,
                      context_fn=lambda: (contextlib.nullcontext(), _keep_batchnorm_statistics(module)))
