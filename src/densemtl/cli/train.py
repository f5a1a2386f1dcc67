"""``densemtl train CONFIG [key=value ...]`` and ``--resume RUN_DIR``."""

from __future__ import annotations

import json
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model from a config (torchrun for several GPUs)",
                       description="Train from a YAML config; any key can be overridden with key=value "
                                   "(e.g. optim.lr_decoder=1e-4 model.options.mteb_scales=[1,2]).")
    p.add_argument("config", nargs="?", help="YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run exactly where its last checkpoint stopped")
    p.add_argument("--force", action="store_true", help="train into an existing run directory anyway")
    p.add_argument("--init-from", metavar="CHECKPOINT",
                   help="start from these weights (e.g. a converted released checkpoint): sets train.init_from, "
                        "adopts the model options the checkpoint records (e.g. input_norm=authors) and skips "
                        "downloading ImageNet weights")
    p.set_defaults(func=run)


def adopt_checkpoint_options(cfg, path) -> None:
    """``--init-from``: the checkpoint's architecture options win over the config's."""
    from omegaconf import OmegaConf

    from ..engine import load_checkpoint

    ck = load_checkpoint(path)
    mc = ck.get("model_config") or {}
    cfg.train.init_from = ck["path"]
    if mc.get("name") != cfg.model.name or cfg.train.init_parts is not None:
        return  # another architecture or a partial init: the config defines the model (checked on load)
    saved = mc.get("options") or {}
    current = OmegaConf.to_container(cfg.model.options, resolve=True) or {}
    changed = {k: v for k, v in saved.items() if current.get(k) != v}
    for k, v in changed.items():
        print(f"--init-from: model.options.{k}={v!r} (recorded in {ck['path']})")
    cfg.model.options = {**current, **saved}
    cfg.model.pretrained = False


def run(args) -> int:
    from ..config import load_config
    from ..engine import Trainer, run_dir_for
    from ..engine.rundir import discard_if_unstarted

    overrides = list(args.overrides)
    if args.config and "=" in args.config:  # `densemtl train --resume DIR key=value`
        overrides.insert(0, args.config)
        args.config = None
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"{run_dir}/config.yaml not found: --resume takes a run directory written by `densemtl train`")
        if not (run_dir / "checkpoints" / "last.pt").is_file():
            raise FileNotFoundError(f"{run_dir}/checkpoints/last.pt not found: nothing to resume (start it again without --resume)")
        cfg = load_config(run_dir / "config.yaml", overrides)
        trainer = Trainer(cfg, run_dir=run_dir, resume=True)
    else:
        if not args.config:
            raise ValueError("give a config file (see configs/), or --resume RUN_DIR")
        cfg = load_config(args.config, overrides)
        if args.init_from:
            adopt_checkpoint_options(cfg, args.init_from)
        run_dir = run_dir_for(cfg)
        if (run_dir / "checkpoints" / "last.pt").is_file() and not args.force:
            raise FileExistsError(f"{run_dir} already holds a run: continue it with `densemtl train --resume {run_dir}`, "
                                  f"choose another run_name=..., or pass --force")
        if run_dir.exists() and not run_dir.is_dir():
            raise FileExistsError(f"{run_dir} is a file; the run directory (output_dir/experiment/run_name) must be a folder")
        with discard_if_unstarted(run_dir):
            trainer = Trainer(cfg, run_dir=run_dir)
            best = trainer.train()
        return _report(trainer, best)
    best = trainer.train()
    return _report(trainer, best)


def _report(trainer, best) -> int:
    from ..engine.distributed import is_main

    if is_main():
        print(f"run directory: {trainer.run_dir}")
        if best:
            print(f"best (iteration {best['iter']}): " + json.dumps(best["metrics"], default=lambda v: round(v, 4)))
    return 0
