"""Conversion of state dicts both ways: authors' -> densemtl (:func:`from_official`) and its
exact inverse (:func:`export_official`)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Mapping

import torch

from ...models import create_model
from ...tasks import parse_task_set
from .errors import ConversionError, listing
from .keymap import alias_of, alias_target, authors_key, is_post, parse_source_order, reorder_post
from .layout import INPUT_NORM, RESNETS, OfficialLayout, infer_layout, layout_summary


def _meta_model(layout: OfficialLayout):
    with torch.device("meta"):
        return create_model("densemtl", layout.tasks, layout.num_classes, layout.backbone, **layout.model_options())


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal tensors (shared memory, as in a real state dict, short-cuts the comparison)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.data_ptr() == b.data_ptr() and a.stride() == b.stride():
        return True
    return torch.equal(a, b)


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
    kmap = {k: authors_key(k, layout) for k in own}
    mapped = set(kmap.values())
    aliases = {k: alias_target(k) for k in sd if k.startswith("params.")}
    problems = []
    leftover = [k for k in sd if k not in mapped and k not in aliases]
    leftover += [k for k, a in aliases.items() if a not in mapped]
    if leftover:
        problems.append(f"{len(leftover)} key(s) of the file have no place in the model (unknown architecture or "
                        f"options):{listing(leftover)}")
    missing = [a for a in kmap.values() if a not in sd]
    if missing:
        problems.append(f"{len(missing)} key(s) the model needs are missing from the file:{listing(missing)}")
    shapes = [f"{a}: file {tuple(sd[a].shape)}, model {tuple(own[k].shape)}" for k, a in kmap.items()
              if a in sd and tuple(sd[a].shape) != tuple(own[k].shape)]
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es):{listing(shapes)}")
    if layout.aliases:
        expected = {alias_of(a) for a in mapped if a.startswith(("heads.", "m."))}
        gone = sorted(expected - set(aliases))
        if gone:
            problems.append(f"{len(gone)} params.* alias key(s) are missing (the file has the params.* family, "
                            f"so it must mirror heads.* and m.* entirely):{listing(gone)}")
        differ = [k for k, a in aliases.items() if a in mapped and a in sd and not _same(sd[k], sd[a])]
        if differ:
            problems.append(f"{len(differ)} params.* alias(es) differ from their heads.*/m.* original:{listing(differ)}")
    if problems:
        raise ConversionError("the file does not match a densemtl 'densemtl' model "
                              f"({layout_summary(layout)}):\n  " + "\n  ".join(problems))
    state = {}
    for k, a in kmap.items():
        v = sd[a]
        if is_post(k):
            t = k.split(".")[3]
            v = reorder_post(v, t, orders[t], layout, int(k.split(".")[1]), to_canonical=True)
        state[k] = v
    info = {"layout": {**asdict(layout), "tasks": list(layout.tasks), "supervised_scales": list(layout.supervised_scales),
                       "mteb_scales": list(layout.mteb_scales)},
            "source_order": {t: list(o) for t, o in orders.items()}}
    return state, model.model_config, info


def export_official(state_dict: Mapping[str, torch.Tensor], model_config: Mapping, *, source_order=None,
                    aliases: bool = True) -> dict[str, torch.Tensor]:
    """densemtl ``densemtl`` state dict -> the authors' state dict (exact inverse of
    :func:`from_official`). ``aliases`` adds the ``params.*`` family (same tensors)."""
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
                              + (f"\n  missing{listing(missing)}" if missing else "")
                              + (f"\n  unexpected{listing(extra)}" if extra else ""))
    out = {}
    for k in own:
        v = state_dict[k]
        if is_post(k):
            t = k.split(".")[3]
            v = reorder_post(v, t, orders[t], layout, int(k.split(".")[1]), to_canonical=False)
        out[authors_key(k, layout)] = v
    rank = {"backbone": 0, "heads": 1, "m": 2}
    keys = sorted(out, key=lambda a: (rank[a.split(".")[0]], 0 if a.startswith("backbone.") else tasks.index(a.split(".")[1])))
    out = {a: out[a] for a in keys}
    if aliases:
        out.update({alias_of(a): out[a] for a in keys if a.startswith(("heads.", "m."))})
    return out
