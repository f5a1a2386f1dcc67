"""Load, compose, override and validate configs (OmegaConf)."""

from __future__ import annotations

import difflib
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from .schema import DEFAULTS, FREE_FORM


class ConfigError(ValueError):
    """A bad config file or key."""


def _flat_keys(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key not in FREE_FORM:
            out.extend(_flat_keys(v, key + "."))
        else:
            out.append(key)
    return out


VALID_KEYS = _flat_keys(DEFAULTS)


def _check_keys(cfg: dict, source: str, prefix: str = "") -> None:
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if key in FREE_FORM:
            continue
        if isinstance(v, dict):
            if key not in {p.rsplit(".", 1)[0] for p in VALID_KEYS if "." in p} and key not in VALID_KEYS:
                _unknown(key, source)
            _check_keys(v, source, key + ".")
        elif key not in VALID_KEYS:
            _unknown(key, source)


def _unknown(key: str, source: str) -> None:
    close = difflib.get_close_matches(key, VALID_KEYS, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown config key '{key}' in {source}.{hint} Valid keys: {', '.join(VALID_KEYS)}")


def _read_yaml(path: Path, seen: tuple = ()) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in seen:
        raise ConfigError(f"config {path} includes itself through _base_")
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
    except Exception as e:
        raise ConfigError(f"cannot parse config {path}: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping, got {type(raw).__name__}")
    bases = raw.pop("_base_", []) or []
    if isinstance(bases, str):
        bases = [bases]
    merged = OmegaConf.create({})
    for b in bases:
        merged = OmegaConf.merge(merged, _read_yaml(path.parent / b, seen + (path.resolve(),)))
    _check_keys(raw, str(path))
    return OmegaConf.to_container(OmegaConf.merge(merged, raw), resolve=False)


def _parse_overrides(overrides: list[str]) -> dict:
    items = []
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"override '{o}' must look like key=value (e.g. optim.lr_decoder=1e-4)")
        items.append(o)
    try:
        ov = OmegaConf.to_container(OmegaConf.from_dotlist(items))
    except Exception as e:
        raise ConfigError(f"cannot parse overrides {overrides}: {e}") from e
    _check_keys(ov, "command-line overrides")
    return ov


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DictConfig:
    """Defaults <- ``path`` (with its ``_base_`` chain) <- ``overrides``; validated."""
    cfg = OmegaConf.create(DEFAULTS)
    if path is not None:
        cfg = OmegaConf.merge(cfg, _read_yaml(Path(path)))
    if overrides:
        cfg = OmegaConf.merge(cfg, _parse_overrides(list(overrides)))
    validate(cfg)
    return cfg


def apply_overrides(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """Validated dotted overrides on an existing config."""
    cfg = OmegaConf.merge(cfg, _parse_overrides(list(overrides))) if overrides else cfg
    validate(cfg)
    return cfg


def config_from_dict(d: dict) -> DictConfig:
    _check_keys(d, "config dict")
    cfg = OmegaConf.merge(OmegaConf.create(DEFAULTS), d)
    validate(cfg)
    return cfg


def validate(cfg: DictConfig) -> None:
    from ..tasks import parse_task_set

    try:
        parse_task_set(cfg.tasks)
    except (ValueError, KeyError) as e:
        raise ConfigError(f"tasks: {e}") from e
    if cfg.optim.name not in ("adam", "sgd"):
        raise ConfigError(f"optim.name must be 'adam' or 'sgd', got '{cfg.optim.name}'")
    if cfg.train.amp not in (None, "bf16", "fp16"):
        raise ConfigError(f"train.amp must be null, 'bf16' or 'fp16', got '{cfg.train.amp}'")
    if int(cfg.schedule.iterations) < 1:
        raise ConfigError("schedule.iterations must be >= 1")
    if cfg.data.size is not None and (not isinstance(cfg.data.size, (list, ListConfig)) or len(cfg.data.size) != 2):
        raise ConfigError(f"data.size must be [H, W], got {cfg.data.size}")
    if cfg.data.crop is not None and (not isinstance(cfg.data.crop, (list, ListConfig)) or len(cfg.data.crop) != 2):
        raise ConfigError(f"data.crop must be [H, W], got {cfg.data.crop}")
    if cfg.train.init_parts is not None and not cfg.train.init_from:
        raise ConfigError("train.init_parts needs train.init_from (the checkpoint to take the parts from)")
    if cfg.uda.adversarial and not cfg.uda.target.dataset:
        raise ConfigError("uda.adversarial=true needs a target domain: set uda.target.dataset and uda.target.root")
    if cfg.uda.target.dataset and cfg.selfsup.enabled:
        raise ConfigError("uda.target and selfsup.enabled cannot be combined")


def save_config(cfg: DictConfig, path: Path) -> None:
    Path(path).write_text(OmegaConf.to_yaml(cfg, resolve=True))
