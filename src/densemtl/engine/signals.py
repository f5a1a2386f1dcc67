"""SIGTERM handled like Ctrl-C: what schedulers (Slurm, Kubernetes) and ``kill`` send before
they stop a job. The trainer saves ``checkpoints/last.pt`` and exits with 128 + the signal's
number (130 for Ctrl-C, 143 for SIGTERM), as shells report a process ended by that signal."""

from __future__ import annotations

import signal
import threading

from .hooks import HookBase


class Terminated(KeyboardInterrupt):
    """Raised in the training loop when SIGTERM arrives; caught like Ctrl-C's KeyboardInterrupt."""

    def __init__(self, signum: int):
        super().__init__(f"received signal {signal.Signals(signum).name}")
        self.signum = signum


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """128 + the signal that stopped training (SIGINT for a plain Ctrl-C)."""
    return 128 + int(getattr(interrupt, "signum", signal.SIGINT))


def _raise_terminated(signum, frame):
    signal.signal(signum, signal.SIG_IGN)  # a second SIGTERM must not cut the checkpoint being saved
    raise Terminated(signum)


class TerminationHook(HookBase):
    """Turns SIGTERM into :class:`Terminated` while training runs (main thread only); the
    previous handler is restored afterwards."""

    signals = (signal.SIGTERM,)

    def before_train(self, trainer):
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, _raise_terminated) for s in self.signals}

    def after_train(self, trainer):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}
