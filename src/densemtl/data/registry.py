"""Dataset registry: a dataset is added by registering one class."""

from __future__ import annotations

from ..registry import Registry

DATASETS: Registry[type] = Registry("dataset")


def register_dataset(name: str):
    """Class decorator registering a :class:`densemtl.data.DenseDataset` subclass under ``name``."""

    def deco(cls):
        DATASETS.add(name, cls)
        cls.name = name
        return cls

    return deco


def get_dataset_class(name: str) -> type:
    return DATASETS.get(name)


def list_datasets() -> list[str]:
    return DATASETS.names()


def create_dataset(name: str, root, split: str = "train", tasks=("semseg", "depth"), **options):
    """Build a registered dataset, e.g. ``create_dataset("nyud", "data/nyud", "val", "SDN")``."""
    return get_dataset_class(name)(root, split=split, tasks=tasks, **options)
