"""What an authors' file holds, inferred from its keys and shapes (and a released file's name):
task set, class count, backbone, supervised scales, mTEB placement, fusion and xTAM switches."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from ...models.decoder import DECODER_WIDTHS
from ...models.mteb import FUSIONS, XTAM_DOWNSCALE
from ...tasks import canonical_tasks, list_tasks, parse_task_set
from .errors import ConversionError, listing

INPUT_NORM = "authors"
FIRST_SIDE = 14  # heads.T.decoder.14, 15, ...: prediction convs, supervised scales ascending
# torchvision bottleneck ResNets (blocks per stage); basic-block ResNets cannot be dilated there
RESNETS = {(3, 4, 6, 3): "resnet50", (3, 4, 23, 3): "resnet101", (3, 8, 36, 3): "resnet152"}
FAMILIES = ("backbone.encoder.", "heads.", "m.", "params.")
RELEASED_DATASETS = {"sy": "synthia", "vk": "vkitti2", "cs": "cityscapes"}


@dataclass(frozen=True)
class OfficialLayout:
    """What an authors' file holds, as inferred from its keys and shapes."""

    tasks: tuple[str, ...]
    num_classes: int | None
    backbone: str
    supervised_scales: tuple[int, ...]
    mteb_scales: tuple[int, ...]
    fusion: str
    self_attention: bool
    correlation_attention: bool
    alpha: bool
    aliases: bool  # the params.* family is present

    def model_options(self) -> dict:
        """``create_model("densemtl", ...)`` options reproducing the authors' computation."""
        return {
            "mteb_scales": list(self.mteb_scales), "fusion": self.fusion, "attention": "spatial",
            "self_attention": self.self_attention, "correlation_attention": self.correlation_attention,
            "alpha": self.alpha, "kv_downscale": "s", "supervised_scales": list(self.supervised_scales),
            "input_norm": INPUT_NORM,
        }


def infer_layout(sd: Mapping[str, torch.Tensor], tasks=None, num_classes: int | None = None,
                 fusion: str | None = None) -> OfficialLayout:
    """Infer the architecture of an authors' state dict; ``tasks``, ``num_classes`` and
    ``fusion`` (``add`` and ``prod`` have the same keys) are checked against the file."""
    keys = list(sd)
    if not any(k.startswith("backbone.encoder.") for k in keys) or not any(k.startswith("heads.") for k in keys):
        raise ConversionError("keys of an unknown architecture: not an authors' DenseMTL state dict (expected "
                              "backbone.encoder.*, heads.<task>.decoder.*, m.<task>.<scale>.*); the file's first "
                              f"keys:{listing(keys[:10])}")
    foreign = [k for k in keys if not k.startswith(FAMILIES)]
    if foreign:
        raise ConversionError("keys of an unknown architecture (outside backbone.encoder.*, heads.*, m.*, "
                              f"params.*):{listing(foreign)}")
    # tasks
    head_tasks = sorted({k.split(".")[1] for k in keys if k.startswith("heads.")})
    unknown = [t for t in head_tasks if t not in list_tasks()]
    if unknown:
        raise ConversionError(f"keys of an unknown architecture: heads of unknown task(s) {unknown} (densemtl "
                              f"tasks: {', '.join(list_tasks())}):{listing(k for k in keys if k.split('.')[1] in unknown)}")
    found = canonical_tasks(head_tasks)
    if tasks is not None and parse_task_set(tasks) != found:
        raise ConversionError(f"the file holds the heads of tasks {', '.join(found)}, --tasks asks for "
                              f"{', '.join(parse_task_set(tasks))}")
    # backbone
    blocks: dict[int, int] = {}
    for k in keys:
        m = re.match(r"backbone\.encoder\.layer([1-4])\.(\d+)\.", k)
        if m:
            blocks[int(m.group(1))] = max(blocks.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    counts = tuple(blocks.get(i, 0) for i in (1, 2, 3, 4))
    if not any(k.startswith("backbone.encoder.layer1.0.conv3.") for k in keys):
        raise ConversionError(f"backbone with basic blocks (ResNet-18/34-like, blocks per stage {list(counts)}): "
                              "densemtl needs output stride 16, which the authors' torchvision encoder gives only "
                              "for bottleneck ResNets (50/101/152)")
    if counts not in RESNETS:
        raise ConversionError(f"unknown backbone: a bottleneck ResNet with {list(counts)} blocks per stage "
                              f"(known: {', '.join(f'{v} {list(k)}' for k, v in RESNETS.items())})")
    backbone = RESNETS[counts]
    # class count
    nc = None
    side = f"heads.semseg.decoder.{FIRST_SIDE}.weight"
    if "semseg" in found:
        if side in sd:
            nc = int(sd[side].shape[0])
            if num_classes is not None and int(num_classes) != nc:
                raise ConversionError(f"class count mismatch: the file's segmentation head predicts {nc} classes "
                                      f"({side} has shape {tuple(sd[side].shape)}), --num-classes says {num_classes}")
        elif num_classes is None:
            raise ConversionError(f"cannot infer the class count ({side} is missing): give --num-classes")
        else:
            nc = int(num_classes)
    elif num_classes is not None:
        raise ConversionError(f"--num-classes {num_classes} given, but the file has no semseg head (tasks: {', '.join(found)})")
    # supervised scales: prediction convs 14, 15, ... in ascending scale order, matched by width
    t0 = found[0]
    sides = sorted(int(m.group(1)) for k in keys
                   if (m := re.fullmatch(rf"heads\.{t0}\.decoder\.(\d+)\.weight", k)) and int(m.group(1)) >= FIRST_SIDE)
    scales: list[int] = []
    for i in sides:
        cin = int(sd[f"heads.{t0}.decoder.{i}.weight"].shape[1])
        cand = [s for s in range((scales[-1] + 1) if scales else 0, 5) if DECODER_WIDTHS[s] == cin]
        if not cand:
            raise ConversionError(f"heads.{t0}.decoder.{i}.weight takes {cin} channels, which matches no decoder "
                                  f"scale after {scales} (widths per scale {list(DECODER_WIDTHS)})")
        scales.append(cand[0])
    if 0 not in scales:
        raise ConversionError(f"no full-resolution prediction conv (heads.{t0}.decoder.{FIRST_SIDE}.weight with "
                              f"{DECODER_WIDTHS[0]} input channels); found decoder entries {sides}")
    # exchange blocks
    mkeys = [k for k in keys if k.startswith("m.")]
    bad_m = [k for k in mkeys if len(k.split(".")) < 4 or not k.split(".")[2].isdigit()]
    if bad_m:
        raise ConversionError(f"keys of an unknown architecture under m.* (expected m.<task>.<scale>.*):{listing(bad_m)}")
    mscales = sorted({int(k.split(".")[2]) for k in mkeys})
    unsupported = [s for s in mscales if s not in XTAM_DOWNSCALE]
    if unsupported:
        raise ConversionError(f"mTEB at decoder scale(s) {unsupported} is not supported (densemtl places it at "
                              f"scales {sorted(XTAM_DOWNSCALE)}):{listing(k for k in mkeys if int(k.split('.')[2]) in unsupported)}")
    self_attention = any(".SA_" in k for k in mkeys)
    correlation = any(".SxTAM_" in k for k in mkeys)
    alpha = any(re.search(r"\.SxTAM_[a-z]+\.alpha$", k) for k in mkeys)
    if mscales and not (self_attention or correlation):
        raise ConversionError("the exchange blocks (m.*) have neither self-attention (SA_*) nor correlation "
                              f"attention (SxTAM_*) modules:{listing(mkeys)}")
    if fusion is not None and fusion not in FUSIONS:
        raise ConversionError(f"fusion must be one of {FUSIONS}, got '{fusion}'")
    if mscales:
        post = f"m.{found[0]}.{mscales[0]}.post.0.weight"
        if post not in sd:
            raise ConversionError(f"the exchange block has no fusion layer: {post} is missing")
        file_concat = int(sd[post].shape[1]) == len(found) * DECODER_WIDTHS[mscales[0]]
        if fusion is None:
            fusion = "concat" if file_concat else "add"
        elif (fusion == "concat") != file_concat:
            raise ConversionError(f"fusion '{fusion}' does not match the file: {post} has shape "
                                  f"{tuple(sd[post].shape)} ({'concat' if file_concat else 'add or prod'} fusion)")
    return OfficialLayout(
        tasks=found, num_classes=nc, backbone=backbone, supervised_scales=tuple(scales),
        mteb_scales=tuple(mscales), fusion=fusion or "add", self_attention=self_attention if mscales else True,
        correlation_attention=correlation if mscales else True, alpha=alpha if mscales else True,
        aliases=any(k.startswith("params.") for k in keys),
    )


def layout_summary(layout: OfficialLayout) -> str:
    parts = [f"tasks {','.join(layout.tasks)}"]
    if layout.num_classes is not None:
        parts.append(f"{layout.num_classes} classes")
    parts += [layout.backbone, f"supervised scales {list(layout.supervised_scales)}"]
    if layout.mteb_scales:
        attn = [n for n, on in (("self-attention", layout.self_attention), ("correlation", layout.correlation_attention),
                                ("alpha", layout.alpha)) if on]
        parts.append(f"mTEB at scale(s) {list(layout.mteb_scales)}, {layout.fusion} fusion, xTAM {'+'.join(attn)}")
    else:
        parts.append("no mTEB")
    return ", ".join(parts)


def guess_dataset(path) -> str | None:
    """Dataset of a released file from its name (``sy_`` / ``vk_`` / ``cs_densemtl_*.pkl``)."""
    m = re.match(r"(sy|vk|cs)_densemtl_", Path(path).name)
    return RELEASED_DATASETS[m.group(1)] if m else None
