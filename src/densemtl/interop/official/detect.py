"""Source-order detection: which order of sources each fusion layer of an authors' file expects,
found by the loss on labelled images of a dataset (the only part of the converter that needs the
data and engine layers)."""

from __future__ import annotations

import itertools
from typing import Callable, Mapping

import torch

from ...config import config_from_dict
from ...data import collate
from ...engine import builders
from ...losses import resize_prediction
from ...models import model_from_config
from ...tasks import get_task, task_set_name
from .convert import from_official
from .errors import ConversionError
from .keymap import parse_source_order, reorder_post
from .layout import infer_layout


def load_detection_batches(dataset: str, root, tasks, split: str = "val", num_images: int = 4) -> list[dict]:
    """The first ``num_images`` labelled samples of a dataset split, as batches of one."""
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
            model.exchanges[str(s)].fuse[t][0].weight.copy_(reorder_post(w, t, orders[t], layout, s, True))
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
