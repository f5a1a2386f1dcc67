"""Load, compose, override and validate configs (OmegaConf)."""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..data import get_dataset_class
from ..losses import weighting_options
from ..models import model_options
from ..tasks import get_protocol, get_task, parse_task_set
from .schema import DEFAULTS, FREE_FORM, SPEC
from .types import ConfigError, check_value, like, show


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


SECTIONS = sorted({p.rsplit(".", i)[0] for p in VALID_KEYS for i in range(1, p.count(".") + 1)})


def _check_keys(cfg: dict, source: str, prefix: str = "") -> None:
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if key in FREE_FORM:
            if v is not None and not isinstance(v, dict):
                raise ConfigError(f"{key} in {source}: expected {SPEC[key].expected}, got {show(v)}")
            continue
        if key in SECTIONS:
            if not isinstance(v, dict):
                raise ConfigError(f"{key} in {source}: expected a section of keys ({key}.*), got {show(v)}; "
                                  f"set its keys, e.g. {next(p for p in VALID_KEYS if p.startswith(key + '.'))}=...")
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
        merged = _merge(merged, _read_yaml(path.parent / b, seen + (path.resolve(),)), str(path))
    _check_keys(raw, str(path))
    return OmegaConf.to_container(_merge(merged, raw, str(path)), resolve=False)


def _merge(cfg, new: dict, source: str) -> DictConfig:
    """``OmegaConf.merge``; a value that cannot replace the one below it (a list onto a
    mapping...) is an error naming its key."""
    try:
        return OmegaConf.merge(cfg, new)
    except (OmegaConfBaseException, TypeError, ValueError) as e:
        key = _clash(OmegaConf.to_container(cfg, resolve=False) if not isinstance(cfg, dict) else cfg, new)
        if key is None:
            raise ConfigError(f"cannot merge the config from {source}: {e}") from None
        k, v = key
        spec = SPEC.get(k)
        expected = spec.expected if spec is not None else "a value of the same kind"
        raise ConfigError(f"{k} in {source}: expected {expected}, got {show(v)}") from None


def _clash(old, new, prefix: str = ""):
    """The first ``(key, value)`` of ``new`` whose container kind differs from ``old``'s."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return None
    for k, v in new.items():
        key, o = f"{prefix}{k}", old.get(k)
        if isinstance(o, (dict, list)) and isinstance(v, (dict, list)) and isinstance(o, dict) != isinstance(v, dict):
            return key, v
        found = _clash(o, v, key + ".") if isinstance(o, dict) else None
        if found:
            return found
    return None


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
        cfg = _merge(cfg, _read_yaml(Path(path)), str(path))
    if overrides:
        cfg = _merge(cfg, _parse_overrides(list(overrides)), "command-line overrides")
    validate(cfg)
    return cfg


def apply_overrides(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """Validated dotted overrides on an existing config."""
    cfg = _merge(cfg, _parse_overrides(list(overrides)), "command-line overrides") if overrides else cfg
    validate(cfg)
    return cfg


def config_from_dict(d: dict) -> DictConfig:
    if not isinstance(d, dict):
        raise ConfigError(f"a config must be a mapping, got {show(d)}")
    _check_keys(d, "config dict")
    cfg = _merge(OmegaConf.create(DEFAULTS), d, "config dict")
    validate(cfg)
    return cfg


def _get(d: dict, key: str):
    for part in key.split("."):
        d = d[part]
    return d


def validate(cfg: DictConfig) -> None:
    """Every key's type and range (``SPEC``), then the checks across keys; the first problem
    is a :class:`ConfigError` naming its key. Values are normalised in place (``1e4`` -> 10000
    for integer keys)."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "config"
        raise ConfigError(f"{key}: cannot resolve the interpolation ({str(e).splitlines()[0]})") from None
    for key, spec in SPEC.items():
        value = _get(plain, key)
        norm = check_value(spec, key, value)
        if type(norm) is not type(value) or norm != value:
            OmegaConf.update(cfg, key, norm, merge=False)
            parent, _, leaf = key.rpartition(".")
            (_get(plain, parent) if parent else plain)[leaf] = norm
    _check_across(plain)


def _check_across(c: dict) -> None:
    """Checks that involve several keys or a registry (datasets' splits, model options...)."""
    tasks = parse_task_set(c["tasks"])
    if c["train"]["init_parts"] is not None and not c["train"]["init_from"]:
        raise ConfigError("train.init_parts needs train.init_from (the checkpoint to take the parts from)")
    if c["uda"]["adversarial"] and not c["uda"]["target"]["dataset"]:
        raise ConfigError("uda.adversarial=true needs a target domain: set uda.target.dataset and uda.target.root")
    if c["uda"]["target"]["dataset"] and c["selfsup"]["enabled"]:
        raise ConfigError("uda.target and selfsup.enabled cannot be combined")
    _check_model_options(c["model"]["name"], c["model"]["options"])
    _check_weighting_options(c["loss"]["weighting"], c["loss"]["options"])
    for prefix, data in (("data", c["data"]), ("uda.target", c["uda"]["target"])):
        if not data["dataset"]:
            continue
        cls = get_dataset_class(data["dataset"])
        for split in ("train_split", "val_split"):
            if data[split] not in cls.splits:
                raise ConfigError(f"{prefix}.{split}: expected one of {', '.join(cls.splits)} (the splits of dataset "
                                  f"{data['dataset']}), got {show(data[split])}")
        if data["crop"] is not None and data["size"] is not None and any(a > b for a, b in zip(data["crop"], data["size"])):
            raise ConfigError(f"{prefix}.crop: expected [H, W] within {prefix}.size {show(data['size'])}, got "
                              f"{show(data['crop'])}")
        _check_dataset_options(prefix, cls, data["options"])
    _check_select_metric(c, tasks)


def _options_of(fn, skip: set[str]) -> dict:
    """Keyword parameters of ``fn`` (or a class's ``__init__`` along its bases) and their defaults."""
    out: dict = {}
    targets = [k.__init__ for k in fn.__mro__ if "__init__" in vars(k)] if inspect.isclass(fn) else [fn]
    for f in targets:
        params = inspect.signature(f).parameters
        for name, p in params.items():
            if name not in skip and name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
                out.setdefault(name, p.default if p.default is not p.empty else None)
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            break
    return out


def _check_options(section: str, owner: str, given: dict, valid: dict, reserved: dict | None = None) -> None:
    for k, v in given.items():
        if reserved and k in reserved:
            raise ConfigError(f"{section}.{k}: set {reserved[k]} instead (not an option of {owner}), got {show(v)}")
        if k not in valid:
            opts = ", ".join(f"{n}={show(d)}" for n, d in valid.items()) or "none"
            raise ConfigError(f"{section}.{k}: unknown option of {owner}, got {k}={show(v)}; its options (with "
                              f"defaults): {opts}")
        check_value(like(valid[k]), f"{section}.{k}", v)


def _check_model_options(name: str, options: dict) -> None:
    _check_options("model.options", f"model '{name}'", options, model_options(name))


def _check_weighting_options(name: str, options: dict) -> None:
    _check_options("loss.options", f"weighting '{name}'", options, weighting_options(name))


# dataset constructor arguments that other config keys set
_DATA_KEYS = {"root": "data.root", "split": "data.train_split / data.val_split", "tasks": "tasks", "size": "data.size",
              "augment": "data.augment", "scale_crop": "data.scale_crop", "seed": "seed",
              "limit": "data.limit_train / data.limit_val", "crop": "data.crop", "sequence": "selfsup.enabled"}


def _check_dataset_options(prefix: str, cls, options: dict) -> None:
    valid = _options_of(cls, set(_DATA_KEYS))
    _check_options(f"{prefix}.options", f"dataset '{cls.name}'", options, valid, _DATA_KEYS)
    if "label_set" in options:
        try:
            cls.resolve_label_set(options["label_set"])
        except ValueError as e:
            raise ConfigError(f"{prefix}.options.label_set: {e}") from None


def _check_select_metric(c: dict, tasks: tuple[str, ...]) -> None:
    """``train.select_metric``: ``auto`` or ``task/metric`` with a task of the run and a metric
    its meter reports (checked now, not at the first evaluation)."""
    sel = c["train"]["select_metric"]
    if sel == "auto":
        return
    task, _, metric = sel.partition("/")
    if task not in tasks or not metric:
        raise ConfigError(f"train.select_metric: expected auto or task/metric with a task of this run "
                          f"({', '.join(tasks)}), e.g. {tasks[0]}/{get_task(tasks[0]).headline_metric}; got {show(sel)}")
    data = c["uda"]["target"] if c["uda"]["target"]["dataset"] else c["data"]
    cls = get_dataset_class(data["dataset"])
    labels = cls.resolve_label_set((data["options"] or {}).get("label_set"))
    opts = {"num_classes": labels.num_classes if labels is not None else max(int(cls.num_classes), 1),
            "boundary": bool(c["eval"]["edge_boundary"]), "num_thresholds": int(c["eval"]["num_thresholds"])}
    names = get_protocol(c.get("protocol", "standard")).task(task).metric_names(**opts)
    if metric not in names:
        per_class = [n for n in names if n.startswith("IoU_")]
        shown = [n for n in names if not n.startswith("IoU_")] + ([f"IoU_0..IoU_{len(per_class) - 1}"] if per_class else [])
        hint = " (odsF/oisF need eval.edge_boundary=true)" if task == "edges" and not opts["boundary"] else ""
        raise ConfigError(f"train.select_metric: {task} reports {', '.join(shown)}{hint}; got {show(sel)}")


def save_config(cfg: DictConfig, path: Path) -> None:
    Path(path).write_text(OmegaConf.to_yaml(cfg, resolve=True))
