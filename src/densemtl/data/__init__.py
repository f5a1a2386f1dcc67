"""Datasets (registry), geometry, transforms and the procedural scene generator."""

from ..tasks.edges import edges_from_labels
from .base import DenseDataset, collate
from .io import DataError
from .registry import create_dataset, get_dataset_class, list_datasets, register_dataset

# registration order = order in listings
from . import nyud  # noqa: E402,F401
from . import cityscapes  # noqa: E402,F401
from . import vkitti2  # noqa: E402,F401
from . import synthia  # noqa: E402,F401
from . import procedural  # noqa: E402,F401

__all__ = ["DenseDataset", "DataError", "collate", "edges_from_labels", "create_dataset", "get_dataset_class",
           "list_datasets", "register_dataset"]
