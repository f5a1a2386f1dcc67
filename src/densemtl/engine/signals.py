"""SIGTERM handled like Ctrl-C: what schedulers (Slurm, Kubernetes) and ``kill`` send before
they stop a job. The trainer saves ``checkpoints/last.pt`` and exits with 128 + the signal's
number (130 for Ctrl-C, 143 for SIGTERM), as shells report a process ended by that signal."""

from __future__ import annotations

import signal


class Terminated(KeyboardInterrupt):
    """Raised in the training loop when SIGTERM arrives; caught like Ctrl-C's KeyboardInterrupt."""

    def __init__(self, signum: int):
        super().__init__(f"received signal {signal.Signals(signum).name}")
        self.signum = signum


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """128 + the signal that stopped training (SIGINT for a plain Ctrl-C)."""
    return 128 + int(getattr(interrupt, "signum", signal.SIGINT))


def raise_terminated(signum, frame):
    signal.signal(signum, signal.SIG_IGN)  # a second SIGTERM must not cut the checkpoint being saved
    raise Terminated(signum)
