"""Base class of every dataset: indexing, resizing, derived labels, augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..tasks import IGNORE_INDEX, canonical_tasks, get_protocol, get_task, parse_task_set
from .geometry import release_intrinsics
from .io import DataError
from .labelsets import LabelSet
from .transforms import hflip_sample, new_view, random_crop, random_scale_crop, resize_sample, to_tensors


LABEL_SUBSET_OTHERS = ("unlabelled", "dropped")


def read_id_list(spec) -> list[str]:
    """Sample ids from a list of strings or a text file (one id per line; blank lines and
    ``#`` comments ignored); duplicates are an error."""
    if isinstance(spec, (list, tuple)):
        if not all(isinstance(i, str) and i for i in spec):
            raise ValueError(f"label_subset: expected a list of sample ids (strings) or a file path, got {spec!r}")
        ids = [i.strip() for i in spec]
        where = "label_subset"
    elif isinstance(spec, (str, Path)):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise DataError(f"label_subset: {path}: no such file (one sample id per line)")
        ids = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
        ids = [i for i in ids if i]
        where = str(path)
    else:
        raise ValueError(f"label_subset: expected a list of sample ids or a file path, got {spec!r}")
    if not ids:
        raise DataError(f"{where}: the label subset is empty")
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise DataError(f"{where}: id(s) listed twice: {dup[:5]}")
    return ids


class DenseDataset(torch.utils.data.Dataset):
    """Subclasses set the class attributes and implement ``_records()`` and ``_read()``.

    ``__getitem__`` returns ``{"image": (3, H, W) float [0, 1], "labels": {task: tensor},
    "K": (3, 3) intrinsics at the working resolution, "id": str}``; label formats are those
    of :mod:`densemtl.tasks` (semseg int64 with 255 void, depth ``(1, H, W)`` metres with 0
    invalid, normals ``(3, H, W)`` with zero vectors invalid, edges ``(1, H, W)`` 0/1).

    Args:
        root: dataset root in the official layout (see ``docs/datasets.md``).
        split: ``train`` or ``val``.
        tasks: task names or code (``"SDN"``); normals are derived from depth when the
            dataset has none; edges from semantic and depth boundaries likewise.
        size: working resolution ``(H, W)``; default the paper's for the dataset.
        augment: horizontal flip with p = 0.5 (the paper's only augmentation); default on for
            ``train``.
        scale_crop: optional ``(min, max)`` zoom range for random scale-crop.
        crop: optional ``(H, W)`` random crop taken after the resize to ``size`` (seeded like
            the flip), e.g. VKITTI2 as a UDA source: ``size=(512, 1696), crop=(512, 1024)``.
            Applied by ``__getitem__`` whenever set (pass it for training sets only).
        label_set: name of one of the dataset's ``label_sets`` (class list + raw id mapping),
            e.g. ``"uda8"`` for the 8 VKITTI2 <-> Cityscapes classes; default
            ``default_label_set``. Sets ``num_classes`` and ``class_names``.
        edge_aware_normals: weight the normals-from-depth by colour similarity.
        normals_smooth_sigma: Gaussian smoothing (pixels) of depth before deriving normals.
        seed: split seed (Synthia, VKITTI2) and augmentation base seed.
        sequence: also return the neighbour frames ``frames {-1, 1}`` (and ground-truth
            ``poses`` where the dataset has them), transformed like the frame itself.
        protocol: ``standard`` or ``paper`` (:mod:`densemtl.tasks.protocol`): whose label
            definitions ``labels`` follows (e.g. the released normals target under ``paper``).
        extra_protocols: other protocols whose labels are also returned, under
            ``protocol_labels {protocol: {task: tensor}}`` (evaluating several protocols in one
            pass; not with augmentation).
        label_subset: semi-supervised studies: the ids (a list, or a text file with one id per
            line, ``#`` comments) whose segmentation labels are used; every id must be a sample
            of this split. The other samples keep their images, neighbour frames and other
            labels but their segmentation label is void everywhere (``label_subset_others:
            unlabelled``, e.g. for self-supervised depth on every frame) or they are left out
            (``dropped``). Applied to training sets only (``data.options``).
    """

    name = ""
    num_classes = 0
    class_names: tuple[str, ...] = ()
    default_size = (512, 1024)
    depth_range = (1e-3, 80.0)
    native_tasks: tuple[str, ...] = ("semseg", "depth")  # labels read from files; others are derived (Task.derive)
    splits = ("train", "val")
    supports_sequence = False  # yields neighbour frames t-1, t+1 with sequence=True
    label_sets: dict[str, LabelSet] = {}  # empty: the classes are fixed (or read by _setup)
    default_label_set: str | None = None
    # the camera of the authors' released code, {fx, fy, u0, v0, width, height} at full
    # resolution (protocol "paper" normals target); None: the camera and size read from the files
    release_camera: dict | None = None

    def __init__(self, root, split: str = "train", tasks="SD", size=None, augment: bool | None = None,
                 scale_crop=None, edge_aware_normals: bool = False, normals_smooth_sigma: float = 0.0,
                 seed: int = 0, limit: int | None = None, sequence: bool = False, crop=None,
                 label_set: str | None = None, protocol: str = "standard", extra_protocols=(),
                 label_subset=None, label_subset_others: str = "unlabelled"):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"dataset root {self.root} does not exist (dataset '{self.name}'); "
                            f"see docs/datasets.md for the expected layout")
        if split not in self.splits:
            raise ValueError(f"dataset '{self.name}' has splits {self.splits}, got '{split}'")
        self.split = split
        self.tasks = parse_task_set(tasks)
        for t in self.tasks:
            if not self.provides(self._source(t)):
                raise ValueError(f"dataset '{self.name}' cannot provide task '{t}' (it has {self.native_tasks})")
        self.size = tuple(size) if size is not None else tuple(self.default_size)
        self.augment = (split == "train") if augment is None else bool(augment)
        self.scale_crop = tuple(scale_crop) if scale_crop else None
        self.edge_aware_normals = edge_aware_normals
        self.normals_smooth_sigma = float(normals_smooth_sigma)
        self.seed = int(seed)
        self.epoch = 0
        if sequence and not self.supports_sequence:
            raise ValueError(f"dataset '{self.name}' has no video frames (sequence=True is not supported)")
        self.sequence = bool(sequence)
        self.label_set = str(label_set) if label_set is not None else self.default_label_set
        self.label_map = self.resolve_label_set(label_set)
        if self.label_map is not None:
            self.num_classes, self.class_names = self.label_map.num_classes, self.label_map.names
        self._setup()
        self.crop = tuple(int(v) for v in crop) if crop else None
        if self.crop is not None and (len(self.crop) != 2 or not all(0 < c <= s for c, s in zip(self.crop, self.size))):
            raise ValueError(f"crop {list(self.crop)} must be (H, W) within the working size {list(self.size)}")
        self.protocol = get_protocol(protocol)
        self.extra_protocols = tuple(get_protocol(p) for p in extra_protocols if get_protocol(p) is not self.protocol)
        if self.extra_protocols and (self.augment or self.scale_crop or self.crop):
            raise ValueError("labels of several protocols are for evaluation: use augment=False and no crop")
        sources = canonical_tasks({self._source(t) for t in self.tasks})
        self._late_labels = {p.name: [t for t in sources if self._late(p, t)] for p in (self.protocol, *self.extra_protocols)}
        late = self._late_labels[self.protocol.name]
        if late and self.scale_crop:
            raise ValueError(f"protocol '{self.protocol.name}': the {', '.join(late)} target is computed with the released "
                             f"code's camera, which has no random scale-crop: leave scale_crop unset")
        self.records = self._records()
        self.label_subset = self._label_subset(label_subset, label_subset_others)
        if limit is not None:
            self.records = self.records[: int(limit)]
        if not self.records:
            raise DataError(f"dataset '{self.name}' at {self.root}: no samples found for split '{split}'")

    def _label_subset(self, spec, others: str) -> frozenset | None:
        """The labelled ids of ``label_subset`` (checked against this split's records); with
        ``others="dropped"`` the other records are removed."""
        if spec is None:
            return None
        if others not in LABEL_SUBSET_OTHERS:
            raise ValueError(f"label_subset_others must be one of {', '.join(LABEL_SUBSET_OTHERS)}, got {others!r}")
        ids = read_id_list(spec)
        known = {str(r) for r in self.records}
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise DataError(f"label_subset: {len(unknown)} of its {len(ids)} id(s) are not samples of {self.name} split "
                            f"'{self.split}' at {self.root}, e.g. {unknown[:3]} (ids look like {sorted(known)[:2]})")
        subset = frozenset(ids)
        if others == "dropped":
            self.records = [r for r in self.records if str(r) in subset]
        return subset

    # --- to implement ---------------------------------------------------------------------
    def _setup(self) -> None:
        """Read metadata (optional)."""

    def _records(self) -> list:
        raise NotImplementedError

    def _read(self, record, tasks: set[str]) -> dict:
        """Raw sample at native resolution: image uint8, labels of ``tasks``, K, id."""
        raise NotImplementedError

    def files_of(self, record) -> list[Path]:
        """Files behind one record (for ``verify``)."""
        return []

    def split_file(self, split: str) -> Path | None:
        """The file listing the ids of ``split``; ``None`` where the split is derived (seeded, folders)."""
        return None

    # --- shared ---------------------------------------------------------------------------
    @classmethod
    def resolve_label_set(cls, name: str | None = None) -> LabelSet | None:
        """The :class:`LabelSet` called ``name`` (default ``default_label_set``); ``None`` for
        datasets without label sets (then ``name`` must be ``None``)."""
        if not cls.label_sets:
            if name is not None:
                raise ValueError(f"dataset '{cls.name}' has no label sets (got label_set={name!r})")
            return None
        name = cls.default_label_set if name is None else str(name)
        if name not in cls.label_sets:
            raise ValueError(f"dataset '{cls.name}' has label sets {list(cls.label_sets)}, got label_set={name!r}")
        return cls.label_sets[name]

    @staticmethod
    def _source(task: str) -> str:
        """The label a task is evaluated against (the self-supervised ``disparity`` task uses depth)."""
        return get_task(task).source

    @classmethod
    def provides(cls, label: str) -> bool:
        """Whether the dataset reads ``label`` from its files or can derive it from those it reads."""
        task = get_task(label)
        return label in cls.native_tasks or (task.derivable and (
            not task.derived_from or any(d in cls.native_tasks for d in task.derived_from)))

    def _derive_options(self) -> dict:
        return {"edge_aware_normals": self.edge_aware_normals, "normals_smooth_sigma": self.normals_smooth_sigma}

    def _late(self, protocol, label: str) -> bool:
        """Whether ``label`` is derived after the augmentation under ``protocol``."""
        return label not in self.native_tasks and protocol.task(label).derive_after_augmentation

    def _needed(self, protocol) -> set[str]:
        """Labels kept through the augmentation: the tasks' and those late derivations use."""
        need = {self._source(t) for t in self.tasks}
        for t in self._late_labels[protocol.name]:
            need.update(get_task(t).derived_from)
        return need

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Make augmentation depend on the epoch (deterministic given seed, epoch, index)."""
        self.epoch = int(epoch)

    def load(self, index: int) -> dict:
        """Numpy sample at the working resolution, derived labels added, no augmentation.

        Any error reading the sample is a :class:`DataError` whose one-line message names the
        file (or, for an unexpected error, the sample and the error type)."""
        return self._finish(self._guarded(self._load, index), index)

    def _guarded(self, fn, index: int, *args):
        record = self.records[index]
        try:
            return fn(record, *args)
        except DataError:
            raise
        except (ValueError, TypeError, KeyError, OSError) as e:
            raise DataError(f"{self.name} sample '{record}' at {self.root}: {type(e).__name__}: {e}") from e

    def _load(self, record) -> dict:
        """Read, resize, derive the labels that come before the augmentation (every protocol)."""
        need = {self._source(t) for t in self.tasks}
        derived = [t for t in canonical_tasks(need) if t not in self.native_tasks]
        for t in derived:
            need.update(d for d in get_task(t).derived_from if d in self.native_tasks)
        raw = self._read(record, need)
        img = raw["image"]
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise DataError(f"{raw['id']}: image must be (H, W, 3) uint8, got {img.shape} {img.dtype}")
        task = self.protocol.task
        sample = {"image": img.astype(np.float32) / 255.0, "labels": {t: task(t).from_native(v) for t, v in raw["labels"].items()},
                  "K": raw["K"], "id": raw["id"]}
        if "frames" in raw:
            for k, f in raw["frames"].items():
                if f.shape != img.shape:
                    raise DataError(f"{raw['id']}: neighbour frame {k:+d} is {f.shape}, the frame is {img.shape}")
            sample["frames"] = {k: f.astype(np.float32) / 255.0 for k, f in raw["frames"].items()}
        if "poses" in raw:
            sample["poses"] = raw["poses"]
        sample = resize_sample(sample, self.size, task)
        sample["view"] = new_view(raw["K"], img.shape[:2], self.size)
        labels = sample["labels"]
        for t in derived:
            if t not in labels and not task(t).derive_after_augmentation:
                labels[t] = task(t).derive(labels, sample["image"], sample["K"], **self._derive_options())
        keep = self._needed(self.protocol)
        sample["labels"] = {t: v for t, v in labels.items() if t in keep}
        if self.label_subset is not None and "semseg" in sample["labels"] and str(record) not in self.label_subset:
            sample["labels"]["semseg"] = np.full_like(sample["labels"]["semseg"], IGNORE_INDEX)
        if self.extra_protocols:
            sample["protocol_labels"] = {p.name: self._labels_of(p, raw["labels"], sample, derived) for p in self.extra_protocols}
        return sample

    def _labels_of(self, protocol, native: dict, sample: dict, derived: list[str]) -> dict:
        """Labels of ``protocol`` at the working size (early derivations only), from the files' arrays."""
        task = protocol.task
        labels = {t: task(t).resize_label(task(t).from_native(v), self.size) for t, v in native.items()}
        for t in derived:
            if t not in labels and not task(t).derive_after_augmentation:
                labels[t] = task(t).derive(labels, sample["image"], sample["K"], **self._derive_options())
        return labels

    def release_K(self, view: dict) -> np.ndarray:
        """The intrinsics the released code uses for a sample (:func:`release_intrinsics`) with
        ``release_camera``, or without it the camera and size read from the files."""
        cam = self.release_camera
        if cam is None:
            K, (h, w) = view["native_K"], view["native_size"]
            cam = {"fx": K[0, 0], "fy": K[1, 1], "u0": K[0, 2], "v0": K[1, 2], "width": w, "height": h}
        return release_intrinsics(cam, view["x1"], view["y1"], view["flip"])

    def _derive_late(self, protocol, labels: dict, sample: dict) -> dict:
        late = [t for t in self._late_labels[protocol.name] if t not in labels]
        if late:
            if sample["view"]["rescaled"]:
                raise ValueError(f"the '{late[0]}' target of protocol '{protocol.name}' cannot follow a rescaling augmentation")
            opts = {**self._derive_options(), "release_K": self.release_K(sample["view"])}
            labels = dict(labels)
            for t in late:
                labels[t] = protocol.task(t).derive(labels, sample["image"], sample["K"], **opts)
        return {t: labels[self._source(t)] for t in self.tasks}

    def _finish(self, sample: dict, index: int) -> dict:
        """Late derivations (after the augmentation) and the tasks' labels only."""
        def finish(record, sample):
            out = dict(sample)
            out["labels"] = self._derive_late(self.protocol, sample["labels"], sample)
            if "protocol_labels" in sample:
                out["protocol_labels"] = {p.name: self._derive_late(p, sample["protocol_labels"][p.name], sample)
                                          for p in self.extra_protocols}
            out.pop("view", None)
            return out

        return self._guarded(finish, index, sample)

    def __getitem__(self, index: int) -> dict:
        sample = self._guarded(self._load, index)
        if self.augment or self.scale_crop or self.crop:
            task = self.protocol.task
            rng = np.random.default_rng([self.seed, self.epoch, index])
            if self.crop:
                sample = random_crop(sample, rng, self.crop)
            if self.scale_crop:
                sample = random_scale_crop(sample, rng, self.scale_crop, task)
            if self.augment and rng.random() < 0.5:
                sample = hflip_sample(sample, task)
        sample = self._finish(sample, index)
        out = to_tensors(sample, self.protocol.task)
        if "protocol_labels" in sample:
            out["protocol_labels"] = {p.name: to_tensors({**sample, "labels": sample["protocol_labels"][p.name]}, p.task)["labels"]
                                      for p in self.extra_protocols}
        return out

    def meter_options(self) -> dict:
        """Options for the tasks' meters (class count, depth range, whether normals are read from files)."""
        return {"num_classes": self.num_classes, "min_depth": self.depth_range[0], "max_depth": self.depth_range[1],
                "normals_from_files": "normals" in self.native_tasks}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={self.root}, split={self.split}, tasks={self.tasks}, n={len(self)}, size={self.size})"


def collate(batch: list[dict]) -> dict:
    """Stack samples into a batch: ``image (B, 3, H, W)``, ``labels {task: (B, ...)}``, ``K``, ``id`` list."""
    out = {
        "image": torch.stack([b["image"] for b in batch]),
        "K": torch.stack([b["K"] for b in batch]),
        "id": [b["id"] for b in batch],
        "labels": {t: torch.stack([b["labels"][t] for b in batch]) for t in batch[0]["labels"]},
    }
    for key in ("frames", "poses"):
        if key in batch[0]:
            out[key] = {k: torch.stack([b[key][k] for b in batch]) for k in batch[0][key]}
    if "protocol_labels" in batch[0]:
        out["protocol_labels"] = {p: {t: torch.stack([b["protocol_labels"][p][t] for b in batch]) for t in labels}
                                  for p, labels in batch[0]["protocol_labels"].items()}
    return out
