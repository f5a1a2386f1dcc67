"""Build model, datasets, loaders, optimiser, scheduler and weighting from a config."""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from ..config import ConfigError
from ..data import collate, create_dataset, get_dataset_class
from ..losses import create_weighting
from ..models import create_model, model_options
from ..tasks import parse_task_set
from .distributed import rank, world_size
from .sampler import ResumableSampler
from .signals import worker_init


def _plain(x):
    return OmegaConf.to_container(x, resolve=True) if isinstance(x, DictConfig) or OmegaConf.is_list(x) else x


def dataset_info(cfg: DictConfig) -> dict:
    """Class count and depth range without touching the files."""
    cls = get_dataset_class(cfg.data.dataset)
    labels = cls.resolve_label_set((_plain(cfg.data.options) or {}).get("label_set"))
    num_classes, names = (labels.num_classes, labels.names) if labels is not None else (cls.num_classes, cls.class_names)
    return {"num_classes": num_classes, "class_names": list(names), "depth_range": list(cls.depth_range)}


def build_dataset(cfg: DictConfig, split: str, train: bool, extra_protocols=()):
    """The configured dataset's ``split`` with labels of ``cfg.protocol`` (and of
    ``extra_protocols``, for evaluation)."""
    if not cfg.data.root:
        raise ValueError(f"data.root is not set: give the {cfg.data.dataset} dataset root, e.g. data.root=/path/to/{cfg.data.dataset}")
    opts = dict(_plain(cfg.data.options) or {})
    if cfg.selfsup.enabled and train:
        opts["sequence"] = True
    if not train:  # evaluation always uses every label
        opts.pop("label_subset", None)
        opts.pop("label_subset_others", None)
    limit = cfg.data.limit_train if train else cfg.data.limit_val
    return create_dataset(
        cfg.data.dataset, cfg.data.root, split, parse_task_set(cfg.tasks),
        size=_plain(cfg.data.size), augment=bool(cfg.data.augment) if train else False,
        scale_crop=_plain(cfg.data.scale_crop) if train else None, crop=_plain(cfg.data.crop) if train else None,
        seed=int(cfg.seed), limit=limit, protocol=cfg.protocol, extra_protocols=tuple(extra_protocols), **opts,
    )


def target_config(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` whose ``data`` section describes the UDA target domain
    (``uda.target``), for :func:`build_dataset` and :func:`dataset_info`."""
    t = cfg.uda.target
    if not t.dataset:
        raise ValueError("uda.target.dataset is not set")
    out = cfg.copy()
    data = out.data
    data.dataset, data.root, data.size, data.crop, data.augment = t.dataset, t.root, t.size, t.crop, t.augment
    data.options, data.train_split, data.val_split = t.options, t.train_split, t.val_split
    data.limit_train, data.limit_val, data.scale_crop = t.limit_train, t.limit_val, None
    if not data.root:
        raise ValueError(f"uda.target.root is not set: give the {t.dataset} dataset root")
    return out


def build_loader(ds, batch_size: int, train: bool, seed: int, num_workers: int):
    sampler = ResumableSampler(len(ds), seed=seed, shuffle=train, rank=rank(), world=world_size(), pad=train)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers, collate_fn=collate,
        drop_last=train, pin_memory=torch.cuda.is_available(), persistent_workers=False, worker_init_fn=worker_init,
        # its own generator: creating an iterator must not consume the global RNG (exact resume)
        generator=torch.Generator().manual_seed(seed),
    )
    return loader, sampler


def build_train_data(cfg: DictConfig):
    """``(dataset, loader, sampler, batches per epoch)`` of the training split."""
    ds = build_dataset(cfg, cfg.data.train_split, train=True)
    loader, sampler = build_loader(ds, int(cfg.data.batch_size), True, int(cfg.seed), int(cfg.data.num_workers))
    per_epoch = sampler.per_epoch() // int(cfg.data.batch_size)
    if per_epoch == 0:
        raise ValueError(f"the training split has {len(ds)} samples, fewer than data.batch_size={cfg.data.batch_size} "
                         f"x {world_size()} processes")
    return ds, loader, sampler, per_epoch


def build_eval_data(cfg: DictConfig, train_set):
    """``(dataset, loader)`` evaluated during training: the val split, or the UDA target's val
    split (with the same classes as the source); ``(None, None)`` when ``train.eval_every`` is 0."""
    if not cfg.train.eval_every:
        return None, None
    vcfg = target_config(cfg) if cfg.uda.target.dataset else cfg
    ds = build_dataset(vcfg, vcfg.data.val_split, train=False)
    if vcfg is not cfg and "semseg" in parse_task_set(cfg.tasks) and ds.num_classes != train_set.num_classes:
        raise ValueError(
            f"source {cfg.data.dataset} has {train_set.num_classes} classes but target {vcfg.data.dataset} "
            f"has {ds.num_classes}: use a common label set (data.options.label_set and "
            f"uda.target.options.label_set, e.g. uda8 for VKITTI2 -> Cityscapes)")
    loader, _ = build_loader(ds, int(cfg.data.val_batch_size), False, 0, int(cfg.data.num_workers))
    return ds, loader


def build_model(cfg: DictConfig, num_classes: int | None):
    """The configured model; an option value the model refuses (``fusion must be one of ...``)
    is a :class:`ConfigError` naming its key (``model.options.fusion``)."""
    tasks = parse_task_set(cfg.tasks)
    pretrained = cfg.model.pretrained
    try:
        model = create_model(cfg.model.name, tasks, num_classes=num_classes if "semseg" in tasks else None,
                             backbone=cfg.model.backbone, pretrained=pretrained if pretrained else False,
                             **(_plain(cfg.model.options) or {}))
    except ValueError as e:
        opt = next((k for k in model_options(cfg.model.name) if str(e).startswith(f"{k} ")), None)
        if opt is None:
            raise
        raise ConfigError(f"model.options.{e}") from None
    select = cfg.train.select_scale
    if select is not None and select not in model.supervised_scales:
        raise ConfigError(f"train.select_scale: model {cfg.model.name} has the output scales "
                          f"{list(model.supervised_scales)}; got {select}")
    return model


def build_weighting(cfg: DictConfig):
    return create_weighting(cfg.loss.weighting, parse_task_set(cfg.tasks), **(_plain(cfg.loss.options) or {}))


def build_optimizer(cfg: DictConfig, model, weighting, extra_groups=(), fused: bool = False):
    """Adam/SGD with parameter groups ``backbone`` (optim.lr_backbone) and ``decoders``
    (optim.lr_decoder: heads, exchange blocks, loss weights), plus ``extra_groups``: ``(name,
    module, lr)`` for networks trained alongside (e.g. the pose network; lr None = lr_decoder).
    ``fused``: PyTorch's fused kernel (one kernel for all parameters; ``FastPath.fused``)."""
    enc = [p for p in model.encoder.parameters() if p.requires_grad]
    enc_ids = {id(p) for p in enc}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in enc_ids]
    rest += [p for p in weighting.parameters() if p.requires_grad]
    o = cfg.optim
    groups = [{"params": enc, "lr": float(o.lr_backbone), "name": "backbone"},
              {"params": rest, "lr": float(o.lr_decoder), "name": "decoders"}]
    for name, module, lr in extra_groups:
        groups.append({"params": [p for p in module.parameters() if p.requires_grad],
                       "lr": float(o.lr_decoder if lr is None else lr), "name": name})
    kernel = {"fused": True} if fused else {}
    if o.name == "adam":
        return torch.optim.Adam(groups, betas=tuple(o.betas), weight_decay=float(o.weight_decay), **kernel)
    return torch.optim.SGD(groups, momentum=float(o.momentum), weight_decay=float(o.weight_decay), **kernel)


def build_scheduler(cfg: DictConfig, optimizer):
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.schedule.milestones), gamma=float(cfg.schedule.gamma))
