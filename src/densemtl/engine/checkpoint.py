"""Atomic checkpoints and checks that a checkpoint fits the model it is loaded into."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from ..fileio import UnreadableFile, os_cause, torch_load
from ..models import model_options

FORMAT = "densemtl-checkpoint"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or made for another model."""


def _write(obj, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


TMP_INFIX = ".tmp-"  # temporary files: .<name>.tmp-<pid>


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path in ``path``'s folder; when the block succeeds it replaces
    ``path`` (``os.replace``), otherwise it is removed. Readers see the old file or the new
    one, never part of one (also after a crash or SIGKILL). A failed write (full disk,
    read-only folder), also one a library reports as ``RuntimeError``, is an ``OSError``
    naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_INFIX}{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        err = os_cause(e)
        if err is None or err.filename not in (None, str(tmp), str(path)):
            raise
        raise OSError(err.errno, err.strerror, str(path)) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_stale_temporaries(folder: str | Path, log=None) -> list[Path]:
    """Delete the temporary files of :func:`atomic_path` in ``folder`` whose process is gone
    (a write interrupted by SIGKILL, a crash or a power cut); returns them, ``log`` says so."""
    removed = []
    for f in Path(folder).glob(f".*{TMP_INFIX}*"):
        pid = f.name.rsplit(TMP_INFIX, 1)[1]
        if not pid.isdigit() or (int(pid) != os.getpid() and not _alive(int(pid))):
            f.unlink(missing_ok=True)
            removed.append(f)
            if log is not None:
                log(f"removed {f}: left by an interrupted checkpoint write")
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (:func:`atomic_path`, with fsync of the file and
    its folder). A failed write is an ``OSError`` naming ``path``; the previous file is kept."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            _write({"format": FORMAT, **state}, tmp)
    except OSError as e:
        e.note = "the checkpoint was not written" + ("; the previous one is unchanged" if path.is_file() else "")
        raise
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
        ckpt = torch_load(path)
    except UnreadableFile as e:
        if e.reason == "format":
            raise CheckpointError(f"{path}: not a checkpoint: neither a torch.save zip archive nor a pickle ({e.detail}); "
                                  f"the file is corrupt or truncated, or another kind of file") from None
        if e.reason == "objects":
            raise CheckpointError(f"{path}: not a densemtl checkpoint: {e.text} ({e.detail})") from None
        raise CheckpointError(f"{path}: cannot read checkpoint ({e.detail}); the file is corrupt or truncated") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a densemtl checkpoint (use `densemtl convert` for other formats)")
    ckpt["path"] = str(path)
    return ckpt


def _option_defaults(name) -> dict:
    """The builder's default options of model ``name`` (empty for an unknown name)."""
    try:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in model_options(name).items()}
    except (KeyError, TypeError):
        return {}


def check_model_config(ckpt: dict, model_config: dict, what: str = "checkpoint") -> None:
    """Raise with the differences if the checkpoint was made for another architecture."""
    saved = ckpt.get("model_config", {})
    diffs = []
    for key in ("name", "tasks", "num_classes", "backbone"):
        if saved.get(key) != model_config.get(key):
            diffs.append(f"{key}: {what} has {saved.get(key)!r}, the config builds {model_config.get(key)!r}")
    so, mo = saved.get("options", {}), model_config.get("options", {})
    # an option the checkpoint does not record (added to the model since) had its default value
    defaults = _option_defaults(saved.get("name"))
    for k in sorted(set(so) | set(mo)):
        if so.get(k, defaults.get(k)) != mo.get(k):
            diffs.append(f"model.options.{k}: {what} has {so.get(k, defaults.get(k))!r}, the config builds {mo.get(k)!r}")
    if diffs:
        raise CheckpointError(
            f"{ckpt.get('path', what)} was made for a different model:\n  " + "\n  ".join(diffs)
            + "\nUse the run's own config (its run directory holds config.yaml), or `densemtl eval`, which rebuilds "
            "the model from the checkpoint."
        )


def model_from_checkpoint(ckpt: dict) -> torch.nn.Module:
    """The model a checkpoint records (``model_config``) with its weights (``model``); a
    checkpoint whose weights do not fit its ``model_config`` is a :class:`CheckpointError`
    listing the missing, unexpected and mis-shaped tensors."""
    from ..models import model_from_config

    where = ckpt.get("path", "checkpoint")
    mc = ckpt.get("model_config")
    if not isinstance(mc, dict) or not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(f"{where} has no model_config/model entries; the model cannot be rebuilt")
    try:
        model = model_from_config(mc)
    except (ValueError, TypeError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise CheckpointError(f"{where}: its model_config cannot be built ({msg})") from None
    check_model_config(ckpt, model.model_config)
    load_weights(model, ckpt["model"], where)
    return model


def load_weights(model: torch.nn.Module, state: dict, source: str = "checkpoint") -> None:
    """``model.load_state_dict(state)`` (strict), with the differences in one line."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} in the file vs {tuple(own[k].shape)} in the model" for k in own
              if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es), e.g. {'; '.join(shapes[:3])}")
        if missing:
            parts.append(f"{len(missing)} tensor(s) missing, e.g. {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s), e.g. {', '.join(unexpected[:3])}")
        raise CheckpointError(f"{source}: the weights do not fit the model its model_config describes: "
                              + "; ".join(parts) + " (the file was edited or mixes two models)")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as e:
        raise CheckpointError(f"{source}: the weights cannot be loaded ({str(e).splitlines()[0]})") from None


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
