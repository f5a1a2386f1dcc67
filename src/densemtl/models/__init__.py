"""Models: registry/factory (``create_model``, ``list_models``) and the registered methods."""

from .registry import create_model, list_models, model_description, model_from_config, model_options, register_model

# registration order = order in `densemtl models`
from . import deeplab  # noqa: F401,E402  (stl, mtl)
from . import padnet  # noqa: F401,E402
from . import padnet3ways  # noqa: F401,E402
from . import densemtl  # noqa: F401,E402

from .base import INPUT_NORMS, ModelOutput, MultiTaskModel  # noqa: E402
from .mteb import MTEB  # noqa: E402
from .xtam import DirectionalXTAM, attention, attention_reference  # noqa: E402

__all__ = [
    "create_model", "list_models", "model_description", "model_from_config", "model_options", "register_model",
    "MultiTaskModel", "ModelOutput", "INPUT_NORMS", "MTEB", "DirectionalXTAM", "attention", "attention_reference",
    "count_parameters",
]


def count_parameters(module, trainable_only: bool = True) -> int:
    """Number of (learnable) parameters; BatchNorm buffers are not counted."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
