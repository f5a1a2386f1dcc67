"""The :class:`Task` contract, the task registry and the canonical task order.

A task is one object (a :class:`Task` subclass instance) that owns everything about its
task: output channels, how a label array becomes a tensor, how labels are resized and
mirrored, how a missing label is derived from others (normals and edges from depth), the
loss, the decoding of raw outputs, the meter and the direction of each metric, the map a
domain discriminator sees, the exported output, the table column, and the rendering.
Adding a task = one module that registers one object (see docs/architecture.md).

The canonical order is the registration order (semseg, depth, normals, edges, then any task
registered later). It never depends on Python's string hashing.
"""

from __future__ import annotations

import warnings
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from ..registry import Registry

TASKS: Registry["Task"] = Registry("task")
IGNORE_INDEX = 255  # void label of integer label maps (semseg, edges)


def check_finite(name: str, **tensors: torch.Tensor) -> None:
    """Raise ``FloatingPointError`` naming the task if any tensor holds NaN or Inf."""
    for what, t in tensors.items():
        # a finite sum means every element is finite (NaN and Inf propagate): one read, no mask;
        # a non-finite sum (or an overflowing one) is checked element by element
        if t.is_floating_point() and not torch.isfinite(t.sum(dtype=torch.float32)) and not torch.isfinite(t).all():
            bad = (~torch.isfinite(t)).sum().item()
            raise FloatingPointError(f"task '{name}': {what} contains {bad} NaN/Inf value(s)")


def resize_label_array(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an ``(H, W)`` or ``(H, W, C)`` label array to ``size = (H, W)``
    (``nearest-exact``: pixel centres, no half-pixel shift); the dtype is kept."""
    h, w = size
    if arr.shape[:2] == (h, w):
        return arr
    t = torch.from_numpy(np.ascontiguousarray(arr))
    chw = t.permute(2, 0, 1)[None] if t.dim() == 3 else t[None, None]
    out = F.interpolate(chw.float(), size=(h, w), mode="nearest-exact")
    out = out[0].permute(1, 2, 0) if t.dim() == 3 else out[0, 0]
    return out.numpy().astype(arr.dtype)


class Task:
    """Base class of a dense prediction task.

    Class attributes:
        name: registry key, e.g. ``"semseg"``.
        letter: one-letter code used in task-set names (``"S"`` in ``"SDN"``).
        channels: head output channels; ``None`` means "number of classes".
        higher_is_better: direction of the headline metric.
        headline_metric: key of the metric used by the multi-task Delta and in tables.
        lower_is_better: the task's metric keys for which lower is better (model selection).
        column: header of the headline metric in tables (unit included), e.g. ``"RMSE m"``.
        digits: decimals of the headline metric in tables.
        label_format: how labels are passed and how invalid pixels are marked.
        label_source: the dataset label the task is trained/evaluated against (default: its
            own name; the self-supervised ``disparity`` task uses ``depth``).
        derived_from: labels from which :meth:`derive` computes this task's label when a
            dataset does not provide it (a task that overrides :meth:`derive` with an empty
            ``derived_from`` is derived from the image alone).
        export_name: name of the task's output in exported models (default: ``name``).
        head_bias: initial bias of the prediction convs (``None``: PyTorch default).
        derive_after_augmentation: :meth:`derive` needs the augmented sample's geometry (crop
            offset, flip; passed as the ``release_K`` option): the dataset derives this label
            after the augmentation instead of before it (the ``paper`` normals target).
    """

    name: str = ""
    letter: str = ""
    channels: int | None = None
    higher_is_better: bool = True
    headline_metric: str = ""
    lower_is_better: frozenset[str] = frozenset()
    column: str = ""
    digits: int = 2
    description: str = ""
    label_format: str = ""
    label_source: str | None = None
    derived_from: tuple[str, ...] = ()
    export_name: str = ""
    head_bias: float | None = None
    derive_after_augmentation: bool = False

    def out_channels(self, num_classes: int | None) -> int:
        if self.channels is not None:
            return self.channels
        if num_classes is None or int(num_classes) < 1:
            raise ValueError(f"task '{self.name}' needs num_classes >= 1, got {num_classes!r}")
        return int(num_classes)

    @property
    def derivable(self) -> bool:
        """Whether :meth:`derive` can compute the label (the subclass overrides it)."""
        return type(self).derive is not Task.derive

    @property
    def source(self) -> str:
        """The dataset label this task uses (``label_source`` or its own name)."""
        return self.label_source or self.name

    # --- labels (NumPy, in the dataset pipeline) -----------------------------------------
    def from_native(self, label: np.ndarray) -> np.ndarray:
        """The task's label array from the array a dataset read from its files (native
        resolution, before resizing); by default unchanged."""
        return label

    def resize_label(self, label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Label array at the working size ``(H, W)``; nearest neighbour by default."""
        return resize_label_array(label, size)

    def flip_label(self, label: np.ndarray) -> np.ndarray:
        """Label of the horizontally mirrored image (copy)."""
        return label[:, ::-1].copy()

    def derive(self, labels: dict, image: np.ndarray, K: np.ndarray, **options) -> np.ndarray:
        """This task's label computed from ``labels`` (the ones in :attr:`derived_from` that the
        dataset has), the image ``(H, W, 3)`` in [0, 1] and the intrinsics ``K``."""
        raise ValueError(f"the '{self.name}' label cannot be derived from other labels")

    def label_to_tensor(self, label: np.ndarray) -> torch.Tensor:
        """NumPy label -> tensor in :attr:`label_format` (without the batch dimension);
        by default ``(1, H, W)`` float32."""
        return torch.from_numpy(np.ascontiguousarray(label).astype(np.float32))[None]

    # --- training ---------------------------------------------------------------------------
    def loss(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Scalar loss of a raw head output ``pred`` already at the label's size."""
        raise NotImplementedError

    def valid_mask(self, label: torch.Tensor) -> torch.Tensor:
        """``(B, H, W)`` bool mask of pixels with a usable label."""
        raise NotImplementedError

    def initial_bias(self, labels: list[np.ndarray], **options) -> float | None:
        """Prediction bias that starts the head at a typical value of these training labels
        (``None``: keep the default initialisation). Used by the warm start."""
        return None

    # --- evaluation -------------------------------------------------------------------------
    def decode(self, pred: torch.Tensor) -> torch.Tensor:
        """Raw head output -> the quantity the metrics use (class ids, metres, unit vectors, probability)."""
        raise NotImplementedError

    def meter(self, **options):
        """A fresh streaming meter (:class:`densemtl.tasks.meter.Meter`) for this task's metrics."""
        raise NotImplementedError

    def metric_names(self, **options) -> list[str]:
        """Names of the metrics :meth:`meter` reports with these options (e.g. to check a
        ``task/metric`` before any evaluation)."""
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return list(self.meter(**options).compute())

    def metric_higher_is_better(self, metric: str) -> bool:
        """Direction of one of the meter's metrics."""
        return metric not in self.lower_is_better

    # --- domain adaptation and export -------------------------------------------------------
    def alignment_channels(self, num_classes: int | None = None) -> int:
        """Channels of :meth:`alignment_map` (the domain discriminator's input)."""
        return self.out_channels(num_classes)

    def alignment_map(self, pred: torch.Tensor, **options) -> torch.Tensor:
        """Raw head output ``(N, C, H, W)`` -> a map in [0, 1] for a domain discriminator."""
        raise ValueError(f"task '{self.name}' has no adversarial alignment map")

    def alignment_options(self, label: torch.Tensor, **options) -> dict:
        """Keyword options of :meth:`alignment_map` computed from the *source* batch's labels of
        this task (the same for that step's source and target maps), e.g. the depth range of
        the released min-max depth map; ``options`` are the map's own options. Default: none."""
        return {}

    def export_output(self, pred: torch.Tensor) -> torch.Tensor:
        """The exported (ONNX) output of a raw head output; by default :meth:`decode`."""
        return self.decode(pred)

    @property
    def output_name(self) -> str:
        return self.export_name or self.name

    # --- visualisation ----------------------------------------------------------------------
    def render(self, value: torch.Tensor | np.ndarray, **options) -> np.ndarray:
        """A decoded prediction or a label of one image -> ``(H, W, 3)`` uint8 RGB."""
        raise NotImplementedError

    def shared_render_options(self, label, predictions: list) -> dict:
        """Options of :meth:`render` shared by the label and the predictions of one image in a
        figure (``label`` may be ``None``), e.g. one depth colour range. Default: none."""
        return {}

    def __repr__(self) -> str:
        return f"<Task {self.name} ({self.letter})>"


def register_task(task: Task) -> Task:
    """Register a task object; its letter must be unique too. Returns the task."""
    if not isinstance(task, Task):
        raise TypeError(f"register_task expects a Task instance, got {type(task).__name__}")
    if not task.name or not task.letter or len(task.letter) != 1:
        raise ValueError("a task needs a name and a one-letter code")
    if task.name in TASKS:
        raise ValueError(f"task '{task.name}' is already registered")
    if any(t.letter == task.letter for t in TASKS.values()):
        raise ValueError(f"task letter '{task.letter}' is already used")
    return TASKS.add(task.name, task)


def unregister_task(name: str) -> Task:
    """Remove a registered task (for tests that register a temporary task)."""
    return TASKS.remove(name)


def get_task(name: str) -> Task:
    return TASKS.get(name)


def list_tasks() -> list[str]:
    return TASKS.names()


def parse_task_set(spec: str | Iterable[str]) -> tuple[str, ...]:
    """Accept ``"SDN"``, ``"S-D-N"``, ``"semseg,depth"`` or a list of names."""
    if isinstance(spec, str):
        if "," in spec or spec in TASKS:
            names = [s.strip() for s in spec.split(",") if s.strip()]
        else:
            letters = {t.letter: t.name for t in TASKS.values()}
            compact = spec.replace("-", "").strip()
            unknown = [c for c in compact if c not in letters]
            if unknown or not compact:
                raise ValueError(
                    f"cannot parse task set '{spec}': use letters {''.join(letters)} "
                    f"(e.g. 'SDN') or names {', '.join(TASKS)}"
                )
            names = [letters[c] for c in compact]
        return canonical_tasks(names)
    return canonical_tasks(spec)


def canonical_tasks(tasks: Iterable[str]) -> tuple[str, ...]:
    """Validate task names and return them in canonical order (no duplicates)."""
    tasks = list(tasks)
    if not tasks:
        raise ValueError("at least one task is required")
    for t in tasks:
        get_task(t)
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"duplicate task in {tasks}")
    order = TASKS.names()
    return tuple(sorted(tasks, key=order.index))


def task_set_name(tasks: Iterable[str], sep: str = "") -> str:
    """``("semseg", "depth")`` -> ``"SD"`` (or ``"S-D"`` with ``sep="-"``)."""
    return sep.join(get_task(t).letter for t in canonical_tasks(tasks))


def directions(tasks: str | Iterable[str]) -> dict[str, bool]:
    """``{task: headline metric higher is better}`` (canonical order) for
    :func:`densemtl.metrics.multitask_delta`; ``tasks`` as in :func:`parse_task_set`."""
    return {t: get_task(t).higher_is_better for t in parse_task_set(tasks)}


def headlines(tasks: str | Iterable[str]) -> dict[str, str]:
    """``{task: headline metric key}`` (canonical order); ``tasks`` as in :func:`parse_task_set`."""
    return {t: get_task(t).headline_metric for t in parse_task_set(tasks)}
