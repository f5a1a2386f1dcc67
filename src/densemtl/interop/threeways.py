"""Hoyer et al.'s released self-supervised depth model (project
lhoyer/improving_segmentation_with_selfsupervised_depth, CVPR 2021) -> a densemtl checkpoint.

A released model is a folder (e.g. ``mono_cityscapes_1024x512_r101dil_aspp_dec6_lr5_fd2_crop512x512bs4``)
of four Monodepth2-style state dicts (``torch.save(module.state_dict())``):

==================  ==========================================================================
file                what it holds (keys)
==================  ==========================================================================
``encoder.pth``     the depth encoder, a torchvision ResNet with layer4 dilated:
                    ``encoder.{conv1, bn1, layer1..4}.*`` (no ``fc``)
``depth.pth``       the 3-ways depth decoder, its modules in a list: ``decoder.0`` ASPP,
                    ``decoder.{2,3,5,6,8,9,11,12,13}.block.0.conv`` the nine conv blocks (scale 4
                    to 0; 1, 4, 7, 10 are identity skip projections without tensors),
                    ``decoder.{14,15,16,17}.conv`` the 3x3 disparity convs of scales 0..3
``pose_encoder.pth``  ResNet-18 on two stacked frames: ``encoder.*``, ``conv1`` with 6 channels
``pose.pth``        the pose decoder: ``net.0`` 1x1 squeeze, ``net.1``, ``net.2`` 3x3,
                    ``net.3`` 1x1 to 6 numbers per predicted frame (2 frames)
==================  ==========================================================================

:func:`from_threeways` maps them, strictly, onto a densemtl ``densemtl`` model with the single
task ``disparity`` (plain 3-ways decoder: ``mteb_scales=[]``, heads at scales 0-3,
``disparity_head=conv3x3``, ``input_norm=authors``: their encoders normalise with
``(x - 0.45) / 0.225``) and densemtl's pose network: every tensor of the four files is used
and every parameter and buffer of the model and pose network is filled, or
:class:`ConversionError` lists the keys. One documented exception: ``net.3`` predicts 6
numbers for each of *two* frames; the pose network of the 'pairs' mode reads only the first
frame's 6 (axis-angle, translation), so rows 6-11 are dropped (and reported).

The converted checkpoint is a working depth model (``densemtl eval``) and the initialisation of
the Table 5 runs: ``train.init_from`` = it, ``train.init_parts: [encoder, decoders, posenet]``,
``train.init_decoder_source: disparity`` (its decoder into every task decoder, as the released
DenseMTL code does; see docs/selfsup.md).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Mapping

import torch

from ..config import config_from_dict
from ..engine.checkpoint import save_checkpoint
from ..fileio import UnreadableFile, sha256_file, torch_load
from ..models import create_model
from ..selfsup import PoseNet
from ..tasks import task_set_name
from .official.errors import ConversionError, listing
from .official.keymap import DECODER_BLOCKS
from .official.layout import FIRST_SIDE, INPUT_NORM, RESNETS

FILES = ("encoder.pth", "depth.pth", "pose_encoder.pth", "pose.pth")
FORMAT_NAME = "Hoyer et al. self-supervised depth model (Monodepth2-style state dicts)"
METADATA = {"height", "width", "use_stereo"}  # non-tensor entries Monodepth2 writes into encoder.pth
POSE_LAYERS = {"net.0": "squeeze", "net.1": "decoder.1", "net.2": "decoder.3", "net.3": "decoder.5"}
POSE_OUT = 6  # axis-angle + translation of one frame


def read_threeways(folder) -> dict[str, dict[str, torch.Tensor]]:
    """``{file name: state dict}`` of the four files of a released folder; metadata entries
    (Monodepth2's ``height``, ``width``, ``use_stereo``) are dropped. Clear errors for a missing
    folder or file and for anything that is not a state dict."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (expected Hoyer et al.'s model folder with {', '.join(FILES)})")
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise ConversionError(f"{folder}: missing {', '.join(missing)} (a released model folder holds {', '.join(FILES)})")
    out = {}
    for name in FILES:
        path = folder / name
        try:
            obj = torch_load(path)
        except UnreadableFile as e:
            raise ConversionError(f"{path}: cannot read it as a state dict: {e.text} ({e.detail})") from None
        if not isinstance(obj, Mapping) or not obj:
            raise ConversionError(f"{path}: not a state dict (it holds {type(obj).__name__})")
        bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor) and k not in METADATA]
        if bad:
            raise ConversionError(f"{path}: not a state dict: {len(bad)} entr(ies) are not tensors:{listing(bad)}")
        out[name] = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    return out


def infer_backbone(encoder: Mapping[str, torch.Tensor], what: str = "encoder.pth") -> str:
    """The timm name of a torchvision bottleneck ResNet from its keys (blocks per stage)."""
    blocks: dict[int, int] = {}
    for k in encoder:
        m = re.match(r"encoder\.layer([1-4])\.(\d+)\.", k)
        if m:
            blocks[int(m.group(1))] = max(blocks.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    counts = tuple(blocks.get(i, 0) for i in (1, 2, 3, 4))
    if not any(k.startswith("encoder.layer") for k in encoder):
        raise ConversionError(f"{what}: not a ResNet encoder (expected keys encoder.conv1.*, encoder.layer1.*, ...); "
                              f"its first keys:{listing(list(encoder)[:8])}")
    if "encoder.layer1.0.conv3.weight" not in encoder:
        raise ConversionError(f"{what}: a ResNet with basic blocks (ResNet-18/34-like, blocks per stage "
                              f"{list(counts)}): the released encoder is a dilated bottleneck ResNet (output stride "
                              f"16), which torchvision builds only for ResNet-50/101/152")
    if counts not in RESNETS:
        raise ConversionError(f"{what}: unknown backbone, a bottleneck ResNet with {list(counts)} blocks per stage "
                              f"(known: {', '.join(f'{v} {list(k)}' for k, v in RESNETS.items())})")
    return RESNETS[counts]


def _depth_key(ours: str) -> str:
    """densemtl key of the disparity decoder (without ``decoders.disparity.``) -> depth.pth key."""
    mod, _, rest = ours.partition(".")
    if mod == "aspp":
        return f"decoder.0.{rest}"
    if mod in DECODER_BLOCKS:
        return f"decoder.{DECODER_BLOCKS[mod]}.block.0.{rest}"
    if mod == "heads":
        scale, _, rest = rest.partition(".")
        return f"decoder.{FIRST_SIDE + int(scale)}.{rest}"
    raise ConversionError(f"the densemtl key decoders.disparity.{ours} has no counterpart in depth.pth")


def _match(name: str, theirs: Mapping[str, torch.Tensor], ours: Mapping[str, torch.Tensor], kmap: dict[str, str],
           problems: list[str]) -> None:
    """Check a strict one-to-one correspondence ``kmap`` (our key -> their key) with equal shapes."""
    missing = sorted(a for a in kmap.values() if a not in theirs)
    unused = sorted(set(theirs) - set(kmap.values()))
    shapes = [f"{a}: file {tuple(theirs[a].shape)}, model {tuple(ours[k].shape)}" for k, a in kmap.items()
              if a in theirs and tuple(theirs[a].shape) != tuple(ours[k].shape)]
    if missing:
        problems.append(f"{name}: {len(missing)} key(s) the model needs are missing:{listing(missing)}")
    if unused:
        problems.append(f"{name}: {len(unused)} key(s) have no place in the model (another architecture or "
                        f"options):{listing(unused)}")
    if shapes:
        problems.append(f"{name}: {len(shapes)} shape mismatch(es):{listing(shapes)}")


def from_threeways(files: Mapping[str, Mapping[str, torch.Tensor]]) -> tuple[dict, dict, dict, dict]:
    """The four state dicts (:func:`read_threeways`) -> ``(model_state, model_config,
    posenet_state, info)``; strict (see the module docstring). ``info`` lists what was dropped."""
    enc, dec, penc, pdec = (files[f] for f in FILES)
    backbone = infer_backbone(enc)
    n_heads = len({k.split(".")[1] for k in dec if re.match(rf"decoder\.(\d+)\.", k) and int(k.split(".")[1]) >= FIRST_SIDE})
    if not 1 <= n_heads <= 5:
        raise ConversionError(f"depth.pth: expected disparity convs decoder.{FIRST_SIDE}.. (one per scale), found {n_heads}")
    options = {"mteb_scales": [], "supervised_scales": list(range(n_heads)), "disparity_head": "conv3x3",
               "input_norm": INPUT_NORM}
    with torch.device("meta"):
        model = create_model("densemtl", ("disparity",), None, backbone, **options)
        pose = PoseNet("resnet18", input_norm=INPUT_NORM)
    own, pown = model.state_dict(), pose.state_dict()
    problems: list[str] = []
    kmap = {}
    for k in own:
        if k.startswith("encoder.body."):
            kmap[k] = "encoder." + k[len("encoder.body."):]
        elif k.startswith("decoders.disparity."):
            kmap[k] = _depth_key(k[len("decoders.disparity."):])
    extra = [k for k in own if k not in kmap]
    if extra:
        raise ConversionError(f"internal: densemtl keys without a counterpart:{listing(extra)}")
    _match("encoder.pth", enc, own, {k: a for k, a in kmap.items() if k.startswith("encoder.")}, problems)
    _match("depth.pth", dec, own, {k: a for k, a in kmap.items() if k.startswith("decoders.")}, problems)
    pmap = {k: k for k in pown if k.startswith("encoder.")}
    _match("pose_encoder.pth", penc, pown, pmap, problems)
    dmap = {}
    for theirs, ours in POSE_LAYERS.items():
        for p in ("weight", "bias"):
            dmap[f"{ours}.{p}"] = f"{theirs}.{p}"
    dropped = []
    last_w = pdec.get("net.3.weight")
    if last_w is not None and last_w.shape[0] != POSE_OUT:
        if last_w.shape[0] % POSE_OUT or last_w.shape[0] < POSE_OUT:
            problems.append(f"pose.pth: net.3 predicts {last_w.shape[0]} numbers, not 6 per frame")
        else:  # 6 per predicted frame: the 'pairs' pose network reads the first frame's only
            dropped = [f"pose.pth net.3.weight/bias rows {POSE_OUT}..{last_w.shape[0] - 1} (the second predicted frame: "
                       f"never read by the pose network of the 'pairs' mode)"]
            pdec = {**pdec, "net.3.weight": last_w[:POSE_OUT], "net.3.bias": pdec["net.3.bias"][:POSE_OUT]}
    _match("pose.pth", pdec, pown, dmap, problems)
    if problems:
        raise ConversionError("the files do not match Hoyer et al.'s released architecture (ResNet encoder, 3-ways "
                              "depth decoder with widths 64/128/128/256/256 and 3x3 disparity convs, ResNet-18 pose "
                              "network):\n  " + "\n  ".join(problems))
    state = {k: (enc if k.startswith("encoder.") else dec)[a] for k, a in kmap.items()}
    pstate = {k: penc[a] for k, a in pmap.items()}
    pstate.update({k: pdec[a] for k, a in dmap.items()})
    info = {"backbone": backbone, "dropped": dropped,
            "tensors": {f: len(files[f]) for f in FILES}}
    return state, model.model_config, pstate, info


def guess_dataset(folder) -> str | None:
    """``cityscapes`` for a released folder named ``mono_cityscapes_*``, else ``None``."""
    name = Path(folder).name
    return "cityscapes" if name.startswith("mono_cityscapes") else None


def convert_threeways_folder(folder, out, *, dataset: str | None = None, log: Callable[[str], None] = print) -> dict:
    """Convert a released folder into a densemtl checkpoint at ``out`` (model ``model``, pose
    network ``posenet``, origin ``converted_from``; ``config`` when ``dataset`` is known, so that
    ``densemtl eval`` knows the data). Returns the checkpoint."""
    folder = Path(folder)
    files = read_threeways(folder)
    log(f"read {folder}: " + ", ".join(f"{f} ({len(files[f])} tensors)" for f in FILES))
    try:
        state, mc, pstate, info = from_threeways(files)
    except ConversionError as e:
        raise ConversionError(f"{folder}: {e}") from None
    for d in info["dropped"]:
        log(f"dropped: {d}")
    ckpt = {
        "model_config": mc,
        "model": {k: v.clone() for k, v in state.items()},
        "posenet": {k: v.clone() for k, v in pstate.items()},
        "converted_from": {"format": FORMAT_NAME, "folder": folder.name,
                           "sha256": {f: sha256_file(folder / f) for f in FILES}, **info},
    }
    if dataset:
        ckpt["config"] = {"tasks": task_set_name(mc["tasks"]), "data": {"dataset": dataset},
                          "model": {"name": mc["name"], "backbone": mc["backbone"], "pretrained": False,
                                    "options": dict(mc["options"])}}
        config_from_dict(ckpt["config"])  # fail now rather than in `densemtl eval`
    save_checkpoint(ckpt, out)
    log(f"wrote {out}: model densemtl ({mc['backbone']}, task disparity, 3-ways decoder, 3x3 disparity convs at "
        f"scales {mc['options']['supervised_scales']}, input_norm {INPUT_NORM}) + pose network; initialise a run "
        f"with train.init_from={out} train.init_parts=[encoder,decoders,posenet] train.init_decoder_source=disparity")
    return ckpt
