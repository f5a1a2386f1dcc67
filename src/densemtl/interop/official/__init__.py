"""The authors' released DenseMTL checkpoints (astra-vision/DenseMTL, 2022) <-> densemtl.

An authors' file is ``torch.save(model.state_dict())``: a flat ``{key: tensor}`` mapping with no
config (format: ``docs/checkpoints.md``). :func:`from_official` infers the task set, class count,
backbone, supervised scales, mTEB placement and xTAM switches from the keys and shapes, and maps
every tensor to the ``densemtl`` model of the same computation; :func:`export_official` is the
exact inverse. The only computational difference from densemtl's defaults is the input
normalisation (``input_norm="authors"``: ``(x - 0.45) / 0.225``), recorded in the converted
checkpoint's ``model_config``.

One job per module, each importing only the ones before it:

- ``errors``: :class:`ConversionError` and the listing of offending keys;
- ``reader``: :func:`read_official`, loading a file with clear errors for anything else;
- ``layout``: :class:`OfficialLayout`, :func:`infer_layout`, :func:`layout_summary`,
  :func:`guess_dataset`;
- ``keymap``: authors' key <-> densemtl key, the ``params.*`` aliases, the source order of the
  fusion layers (:func:`parse_source_order`) and the permutation of their input blocks;
- ``convert``: :func:`from_official`, :func:`export_official`;
- ``detect``: :func:`load_detection_batches`, :func:`detect_order`;
- ``files``: :func:`convert_official_file`, what ``densemtl convert official`` runs.

Only ``detect`` uses the data layer and the training engine; ``reader`` and ``files`` use only
``engine.checkpoint`` (the densemtl checkpoint format: recognised, written). ``files`` is apart
from ``convert`` because it runs the detection, which itself converts.
"""

from .convert import export_official, from_official
from .detect import detect_order, load_detection_batches
from .errors import ConversionError
from .files import convert_official_file
from .keymap import parse_source_order
from .layout import OfficialLayout, guess_dataset, infer_layout, layout_summary
from .reader import read_official

__all__ = [
    "ConversionError", "OfficialLayout", "convert_official_file", "detect_order", "export_official", "from_official",
    "guess_dataset", "infer_layout", "layout_summary", "load_detection_batches", "parse_source_order", "read_official",
]
