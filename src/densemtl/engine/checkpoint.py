"""Atomic checkpoints and checks that a checkpoint fits the model it is loaded into."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

FORMAT = "densemtl-checkpoint"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or made for another model."""


def _write(obj, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path in ``path``'s folder; when the block succeeds it replaces
    ``path`` (``os.replace``), otherwise it is removed. Readers see the old file or the new
    one, never part of one (also after a crash or SIGKILL)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (:func:`atomic_path`, with fsync of the file and
    its folder)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        _write({"format": FORMAT, **state}, tmp)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass
    return path


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        for cand in (path / "checkpoints" / "best.pt", path / "checkpoints" / "last.pt", path / "last.pt"):
            if cand.is_file():
                path = cand
                break
        else:
            raise CheckpointError(f"{path}: no checkpoints/best.pt or checkpoints/last.pt in this run directory")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e}); the file is corrupt or truncated") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a densemtl checkpoint (use `densemtl convert` for other formats)")
    ckpt["path"] = str(path)
    return ckpt


def check_model_config(ckpt: dict, model_config: dict, what: str = "checkpoint") -> None:
    """Raise with the differences if the checkpoint was made for another architecture."""
    saved = ckpt.get("model_config", {})
    diffs = []
    for key in ("name", "tasks", "num_classes", "backbone"):
        if saved.get(key) != model_config.get(key):
            diffs.append(f"{key}: {what} has {saved.get(key)!r}, the config builds {model_config.get(key)!r}")
    so, mo = saved.get("options", {}), model_config.get("options", {})
    for k in sorted(set(so) | set(mo)):
        if so.get(k) != mo.get(k):
            diffs.append(f"model.options.{k}: {what} has {so.get(k)!r}, the config builds {mo.get(k)!r}")
    if diffs:
        raise CheckpointError(
            f"{ckpt.get('path', what)} was made for a different model:\n  " + "\n  ".join(diffs)
            + "\nUse the run's own config (its run directory holds config.yaml), or `densemtl eval`, which rebuilds "
            "the model from the checkpoint."
        )


def load_parts(model: torch.nn.Module, state: dict, parts: list[str], source: str = "checkpoint") -> list[str]:
    """Initialise the sub-modules named by ``parts`` (state-dict prefixes such as ``encoder``,
    ``decoders``, ``decoders.semseg``, ``exchanges``) from ``state``; everything else keeps its
    initialisation. Every parameter and buffer under each prefix must be present with the same
    shape, else the offending keys are listed. Returns the keys loaded."""
    own = model.state_dict()
    if not parts:
        raise CheckpointError("train.init_parts is empty: name the parts to initialise, e.g. [encoder, decoders]")
    top = sorted({k.split(".")[0] for k in own} | {".".join(k.split(".")[:2]) for k in own})
    loaded, problems = [], []
    for part in parts:
        keys = [k for k in own if k == part or k.startswith(part + ".")]
        if not keys:
            raise CheckpointError(f"train.init_parts: the model has no part {part!r}; parts: {', '.join(top)}")
        missing = [k for k in keys if k not in state]
        shape = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in keys
                 if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
        if missing:
            problems.append(f"{part}: {len(missing)} key(s) missing from {source}, e.g. {missing[:5]}")
        if shape:
            problems.append(f"{part}: shape mismatch {shape[:5]}")
        loaded += keys
    if problems:
        raise CheckpointError(f"cannot initialise from {source}:\n  " + "\n  ".join(problems))
    with torch.no_grad():
        for k in loaded:
            own[k].copy_(state[k])
    return loaded
