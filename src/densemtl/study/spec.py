"""A study's description (``configs/study/*.yaml``): what is trained, how, and where results go.

Keys (checked when the file is read; an error names the file and key):

* ``name``: the study's name (section title in docs/results.md, plot file names).
* ``csv``: the results table, one row per finished run (committed); learning curves go to
  ``<csv without .csv>_curves/``, plots to ``<csv without .csv>_plots/``.
* ``work_dir``: generated data, the shared encoder and the run folders (not committed).
* ``data``: the procedural set every run trains and is evaluated on: ``generator_seed``,
  ``num_images``, ``size`` ``[H, W]`` (rendered at the working size), ``style``,
  ``val_fraction``.
* ``pretrain``: the shared encoder of the ``pretrained`` setting, trained once on a disjoint
  procedural set (``generator_seed``, ``num_images``: other scenes than ``data``'s): a
  ``model`` on ``tasks`` with ``seed``; ``run`` overrides the common ``run`` section for it
  (e.g. its schedule).
* ``seeds``, ``settings`` (``pretrained``: every run starts from the shared encoder,
  ``train.init_from`` with ``init_parts: [encoder]``; ``scratch``: random init), ``task_sets``.
* ``methods``: ``name: {model, options, label}``; a method whose model is ``stl`` is trained
  once per task (the reference of Delta), the others once per task set.
* ``reference``: the single-task method that Delta is computed against (default ``stl``).
* ``compare``: ``[[a, b], ...]`` method pairs whose per-seed differences are reported.
* ``run``: the common densemtl run config (docs/training.md keys: backbone, batch, schedule,
  optimiser, ``train.eval_every`` = the learning-curve interval, ...).

The ``config_hash`` of a run is a hash of everything that decides its result except seed,
setting name and task set (which are columns of their own): ``data``, ``run``, the method's
definition and, in the ``pretrained`` setting, ``pretrain``. Paths are not part of it.

Numerics are fixed: a run config's ``auto`` speed settings resolve from the hardware (bf16
autocast and channels-last on a CPU with native bf16, fp32 elsewhere), which would make a row
depend on the machine that trained it. Every run of a study (and its shared encoder) is
therefore eager fp32 (``NUMERICS``) unless the ``run`` section names these keys itself; keys
left at those values are not part of the hash, so naming them does not change it.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError, config_from_dict
from ..config.types import Check, Int, ListOf, Mapping, Number, Size, Text, check_value, show
from ..data.synth import STYLES
from ..models import list_models, model_options
from ..tasks import parse_task_set, task_set_name

SETTINGS = ("pretrained", "scratch")

TOP = {
    "name": Text(), "csv": Text(expected="a path ending in .csv"), "work_dir": Text(expected="a path"),
    "data": Mapping(), "pretrain": Mapping(), "seeds": ListOf(Int(0, 2**32 - 1), min_size=1, distinct=True),
    "settings": ListOf(Text(SETTINGS), min_size=1, distinct=True), "task_sets": ListOf(Text(), min_size=1, distinct=True),
    "methods": Mapping(), "reference": Text(), "compare": ListOf(ListOf(Text(), size=2), expected="a list of [method, method] pairs"),
    "run": Mapping(),
}
DATA = {"generator_seed": Int(0, 2**32 - 1), "num_images": Int(10), "size": Size(16), "style": Text(lambda: STYLES),
        "val_fraction": Number(0, 1, lo_open=True, hi_open=True)}
PRETRAIN = {"generator_seed": Int(0, 2**32 - 1), "num_images": Int(10), "model": Text(list_models), "tasks": Text(),
            "seed": Int(0, 2**32 - 1), "run": Mapping()}
METHOD = {"model": Text(list_models), "options": Mapping(), "label": Text()}
DEFAULTS = {
    "data": {"generator_seed": 0, "num_images": 1000, "size": [64, 80], "style": "default", "val_fraction": 0.2},
    "pretrain": {"generator_seed": 1, "num_images": 1000, "model": "mtl", "tasks": "SDN", "seed": 0, "run": {}},
    "seeds": [0, 1, 2], "settings": list(SETTINGS), "task_sets": ["SD", "SDN"], "reference": "stl", "compare": [],
}
# the numerics of every study run unless its run section says otherwise: eager fp32, whatever
# the machine (`auto` would pick bf16 autocast on a CPU with native bf16)
NUMERICS = {"train": {"amp": None, "channels_last": False, "compile": False}, "optim": {"fused": False}}
# keys of the run section the study sets itself
RESERVED = ("seed", "tasks", "run_name", "experiment", "output_dir", "data.dataset", "data.root", "data.size",
            "model.name", "model.options", "train.init_from", "train.init_parts")


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]


def _canonical(run: dict) -> dict:
    """``run`` without the keys that equal their ``NUMERICS`` value (what the hash sees)."""
    out = copy.deepcopy(run)
    for section, keys in NUMERICS.items():
        part = out.get(section)
        if isinstance(part, dict):
            pinned = [k for k, v in keys.items() if k in part and part[k] == v]
            for k in pinned:
                del part[k]
            if pinned and not part:  # emptied here (a section written empty stays as written)
                del out[section]
    return out


def _pinned(run: dict) -> dict:
    """``run`` over ``NUMERICS``: what a study run (or its shared encoder) is trained with."""
    return _merge(NUMERICS, run)


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _flat(d: dict, prefix: str = "") -> list[str]:
    return [x for k, v in d.items() for x in (_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else [f"{prefix}{k}"])]


@dataclass(frozen=True)
class Run:
    """One planned training run (a future CSV row)."""

    setting: str
    method: str
    tasks: str  # task-set letters, e.g. "SD"
    seed: int

    @property
    def name(self) -> str:
        return f"{self.setting}/{self.method}_{self.tasks}/seed{self.seed}"


class StudySpec:
    """A validated study description; see the module docstring for the keys."""

    def __init__(self, raw: dict, source: str = "study config"):
        self.source = source
        raw = dict(raw)
        self._keys(raw, TOP, "")
        for key in ("name", "csv", "work_dir", "methods", "run"):
            if key not in raw:
                raise ConfigError(f"{source}: missing key '{key}'")
        s = _merge(DEFAULTS, raw)
        for k in TOP:
            if k in s:
                s[k] = check_value(TOP[k], k, s[k], f" in {source}")
        self.name, self.seeds, self.settings = s["name"], s["seeds"], s["settings"]
        self.csv = Path(s["csv"])
        if self.csv.suffix != ".csv":
            raise ConfigError(f"csv in {source}: expected a path ending in .csv, got {show(s['csv'])}")
        self.work_dir = Path(s["work_dir"])
        self.data = self._section(s["data"], DATA, "data")
        self.pretrain = self._section(s["pretrain"], PRETRAIN, "pretrain")
        self._tasks("pretrain.tasks", self.pretrain["tasks"])
        self.task_sets = [self._tasks(f"task_sets item {i}", t) for i, t in enumerate(s["task_sets"])]
        self.methods = {}
        for name, m in s["methods"].items():
            m = check_value(Mapping(), f"methods.{name}", m, f" in {source}")
            self._keys(m, METHOD, f"methods.{name}.")
            if "model" not in m:
                raise ConfigError(f"methods.{name} in {source}: missing key 'model' (one of {', '.join(list_models())})")
            m = self._section({"options": {}, "label": name, **m}, METHOD, f"methods.{name}")
            bad = [k for k in m["options"] if k not in model_options(m["model"])]
            if bad:
                raise ConfigError(f"methods.{name}.options.{bad[0]} in {source}: unknown option of model {m['model']}; "
                                  f"options: {', '.join(model_options(m['model'])) or 'none'}")
            self.methods[str(name)] = m
        if not self.methods:
            raise ConfigError(f"methods in {source}: expected at least one method")
        self.reference = s["reference"]
        if self.reference not in self.methods or self.methods[self.reference]["model"] != "stl":
            raise ConfigError(f"reference in {source}: expected the name of a method whose model is stl, got {show(self.reference)}")
        for i, pair in enumerate(s["compare"]):
            for m in pair:
                if m not in self.methods or self.is_single_task(m):
                    raise ConfigError(f"compare item {i} in {source}: {show(m)} is not a multi-task method of this study")
        self.compare = [tuple(p) for p in s["compare"]]
        self.run = s["run"]
        clash = [k for k in _flat(self.run) if any(k == r or k.startswith(r + ".") for r in RESERVED)]
        if clash:
            raise ConfigError(f"run.{clash[0]} in {source}: set by the study itself (seed, tasks, method, data and init "
                              f"come from seeds, task_sets, methods, data and settings)")
        self.pretrain["run"] = self.pretrain["run"] or {}
        self._check_run_values(source)

    def _check_run_values(self, source) -> None:
        """Every value of the run sections, checked now rather than after data and encoder."""
        first = self.plan()[0]
        cfgs = [("run", self.run_config(Run("scratch", first.method, first.tasks, first.seed), Path("."), Path("."), None))]
        if "pretrained" in self.settings:
            cfgs.append(("pretrain.run", self.pretrain_config(Path("."), Path("."))))
        for section, cfg in cfgs:
            try:
                config_from_dict(cfg)
            except ConfigError as e:
                raise ConfigError(f"{section} in {source}: {e}") from None

    # --- validation helpers ---------------------------------------------------------------
    def _keys(self, d: dict, spec: dict, prefix: str) -> None:
        for k in d:
            if k not in spec:
                close = difflib.get_close_matches(str(k), list(spec), n=2)
                hint = f" Did you mean {', '.join(prefix + c for c in close)}?" if close else ""
                raise ConfigError(f"unknown key '{prefix}{k}' in {self.source}.{hint} Valid keys: "
                                  f"{', '.join(prefix + c for c in spec)}")

    def _section(self, d: dict, spec: dict[str, Check], name: str) -> dict:
        self._keys(d, spec, name + ".")
        return {k: check_value(spec[k], f"{name}.{k}", v, f" in {self.source}") for k, v in d.items()}

    def _tasks(self, key: str, value) -> str:
        try:
            return task_set_name(parse_task_set(value))
        except (ValueError, KeyError) as e:
            raise ConfigError(f"{key} in {self.source}: {e.args[0] if e.args else e}") from None

    # --- what the study trains ------------------------------------------------------------
    def is_single_task(self, method: str) -> bool:
        return self.methods[method]["model"] == "stl"

    def single_tasks(self) -> list[str]:
        """Every task of every task set, canonical order, as one-letter sets."""
        return [task_set_name([t]) for t in parse_task_set(set().union(*(parse_task_set(ts) for ts in self.task_sets)))]

    def plan(self) -> list[Run]:
        """Every run, seed-major (a finished seed gives complete pairs), then setting; single-task
        methods once per task, multi-task methods once per task set."""
        out = []
        for seed in self.seeds:
            for setting in self.settings:
                for m in self.methods:
                    sets = self.single_tasks() if self.is_single_task(m) else self.task_sets
                    out += [Run(setting, m, ts, seed) for ts in sets]
        return out

    def study_hash(self, setting: str) -> str:
        """What every run of ``setting`` shares: data, common run config (and the shared encoder)."""
        pretrain = {**self.pretrain, "run": _canonical(self.pretrain["run"])}
        return _hash({"data": self.data, "run": _canonical(self.run), **({"pretrain": pretrain} if setting == "pretrained" else {})})

    def config_hash(self, run: Run) -> str:
        m = self.methods[run.method]
        return _hash({"study": self.study_hash(run.setting), "model": m["model"], "options": m["options"]})

    def iterations(self) -> int:
        return int(self.run.get("schedule", {}).get("iterations", 0)) or _default("schedule", "iterations")

    def last_rate_step(self) -> int | None:
        """Images seen at the schedule's last learning-rate step (None without milestones)."""
        ms = self.run.get("schedule", {}).get("milestones") or []
        return int(max(ms)) * self.batch_size() if ms else None

    def batch_size(self) -> int:
        return int(self.run.get("data", {}).get("batch_size", 0)) or _default("data", "batch_size")

    # --- run configs ----------------------------------------------------------------------
    def run_config(self, run: Run, data_root: Path, out_dir: Path, init_from: Path | None) -> dict:
        """The densemtl config dict of ``run`` (validate with ``config_from_dict``)."""
        m = self.methods[run.method]
        h, w = self.data["size"]
        own = {"experiment": self.name, "run_name": f"seed{run.seed}", "output_dir": str(out_dir), "seed": run.seed,
               "tasks": run.tasks, "model": {"name": m["model"], "options": m["options"]},
               "data": {"dataset": "procedural", "root": str(data_root), "size": [h, w]}}
        if run.setting == "pretrained":
            own["train"] = {"init_from": str(init_from), "init_parts": ["encoder"]}
        return _merge(_pinned(self.run), own)

    def pretrain_config(self, data_root: Path, out_dir: Path) -> dict:
        p = self.pretrain
        h, w = self.data["size"]
        own = {"experiment": self.name, "run_name": "pretrain", "output_dir": str(out_dir), "seed": p["seed"],
               "tasks": p["tasks"], "model": {"name": p["model"]},
               "data": {"dataset": "procedural", "root": str(data_root), "size": [h, w]}}
        return _merge(_pinned(self.pretrain_run()), own)

    def pretrain_run(self) -> dict:
        """The run config the shared encoder is trained with: the common ``run`` merged with ``pretrain.run``."""
        return _merge(self.run, self.pretrain["run"])

    def pretrain_hash(self) -> str:
        """Hash of what decides the shared encoder: its scenes (the ``data`` keys other than the
        generator seed and count, which ``pretrain`` sets), the pretraining keys and the run config
        it is trained with (the common ``run`` merged with ``pretrain.run``). Two studies whose
        pretraining is the same share it, whatever else their ``run`` sections change."""
        p = self.pretrain
        scenes = {k: v for k, v in self.data.items() if k not in ("generator_seed", "num_images")}
        return _hash({"data": scenes, "pretrain": {k: v for k, v in p.items() if k != "run"},
                      "run": _canonical(self.pretrain_run())})

    @property
    def curves_dir(self) -> Path:
        return self.csv.with_name(self.csv.stem + "_curves")

    @property
    def plots_dir(self) -> Path:
        return self.csv.with_name(self.csv.stem + "_plots")


def _default(section: str, key: str) -> int:
    from ..config import DEFAULTS as RUN_DEFAULTS

    return int(RUN_DEFAULTS[section][key])


def load_study(path: str | Path) -> StudySpec:
    """Read and check a study YAML file; relative ``csv`` / ``work_dir`` stay relative to the
    current folder (run from the repository root)."""
    from omegaconf import OmegaConf

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study config not found: {path}")
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as e:
        raise ConfigError(f"cannot parse study config {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"study config {path} must be a mapping, got {type(raw).__name__}")
    return StudySpec(raw, str(path))
