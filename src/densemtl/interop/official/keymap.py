"""Key correspondence between the authors' state dict and densemtl's ``densemtl`` model, the
``params.*`` aliases, and the source order of the fusion (``post``) layers.

Key correspondence (T target task, S source task, s decoder scale):

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

The authors' ``post`` layer concatenates the sources in the iteration order of a Python set
(unknown for 3+ tasks); densemtl uses the canonical task order, so the ``post`` weight's input
blocks are permuted from the given (or detected) order.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch

from ...models.decoder import DECODER_WIDTHS
from ...tasks import get_task, list_tasks
from .errors import ConversionError
from .layout import FIRST_SIDE, OfficialLayout

DECODER_BLOCKS = {"fuse4": 2, "pre3": 3, "fuse3": 5, "pre2": 6, "fuse2": 8, "pre1": 9, "fuse1": 11, "pre0": 12, "fuse0": 13}
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
ALIASES = {"0": "heads", "1": "m"}  # params.T.<i>.X is the same tensor as <family>.T.X


def parse_source_order(spec, tasks: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Source order of every target's fusion layer.

    ``spec``: ``None``, ``{target: [sources]}`` or strings ``"T=S1,S2"`` (names or letters, e.g.
    ``"S=N,D"``). Targets not given get the canonical order (semseg, depth, normals, edges).
    """
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


def authors_key(key: str, layout: OfficialLayout) -> str:
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


def is_post(our_key: str) -> bool:
    p = our_key.split(".")
    return p[0] == "exchanges" and p[2] == "fuse" and p[4:] == ["0", "weight"]


def reorder_post(w: torch.Tensor, target: str, order, layout: OfficialLayout, scale: int, to_canonical: bool) -> torch.Tensor:
    """Permute the source blocks of a fusion conv weight ``(C, n C, 1, 1)`` between the
    authors' ``order`` and the canonical order (concat fusion: the target's own block first)."""
    canon = tuple(j for j in layout.tasks if j != target)
    order = tuple(order)
    if order == canon:
        return w
    off = 1 if layout.fusion == "concat" else 0
    blocks = list(w.split(DECODER_WIDTHS[scale], dim=1))
    src = blocks[off:]
    new = [src[order.index(j)] for j in canon] if to_canonical else [src[canon.index(j)] for j in order]
    return torch.cat(blocks[:off] + new, 1)


def alias_target(key: str) -> str | None:
    p = key.split(".")
    if len(p) < 4 or p[2] not in ALIASES:
        return None
    return f"{ALIASES[p[2]]}.{p[1]}.{'.'.join(p[3:])}"


def alias_of(authors_key: str) -> str:
    fam, t, rest = authors_key.split(".", 2)
    return f"params.{t}.{'0' if fam == 'heads' else '1'}.{rest}"
