"""Model registry and factory, in the style of timm's ``create_model``.

A method is added by decorating one builder function with ``@register_model("name")``.
"""

from __future__ import annotations

import inspect
from typing import Callable, Iterable

import torch.nn as nn

from ..registry import Registry
from ..tasks import canonical_tasks, get_task, parse_task_set

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(name: str, description: str = ""):
    """Decorator registering ``fn(tasks, num_classes, backbone, pretrained, **options)``."""

    def deco(fn):
        fn.description = description or (fn.__doc__ or "").strip().splitlines()[0]
        return MODELS.add(name, fn)

    return deco


def list_models() -> list[str]:
    """Names of all registered models, in registration order."""
    return MODELS.names()


def model_description(name: str) -> str:
    return MODELS.get(name).description


def model_options(name: str) -> dict[str, object]:
    """Method-specific keyword options of a model and their defaults."""
    sig = inspect.signature(_get_builder(name))
    skip = {"tasks", "num_classes", "backbone", "pretrained"}
    return {
        k: p.default
        for k, p in sig.parameters.items()
        if k not in skip and p.kind is p.KEYWORD_ONLY
    }


def _get_builder(name: str):
    return MODELS.get(name)


def create_model(
    name: str,
    tasks: Iterable[str] | str = ("semseg", "depth"),
    num_classes: int | None = None,
    backbone: str = "resnet101",
    pretrained: bool | str = False,
    **options,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: one of :func:`list_models` (``stl``, ``mtl``, ``padnet``, ``padnet3ways``,
            ``densemtl``).
        tasks: task names (any order; the model uses the canonical order semseg, depth,
            normals, edges) or a compact code such as ``"SDN"``.
        num_classes: number of semantic classes (required when ``semseg`` is a task).
        backbone: any timm model name that supports ``features_only`` with output stride 16.
        pretrained: ``False``, ``True`` (timm's ImageNet weights, needs network access) or a
            path to a local ``.pth``/``.safetensors`` file in torchvision or timm naming.
        **options: method-specific options, see :func:`model_options`.

    Returns:
        An ``nn.Module`` whose ``forward(images)`` takes ``(B, 3, H, W)`` RGB in [0, 1]
        (H, W multiples of 16) and returns ``{task: {scale: logits}}``; see
        :class:`densemtl.models.base.MultiTaskModel`.
    """
    builder = _get_builder(name)
    tasks = parse_task_set(tasks)
    if "semseg" in tasks and num_classes is None:
        raise ValueError("num_classes is required when 'semseg' is one of the tasks")
    valid = model_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(
            f"model '{name}' got unknown option(s) {unknown}; valid options: "
            + ", ".join(f"{k}={v!r}" for k, v in valid.items())
        )
    model = builder(tasks=tasks, num_classes=num_classes, backbone=backbone, pretrained=pretrained, **options)
    resolved = {**valid, **options}
    model.model_config = {
        "name": name,
        "tasks": list(tasks),
        "num_classes": num_classes,
        "backbone": backbone,
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in resolved.items()},
    }
    return model


def model_from_config(cfg: dict) -> nn.Module:
    """Rebuild a model (random weights) from ``model.model_config``."""
    return create_model(
        cfg["name"], tasks=cfg["tasks"], num_classes=cfg.get("num_classes"),
        backbone=cfg.get("backbone", "resnet101"), pretrained=False, **cfg.get("options", {}),
    )


def task_out_channels(tasks: Iterable[str], num_classes: int | None) -> dict[str, int]:
    return {t: get_task(t).out_channels(num_classes) for t in canonical_tasks(tasks)}
