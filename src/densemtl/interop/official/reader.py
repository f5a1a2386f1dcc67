"""Reading an authors' file: a flat ``{key: tensor}`` mapping (``torch.save(model.state_dict())``)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from ...engine.checkpoint import FORMAT
from .errors import ConversionError, listing


def read_official(path) -> dict[str, torch.Tensor]:
    """Load an authors' file: ``{key: tensor}``; clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        if "Weights only load failed" in str(e):
            raise ConversionError(f"{path}: not a state dict: the file holds Python objects other than tensors "
                                  f"({first})") from e
        raise ConversionError(f"{path}: cannot read the file ({type(e).__name__}: {first}); it is truncated or "
                              f"corrupt (download it again)") from e
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        raise ConversionError(f"{path}: already a densemtl checkpoint, nothing to convert")
    if not isinstance(obj, Mapping) or not obj:
        what = "an empty mapping" if isinstance(obj, Mapping) else f"a {type(obj).__name__}"
        raise ConversionError(f"{path}: not a state dict: it holds {what}; the authors' files hold a flat "
                              f"mapping from key to tensor")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ConversionError(f"{path}: not a state dict: {len(bad)} entr(ies) are not tensors:{listing(bad)}")
    return dict(obj)
