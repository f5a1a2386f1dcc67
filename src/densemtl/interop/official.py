"""The authors' released DenseMTL checkpoints (astra-vision/DenseMTL, 2022) <-> densemtl.

An authors' file is ``torch.save(model.state_dict())``: a flat ``{key: tensor}`` mapping with no
config (format: ``docs/checkpoints.md``). :func:`from_official` infers the task set, class count,
backbone, supervised scales, mTEB placement and xTAM switches from the keys and shapes, and maps
every tensor to the ``densemtl`` model of the same computation; :func:`export_official` is the
exact inverse. Key correspondence (T target task, S source task, s decoder scale):

=====================================================  ===========================================
authors                                                densemtl
=====================================================  ===========================================
``backbone.encoder.X``                                 ``encoder.body.X``
``heads.T.decoder.0.X`` (ASPP)                         ``decoders.T.aspp.X``
``heads.T.decoder.{2,3,5,6,8,9,11,12,13}.block.0.X``   ``decoders.T.{fuse4,pre3,fuse3,pre2,fuse2,pre1,fuse1,pre0,fuse0}.X``
``heads.T.decoder.{14,15,..}.X`` (prediction convs)    ``decoders.T.heads.{supervised scales, ascending}.X``
``m.T.s.extract_S.0.X``                                ``exchanges.s.xtam.T.S.extract.0.X``
``m.T.s.SA_S.conv.X`` / ``.attention.0.X``             ``exchanges.s.xtam.T.S.self_attn.conv.X`` / ``.gate.X``
``m.T.s.SxTAM_S.conv_b`` / ``conv_c`` / ``conv_d``     ``exchanges.s.xtam.T.S.corr.query`` / ``key`` / ``value``
``m.T.s.SxTAM_S.alpha``                                ``exchanges.s.xtam.T.S.corr.alpha.spatial``
``m.T.s.proj_S.X``                                     ``exchanges.s.xtam.T.S.proj.X``
``m.T.s.post.X``                                       ``exchanges.s.fuse.T.X`` (input blocks reordered)
``params.T.0.X`` / ``params.T.1.X``                    aliases of ``heads.T.X`` / ``m.T.X`` (same tensors)
=====================================================  ===========================================

The only computational difference from densemtl's defaults is the input normalisation
(``input_norm="authors"``: ``(x - 0.45) / 0.225``), recorded in the converted checkpoint's
``model_config``. The authors' ``post`` layer concatenates the sources in the iteration order
of a Python set (unknown for 3+ tasks); densemtl uses the canonical task order, so the
``post`` weight's input blocks are permuted from the given (or detected) order.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch

FORMAT_NAME = "astra-vision/DenseMTL state dict"
INPUT_NORM = "authors"
FIRST_SIDE = 14  # heads.T.decoder.14, 15, ...: prediction convs, supervised scales ascending
DECODER_BLOCKS = {"fuse4": 2, "pre3": 3, "fuse3": 5, "pre2": 6, "fuse2": 8, "pre1": 9, "fuse1": 11, "pre0": 12, "fuse0": 13}
# torchvision bottleneck ResNets (blocks per stage); basic-block ResNets cannot be dilated there
RESNETS = {(3, 4, 6, 3): "resnet50", (3, 4, 23, 3): "resnet101", (3, 8, 36, 3): "resnet152"}
XTAM_PARTS = (  # (authors' prefix inside m.T.s, for source S) <-> (ours inside exchanges.s.xtam.T.S)
    ("extract_{S}.", "extract."),
    ("SA_{S}.conv.", "self_attn.conv."),
    ("SA_{S}.attention.0.", "self_attn.gate."),
    ("SxTAM_{S}.conv_b.", "corr.query."),
    ("SxTAM_{S}.conv_c.", "corr.key."),
    ("SxTAM_{S}.conv_d.", "corr.value."),
    ("SxTAM_{S}.alpha", "corr.alpha.spatial"),
    ("proj_{S}.", "proj."),
)
FAMILIES = ("backbone.encoder.", "heads.", "m.", "params.")
ALIASES = {"0": "heads", "1": "m"}  # params.T.<i>.X is the same tensor as <family>.T.X
RELEASED_DATASETS = {"sy": "synthia", "vk": "vkitti2", "cs": "cityscapes"}
MAX_LISTED = 40


class ConversionError(ValueError):
    """The file cannot be converted (not a state dict, unknown keys, inconsistent options)."""


def _listing(keys: Iterable[str]) -> str:
    keys = list(keys)
    shown = "\n    ".join(keys[:MAX_LISTED])
    more = f"\n    ... and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else ""
    return f"\n    {shown}{more}"


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


# --- reading -------------------------------------------------------------------------------
def read_official(path) -> dict[str, torch.Tensor]:
    """Load an authors' file: ``{key: tensor}``; clear errors for anything else."""
    from ..engine.checkpoint import FORMAT
    from ..fileio import UnreadableFile, torch_load

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
        raise ConversionError(f"{path}: not a state dict: {len(bad)} entr(ies) are not tensors:{_listing(bad)}")
    return dict(obj)


# --- inference -----------------------------------------------------------------------------
def infer_layout(sd: Mapping[str, torch.Tensor], tasks=None, num_classes: int | None = None,
                 fusion: str | None = None) -> OfficialLayout:
    """Infer the architecture of an authors' state dict; ``tasks``, ``num_classes`` and
    ``fusion`` (``add`` and ``prod`` have the same keys) are checked against the file."""
    from ..models.decoder import DECODER_WIDTHS
    from ..models.mteb import FUSIONS, XTAM_DOWNSCALE
    from ..tasks import canonical_tasks, list_tasks, parse_task_set

    keys = list(sd)
    if not any(k.startswith("backbone.encoder.") for k in keys) or not any(k.startswith("heads.") for k in keys):
        raise ConversionError("keys of an unknown architecture: not an authors' DenseMTL state dict (expected "
                              "backbone.encoder.*, heads.<task>.decoder.*, m.<task>.<scale>.*); the file's first "
                              f"keys:{_listing(keys[:10])}")
    foreign = [k for k in keys if not k.startswith(FAMILIES)]
    if foreign:
        raise ConversionError("keys of an unknown architecture (outside backbone.encoder.*, heads.*, m.*, "
                              f"params.*):{_listing(foreign)}")
    # tasks
    head_tasks = sorted({k.split(".")[1] for k in keys if k.startswith("heads.")})
    unknown = [t for t in head_tasks if t not in list_tasks()]
    if unknown:
        raise ConversionError(f"keys of an unknown architecture: heads of unknown task(s) {unknown} (densemtl "
                              f"tasks: {', '.join(list_tasks())}):{_listing(k for k in keys if k.split('.')[1] in unknown)}")
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
        raise ConversionError(f"keys of an unknown architecture under m.* (expected m.<task>.<scale>.*):{_listing(bad_m)}")
    mscales = sorted({int(k.split(".")[2]) for k in mkeys})
    unsupported = [s for s in mscales if s not in XTAM_DOWNSCALE]
    if unsupported:
        raise ConversionError(f"mTEB at decoder scale(s) {unsupported} is not supported (densemtl places it at "
                              f"scales {sorted(XTAM_DOWNSCALE)}):{_listing(k for k in mkeys if int(k.split('.')[2]) in unsupported)}")
    self_attention = any(".SA_" in k for k in mkeys)
    correlation = any(".SxTAM_" in k for k in mkeys)
    alpha = any(re.search(r"\.SxTAM_[a-z]+\.alpha$", k) for k in mkeys)
    if mscales and not (self_attention or correlation):
        raise ConversionError("the exchange blocks (m.*) have neither self-attention (SA_*) nor correlation "
                              f"attention (SxTAM_*) modules:{_listing(mkeys)}")
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


def parse_source_order(spec, tasks: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Source order of every target's fusion layer.

    ``spec``: ``None``, ``{target: [sources]}`` or strings ``"T=S1,S2"`` (names or letters, e.g.
    ``"S=N,D"``). Targets not given get the canonical order (semseg, depth, normals, edges).
    """
    from ..tasks import get_task, list_tasks

    tasks = tuple(tasks)
    letters = {get_task(t).letter: t for t in list_tasks()}

    def name(x: str) -> str:
        x = x.strip()
        return letters.get(x, x)

    given: dict[str, list[str]] = {}
    if isinstance(spec, Mapping):
        given = {name(t): [name(s) for s in v] for t, v in spec.items()}
    elif spec:
        for item in spec:
            if "=" not in item:
                raise ConversionError(f"--source-order '{item}' must look like TARGET=SOURCE1,SOURCE2 (e.g. semseg=normals,depth)")
            t, v = item.split("=", 1)
            if name(t) in given:
                raise ConversionError(f"--source-order gives target '{name(t)}' twice")
            given[name(t)] = [name(s) for s in v.split(",") if s.strip()]
    orders = {}
    for t in given:
        if t not in tasks:
            raise ConversionError(f"--source-order: '{t}' is not a task of this model ({', '.join(tasks)})")
    for t in tasks:
        canon = tuple(j for j in tasks if j != t)
        o = tuple(given.get(t, canon))
        if sorted(o) != sorted(canon):
            raise ConversionError(f"--source-order for target {t}: {','.join(o)} must list each of {', '.join(canon)} once")
        orders[t] = o
    return orders


# --- key mapping ---------------------------------------------------------------------------
def _meta_model(layout: OfficialLayout):
    from ..models import create_model

    with torch.device("meta"):
        return create_model("densemtl", layout.tasks, layout.num_classes, layout.backbone, **layout.model_options())


def _authors_key(key: str, layout: OfficialLayout) -> str:
    """densemtl state-dict key -> the authors' key."""
    p = key.split(".")
    if key.startswith("encoder.body."):
        return "backbone.encoder." + key[len("encoder.body."):]
    if p[0] == "decoders":
        t, mod = p[1], p[2]
        if mod == "aspp":
            return f"heads.{t}.decoder.0.{'.'.join(p[3:])}"
        if mod == "heads":
            return f"heads.{t}.decoder.{FIRST_SIDE + layout.supervised_scales.index(int(p[3]))}.{'.'.join(p[4:])}"
        if mod in DECODER_BLOCKS:
            return f"heads.{t}.decoder.{DECODER_BLOCKS[mod]}.block.0.{'.'.join(p[3:])}"
    if p[0] == "exchanges":
        s = p[1]
        if p[2] == "fuse":
            return f"m.{p[3]}.{s}.post.{'.'.join(p[4:])}"
        if p[2] == "xtam":
            t, src, rest = p[3], p[4], ".".join(p[5:])
            for theirs, ours in XTAM_PARTS:
                if rest == ours or (ours.endswith(".") and rest.startswith(ours)):
                    return f"m.{t}.{s}.{theirs.format(S=src)}{rest[len(ours):]}"
    raise ConversionError(f"the densemtl key {key} has no counterpart in the authors' format")


def _is_post(our_key: str) -> bool:
    p = our_key.split(".")
    return p[0] == "exchanges" and p[2] == "fuse" and p[4:] == ["0", "weight"]


def _reorder_post(w: torch.Tensor, target: str, order, layout: OfficialLayout, scale: int, to_canonical: bool) -> torch.Tensor:
    """Permute the source blocks of a fusion conv weight ``(C, n C, 1, 1)`` between the
    authors' ``order`` and the canonical order (concat fusion: the target's own block first)."""
    from ..models.decoder import DECODER_WIDTHS

    canon = tuple(j for j in layout.tasks if j != target)
    order = tuple(order)
    if order == canon:
        return w
    off = 1 if layout.fusion == "concat" else 0
    blocks = list(w.split(DECODER_WIDTHS[scale], dim=1))
    src = blocks[off:]
    new = [src[order.index(j)] for j in canon] if to_canonical else [src[canon.index(j)] for j in order]
    return torch.cat(blocks[:off] + new, 1)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal tensors (shared memory, as in a real state dict, short-cuts the comparison)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.data_ptr() == b.data_ptr() and a.stride() == b.stride():
        return True
    return torch.equal(a, b)


def _alias_target(key: str) -> str | None:
    p = key.split(".")
    if len(p) < 4 or p[2] not in ALIASES:
        return None
    return f"{ALIASES[p[2]]}.{p[1]}.{'.'.join(p[3:])}"


def _alias_of(authors_key: str) -> str:
    fam, t, rest = authors_key.split(".", 2)
    return f"params.{t}.{'0' if fam == 'heads' else '1'}.{rest}"


# --- conversion ----------------------------------------------------------------------------
def from_official(sd: Mapping[str, torch.Tensor], *, tasks=None, num_classes: int | None = None,
                  source_order=None, fusion: str | None = None) -> tuple[dict, dict, dict]:
    """Authors' state dict -> ``(state_dict, model_config, info)`` of a ``densemtl`` model.

    Every tensor of ``sd`` is used exactly once (``params.*`` aliases must equal their
    ``heads.*`` / ``m.*`` originals) and every parameter and buffer of the model is filled;
    otherwise :class:`ConversionError` lists the keys. ``source_order``: see
    :func:`parse_source_order`. ``info`` holds the inferred layout and the source orders.
    The returned tensors share memory with ``sd`` except reordered fusion weights.
    """
    layout = infer_layout(sd, tasks, num_classes, fusion)
    orders = parse_source_order(source_order, layout.tasks)
    model = _meta_model(layout)
    own = model.state_dict()
    kmap = {k: _authors_key(k, layout) for k in own}
    mapped = set(kmap.values())
    aliases = {k: _alias_target(k) for k in sd if k.startswith("params.")}
    problems = []
    leftover = [k for k in sd if k not in mapped and k not in aliases]
    leftover += [k for k, a in aliases.items() if a not in mapped]
    if leftover:
        problems.append(f"{len(leftover)} key(s) of the file have no place in the model (unknown architecture or "
                        f"options):{_listing(leftover)}")
    missing = [a for a in kmap.values() if a not in sd]
    if missing:
        problems.append(f"{len(missing)} key(s) the model needs are missing from the file:{_listing(missing)}")
    shapes = [f"{a}: file {tuple(sd[a].shape)}, model {tuple(own[k].shape)}" for k, a in kmap.items()
              if a in sd and tuple(sd[a].shape) != tuple(own[k].shape)]
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es):{_listing(shapes)}")
    if layout.aliases:
        expected = {_alias_of(a) for a in mapped if a.startswith(("heads.", "m."))}
        gone = sorted(expected - set(aliases))
        if gone:
            problems.append(f"{len(gone)} params.* alias key(s) are missing (the file has the params.* family, "
                            f"so it must mirror heads.* and m.* entirely):{_listing(gone)}")
        differ = [k for k, a in aliases.items() if a in mapped and a in sd and not _same(sd[k], sd[a])]
        if differ:
            problems.append(f"{len(differ)} params.* alias(es) differ from their heads.*/m.* original:{_listing(differ)}")
    if problems:
        raise ConversionError("the file does not match a densemtl 'densemtl' model "
                              f"({layout_summary(layout)}):\n  " + "\n  ".join(problems))
    state = {}
    for k, a in kmap.items():
        v = sd[a]
        if _is_post(k):
            t = k.split(".")[3]
            v = _reorder_post(v, t, orders[t], layout, int(k.split(".")[1]), to_canonical=True)
        state[k] = v
    info = {"layout": {**asdict(layout), "tasks": list(layout.tasks), "supervised_scales": list(layout.supervised_scales),
                       "mteb_scales": list(layout.mteb_scales)},
            "source_order": {t: list(o) for t, o in orders.items()}}
    return state, model.model_config, info


def export_official(state_dict: Mapping[str, torch.Tensor], model_config: Mapping, *, source_order=None,
                    aliases: bool = True) -> dict[str, torch.Tensor]:
    """densemtl ``densemtl`` state dict -> the authors' state dict (exact inverse of
    :func:`from_official`). ``aliases`` adds the ``params.*`` family (same tensors)."""
    from ..tasks import parse_task_set

    if model_config.get("name") != "densemtl":
        raise ConversionError(f"only 'densemtl' models have an authors' format, got '{model_config.get('name')}'")
    o = dict(model_config.get("options", {}))
    need = {"input_norm": INPUT_NORM, "attention": "spatial", "kv_downscale": "s"}
    bad = {k: o.get(k) for k, v in need.items() if o.get(k) != v}
    if bad:
        raise ConversionError(f"the authors' network computes {need}; this model has {bad}, so its outputs would change")
    if model_config.get("backbone") not in RESNETS.values():
        raise ConversionError(f"the authors' encoder is a torchvision ResNet ({', '.join(RESNETS.values())}), "
                              f"this model has backbone '{model_config.get('backbone')}'")
    tasks = parse_task_set(model_config["tasks"])
    layout = OfficialLayout(
        tasks=tasks, num_classes=model_config.get("num_classes"), backbone=model_config["backbone"],
        supervised_scales=tuple(sorted(int(s) for s in o.get("supervised_scales", (0, 1)))),
        mteb_scales=tuple(sorted(int(s) for s in o.get("mteb_scales", (1,)))), fusion=o.get("fusion", "add"),
        self_attention=bool(o.get("self_attention", True)), correlation_attention=bool(o.get("correlation_attention", True)),
        alpha=bool(o.get("alpha", True)), aliases=aliases,
    )
    orders = parse_source_order(source_order, tasks)
    own = _meta_model(layout).state_dict()
    missing, extra = [k for k in own if k not in state_dict], [k for k in state_dict if k not in own]
    if missing or extra:
        raise ConversionError("the state dict does not match its model_config:"
                              + (f"\n  missing{_listing(missing)}" if missing else "")
                              + (f"\n  unexpected{_listing(extra)}" if extra else ""))
    out = {}
    for k in own:
        v = state_dict[k]
        if _is_post(k):
            t = k.split(".")[3]
            v = _reorder_post(v, t, orders[t], layout, int(k.split(".")[1]), to_canonical=False)
        out[_authors_key(k, layout)] = v
    rank = {"backbone": 0, "heads": 1, "m": 2}
    keys = sorted(out, key=lambda a: (rank[a.split(".")[0]], 0 if a.startswith("backbone.") else tasks.index(a.split(".")[1])))
    out = {a: out[a] for a in keys}
    if aliases:
        out.update({_alias_of(a): out[a] for a in keys if a.startswith(("heads.", "m."))})
    return out


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


# --- source order detection ----------------------------------------------------------------
def load_detection_batches(dataset: str, root, tasks, split: str = "val", num_images: int = 4) -> list[dict]:
    """The first ``num_images`` labelled samples of a dataset split, as batches of one."""
    from ..config import config_from_dict
    from ..data import collate
    from ..engine import builders
    from ..tasks import task_set_name

    cfg = config_from_dict({"tasks": task_set_name(tasks), "data": {
        "dataset": dataset, "root": str(root), "limit_train": int(num_images), "limit_val": int(num_images)}})
    ds = builders.build_dataset(cfg, split, train=False)
    return [collate([ds[i]]) for i in range(len(ds))]


@torch.no_grad()
def detect_order(sd: Mapping[str, torch.Tensor], batches: list[dict], *, tasks=None, num_classes: int | None = None,
                 fusion: str | None = None, device: str | torch.device | None = None,
                 log: Callable[[str], None] = print) -> tuple[dict[str, tuple[str, ...]], list[dict]]:
    """Find the source order of each target's fusion layer from labelled images.

    ``batches``: ``[{"image": (B, 3, H, W), "labels": {task: ...}}]`` (see
    :func:`load_detection_batches`). Each candidate order is loaded and the unweighted loss of
    every task at the evaluation scale is averaged over the batches; the order with the lowest
    loss is kept. With mTEB at one scale, task ``T``'s output depends only on its own fusion
    layer, so all targets are tried at once (``(T-1)!`` runs); with several scales, one target
    at a time (coordinate descent on the sum of losses relative to the canonical orders).
    Returns ``({target: order}, rows)`` with one row ``{"orders", "losses"}`` per run.
    """
    from ..losses import resize_prediction
    from ..models import model_from_config
    from ..tasks import get_task

    state, mc, info = from_official(sd, tasks=tasks, num_classes=num_classes, fusion=fusion)
    layout = infer_layout(sd, tasks, num_classes, fusion)
    canon = parse_source_order(None, layout.tasks)
    if len(layout.tasks) < 3 or not layout.mteb_scales:
        log("source order: one source per target, nothing to detect")
        return canon, []
    if not batches:
        raise ConversionError("source order detection needs at least one labelled image")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model_from_config(mc)
    model.load_state_dict(state)
    model.eval().to(device)
    posts = {(s, t): sd[f"m.{t}.{s}.post.0.weight"] for s in layout.mteb_scales for t in layout.tasks}
    perms = {t: list(itertools.permutations(canon[t])) for t in layout.tasks}
    rows: list[dict] = []

    def run(orders) -> dict[str, float]:
        for (s, t), w in posts.items():
            model.exchanges[str(s)].fuse[t][0].weight.copy_(_reorder_post(w, t, orders[t], layout, s, True))
        tot = {t: 0.0 for t in layout.tasks}
        for b in batches:
            out = model(b["image"].to(device))
            for t in layout.tasks:
                label = b["labels"][t].to(device)
                pred = resize_prediction(out[t][model.eval_scale], label.shape[-2:]).float()
                tot[t] += float(get_task(t).loss(pred, label))
        losses = {t: v / len(batches) for t, v in tot.items()}
        rows.append({"orders": {t: list(o) for t, o in orders.items()}, "losses": losses})
        return losses

    if len(layout.mteb_scales) == 1:
        n = len(perms[layout.tasks[0]])
        results = [run({t: perms[t][k] for t in layout.tasks}) for k in range(n)]
        best = {t: perms[t][min(range(n), key=lambda k: results[k][t])] for t in layout.tasks}
        log(f"source order detection on {len(batches)} image(s), loss of each target task at scale "
            f"{model.eval_scale} (lower is better):")
        for t in layout.tasks:
            for k in range(n):
                mark = "  <- kept" if perms[t][k] == best[t] else ""
                log(f"  {t} <- {','.join(perms[t][k])}: {results[k][t]:.6g}{mark}")
    else:
        ref = run(canon)

        def score(losses):
            return sum(losses[t] / max(ref[t], 1e-12) for t in layout.tasks)

        best, best_score = dict(canon), score(ref)
        log(f"source order detection on {len(batches)} image(s), mTEB at scales {list(layout.mteb_scales)}: "
            "sum over tasks of loss / loss with canonical orders (lower is better):")
        log(f"  canonical orders: {best_score:.6g}")
        for _ in range(3):
            changed = False
            for t in layout.tasks:
                for o in perms[t]:
                    if o == best[t]:
                        continue
                    cand = {**best, t: o}
                    sc = score(run(cand))
                    others = ", ".join(u + " <- " + ",".join(best[u]) for u in layout.tasks if u != t)
                    log(f"  {t} <- {','.join(o)} (others: {others}): {sc:.6g}")
                    if sc < best_score:
                        best, best_score, changed = cand, sc, True
            if not changed:
                break
        log("  kept: " + "; ".join(f"{t} <- {','.join(best[t])}" for t in layout.tasks))
    return best, rows


# --- files ---------------------------------------------------------------------------------
def guess_dataset(path) -> str | None:
    """Dataset of a released file from its name (``sy_`` / ``vk_`` / ``cs_densemtl_*.pkl``)."""
    m = re.match(r"(sy|vk|cs)_densemtl_", Path(path).name)
    return RELEASED_DATASETS[m.group(1)] if m else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_official_file(path, out, *, tasks=None, num_classes: int | None = None, source_order=None,
                          fusion: str | None = None, dataset: str | None = None, detect_root=None,
                          detect_split: str = "val", detect_images: int = 4,
                          log: Callable[[str], None] = print) -> dict:
    """Convert an authors' file into a densemtl checkpoint at ``out``; returns the checkpoint.

    ``dataset`` (optional) is recorded as the checkpoint's config (``densemtl eval`` / ``predict``
    then know the dataset and its input size). ``detect_root``: find the source orders on
    ``detect_images`` images of that dataset root (needs ``dataset``).
    """
    from ..engine.checkpoint import save_checkpoint
    from ..tasks import task_set_name

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
            "format": FORMAT_NAME, "file": path.name, "sha256": _sha256(path), **info,
            "source_order_origin": origin, "num_tensors": len(sd),
        },
    }
    if dataset:
        from ..config import config_from_dict

        ckpt["config"] = {"tasks": task_set_name(layout.tasks), "data": {"dataset": dataset},
                          "model": {"name": mc["name"], "backbone": mc["backbone"], "pretrained": False,
                                    "options": dict(mc["options"])}}
        config_from_dict(ckpt["config"])  # fail now rather than in `densemtl eval`
    save_checkpoint(ckpt, out)
    opts = ", ".join(f"{k}={v}" for k, v in mc["options"].items())
    log(f"wrote {out}: model {mc['name']} ({mc['backbone']}, tasks {','.join(mc['tasks'])}"
        + (f", {mc['num_classes']} classes" if mc.get("num_classes") else "") + f"), options {opts}")
    return ckpt
