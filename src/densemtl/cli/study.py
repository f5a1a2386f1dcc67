"""``densemtl study CONFIG``: run a multi-seed study (resumable; each finished run appends its
row to the study's CSV) and, with ``--report``, write its statistics, learning-curve plots and
docs/results.md section. See docs/study.md."""

from __future__ import annotations

import argparse
import re

from .args import out_file


def shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise argparse.ArgumentTypeError(f"expected I/N with 1 <= I <= N (this machine's share of the runs), e.g. 1/2; got '{text}'")
    return int(m.group(1)), int(m.group(2))


def positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return int(text)


def subset(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got '{text}'")
    return items


def restrict(spec, args) -> None:
    """Narrow the plan to the ``--seeds`` / ``--settings`` / ``--task-sets`` given (a run's
    row and config hash do not depend on the rest of the plan, so the rows are the same)."""
    for option, attr in (("--seeds", "seeds"), ("--settings", "settings"), ("--task-sets", "task_sets")):
        wanted = getattr(args, attr)
        if wanted is None:
            continue
        have = [str(v) for v in getattr(spec, attr)]
        bad = [w for w in wanted if w not in have]
        if bad:
            raise ValueError(f"{option}: {bad[0]!r} is not in the study's {attr} ({', '.join(have)})")
        setattr(spec, attr, [v for v in getattr(spec, attr) if str(v) in wanted])


def add_parser(sub) -> None:
    p = sub.add_parser("study", help="multi-seed study on the procedural data: resumable runs, CSV, statistics, plots")
    p.add_argument("config", help="study config (configs/study/*.yaml)")
    p.add_argument("--report", action="store_true", help="do not train: statistics, plots and the docs/results.md section")
    p.add_argument("--results-md", default="docs/results.md", type=out_file, help="file whose study section --report writes")
    p.add_argument("--dry-run", action="store_true", help="list the runs still to do, with their count of images, and exit")
    p.add_argument("--shard", type=shard, default=(1, 1), metavar="I/N",
                   help="train only every N-th planned run from the I-th (split the work over N machines)")
    p.add_argument("--max-runs", type=positive, default=None, help="stop after this many finished runs")
    p.add_argument("--seeds", type=subset, default=None, metavar="A,B",
                   help="train only these seeds of the study (their rows are the full study's rows)")
    p.add_argument("--settings", type=subset, default=None, metavar="A,B", help="train only these settings (pretrained, scratch)")
    p.add_argument("--task-sets", type=subset, default=None, metavar="A,B", help="train only these task sets (e.g. SD)")
    p.add_argument("--threads", type=positive, default=None, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..study.report import report
    from ..study.runner import pending_runs, run_study
    from ..study.spec import load_study

    spec = load_study(args.config)
    restrict(spec, args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.report:
        print(report(spec, args.results_md))
        return 0
    if args.dry_run:
        todo = pending_runs(spec, args.shard)
        per = spec.iterations() * spec.batch_size()
        print(f"[study] {spec.name}: {len(todo)} of {len(spec.plan())} runs to do, {per} images each; results: {spec.csv}")
        for r in todo:
            print(f"  {r.name}  ({spec.methods[r.method]['model']}, config {spec.config_hash(r)})")
        return 0
    run_study(spec, args.shard, args.max_runs)
    left = len(pending_runs(spec))
    print(f"[study] {left} run(s) of {spec.name} left" + ("; make the report with --report" if not left else
                                                          "; run the same command again to continue"))
    return 0
