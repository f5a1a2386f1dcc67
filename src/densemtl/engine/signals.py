"""SIGTERM handled like Ctrl-C: what schedulers (Slurm, Kubernetes) and ``kill`` send before
they stop a job. The trainer saves ``checkpoints/last.pt`` and exits with 128 + the signal's
number (130 for Ctrl-C, 143 for SIGTERM), as shells report a process ended by that signal.

Schedulers signal every process of a job, DataLoader workers included; a worker killed first
would end training with "DataLoader worker is killed by signal" instead of a checkpoint, so
workers started during training ignore SIGTERM (:func:`worker_init`) and are shut down by the
training process as usual."""

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


class TerminationHook(HookBase):
    """Turns the first SIGTERM or SIGINT (Ctrl-C) into :class:`Terminated` while training runs
    (main thread only); the previous handlers are restored afterwards. Later signals are ignored
    so that they cannot cut the checkpoint being saved. Where Python swallows an exception raised
    by a signal handler (e.g. one arriving while a DataLoader worker is forked), the next step
    raises it: with Python's own Ctrl-C handler such a swallowed KeyboardInterrupt was lost and
    training went on (seen once on a loaded machine: 784 more steps after the Ctrl-C)."""

    signals = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.previous: dict = {}
        self.received: int | None = None

    def _handle(self, signum, frame):
        if self.received is None:
            self.received = signum
            raise Terminated(signum)

    def before_train(self, trainer):
        self.received = None
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.signals}

    def after_step(self, trainer, logs):
        if self.received is not None:
            raise Terminated(self.received)

    def after_train(self, trainer):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: a worker forked while :class:`TerminationHook` is active
    ignores SIGTERM and leaves the stop to the training process."""
    handler = signal.getsignal(signal.SIGTERM)  # Python's view: the handler inherited from the trainer
    if isinstance(getattr(handler, "__self__", None), TerminationHook):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
