"""Dataset registry: a dataset is added by registering one class."""

from __future__ import annotations

_DATASETS: dict[str, type] = {}


def register_dataset(name: str):
    def deco(cls):
        if name in _DATASETS:
            raise ValueError(f"dataset '{name}' is already registered")
        _DATASETS[name] = cls
        cls.name = name
        return cls

    return deco


def get_dataset_class(name: str) -> type:
    try:
        return _DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset '{name}'; registered datasets: {', '.join(_DATASETS)}") from None


def list_datasets() -> list[str]:
    return list(_DATASETS)


def create_dataset(name: str, root, split: str = "train", tasks=("semseg", "depth"), **options):
    """Build a registered dataset, e.g. ``create_dataset("nyud", "data/nyud", "val", "SDN")``."""
    return get_dataset_class(name)(root, split=split, tasks=tasks, **options)
