"""Reading an authors' file: a flat ``{key: tensor}`` mapping (``torch.save(model.state_dict())``)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from ...engine.checkpoint import FORMAT
from ...fileio import UnreadableFile, torch_load
from .errors import ConversionError, listing


def read_official(path) -> dict[str, torch.Tensor]:
    """Load an authors' file: ``{key: tensor}``; clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        obj = torch_load(path)
    except UnreadableFile as e:
        if e.reason == "format":
            raise ConversionError(f"{path}: not a checkpoint: neither a torch.save zip archive nor a pickle "
                                  f"({e.detail}); it is truncated or corrupt (download it again) or another kind "
                                  f"of file") from None
        if e.reason == "objects":
            raise ConversionError(f"{path}: not a state dict: {e.text} ({e.detail})") from None
        raise ConversionError(f"{path}: cannot read the file ({e.detail}); it is truncated or corrupt (download it "
                              f"again)") from None
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
