"""Converting an authors' file into a densemtl checkpoint file (``densemtl convert official``):
read, infer, optionally detect the source order, convert, record the origin, write."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ...config import config_from_dict
from ...engine.checkpoint import save_checkpoint
from ...fileio import sha256_file
from ...tasks import task_set_name
from .convert import from_official
from .detect import detect_order, load_detection_batches
from .errors import ConversionError
from .layout import infer_layout, layout_summary
from .reader import read_official

FORMAT_NAME = "astra-vision/DenseMTL state dict"


def convert_official_file(path, out, *, tasks=None, num_classes: int | None = None, source_order=None,
                          fusion: str | None = None, dataset: str | None = None, detect_root=None,
                          detect_split: str = "val", detect_images: int = 4,
                          log: Callable[[str], None] = print) -> dict:
    """Convert an authors' file into a densemtl checkpoint at ``out``; returns the checkpoint.

    ``dataset`` (optional) is recorded as the checkpoint's config (``densemtl eval`` / ``predict``
    then know the dataset and its input size). ``detect_root``: find the source orders on
    ``detect_images`` images of that dataset root (needs ``dataset``).
    """
    path = Path(path)
    sd = read_official(path)
    try:
        layout = infer_layout(sd, tasks, num_classes, fusion)
        n_alias = sum(k.startswith("params.") for k in sd)
        log(f"read {path}: {len(sd)} tensors" + (f" ({n_alias} params.* aliases)" if n_alias else ""))
        log(f"inferred: {layout_summary(layout)}")
        origin = "given" if source_order else "default"
        if detect_root is not None:
            if source_order:
                raise ConversionError("give either --source-order or --detect-order, not both")
            if not dataset:
                raise ConversionError("--detect-order needs --dataset (the dataset at that root)")
            batches = load_detection_batches(dataset, detect_root, layout.tasks, detect_split, detect_images)
            source_order, _ = detect_order(sd, batches, tasks=tasks, num_classes=num_classes, fusion=fusion, log=log)
            origin = "detected"
        state, mc, info = from_official(sd, tasks=tasks, num_classes=num_classes, source_order=source_order, fusion=fusion)
    except ConversionError as e:
        raise ConversionError(f"{path}: {e}") from None
    if len(layout.tasks) >= 3 and layout.mteb_scales:
        orders = "; ".join(f"{t} <- {','.join(o)}" for t, o in info["source_order"].items())
        note = " (canonical; the file does not record it: check it with --detect-order)" if origin == "default" else ""
        log(f"source order in the fusion layers ({origin}): {orders}{note}")
    ckpt = {
        "model_config": mc,
        "model": {k: v if v.untyped_storage().nbytes() == v.numel() * v.element_size() else v.clone()
                  for k, v in state.items()},
        "converted_from": {
            "format": FORMAT_NAME, "file": path.name, "sha256": sha256_file(path), **info,
            "source_order_origin": origin, "num_tensors": len(sd),
        },
    }
    if dataset:
        # trained by the released code: its targets (e.g. the normals) are the paper protocol's
        ckpt["protocol"] = "paper"
        ckpt["config"] = {"tasks": task_set_name(layout.tasks), "protocol": "paper", "data": {"dataset": dataset},
                          "model": {"name": mc["name"], "backbone": mc["backbone"], "pretrained": False,
                                    "options": dict(mc["options"])}}
        config_from_dict(ckpt["config"])  # fail now rather than in `densemtl eval`
    save_checkpoint(ckpt, out)
    opts = ", ".join(f"{k}={v}" for k, v in mc["options"].items())
    log(f"wrote {out}: model {mc['name']} ({mc['backbone']}, tasks {','.join(mc['tasks'])}"
        + (f", {mc['num_classes']} classes" if mc.get("num_classes") else "") + f"), options {opts}")
    return ckpt
