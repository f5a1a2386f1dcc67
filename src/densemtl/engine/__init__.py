"""Training engine: trainer with hooks, checkpoints, distributed helpers, evaluation."""

from .checkpoint import CheckpointError, check_model_config, load_checkpoint, model_from_checkpoint, save_checkpoint
from .evaluate import evaluate
from .hooks import HookBase
from .rundir import run_dir_for
from .trainer import Trainer

__all__ = ["Trainer", "HookBase", "evaluate", "load_checkpoint", "save_checkpoint", "check_model_config",
           "CheckpointError", "model_from_checkpoint", "run_dir_for"]
