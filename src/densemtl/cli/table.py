"""``densemtl table RUN_DIR ...``: the paper's table layout, mean +- std over seeds, Delta, the
partial Deltas of Tables 1-2 and the exchange-block size ('Param.') of Table 3."""

from __future__ import annotations

from pathlib import Path

from .args import out_file


def add_parser(sub) -> None:
    p = sub.add_parser("table", help="compare runs: mean +- std across seeds and Delta vs single-task runs")
    p.add_argument("runs", nargs="+", help="run directories (or folders containing them)")
    p.add_argument("--use", choices=["last", "best"], default="last", help="final or best evaluation of each run")
    p.add_argument("--layout", choices=["auto", "tasks", "classes"], default="auto",
                   help="tasks: one column per task; classes: per-class IoU columns (Table 5); auto: classes for "
                        "self-supervised depth runs, tasks otherwise")
    p.add_argument("--scale", type=int, default=0, choices=range(5), metavar="S",
                   help="show the metrics of output scale S (default 0, full resolution; a run without that output "
                        "shows its evaluation scale, marked in its label)")
    p.add_argument("--csv", metavar="FILE", type=out_file, help="also write CSV")
    p.add_argument("--markdown", metavar="FILE", type=out_file, help="also write markdown")
    p.set_defaults(func=run)


def find_runs(paths) -> list[Path]:
    found = []
    for p in map(Path, paths):
        if (p / "config.yaml").is_file():
            found.append(p)
        elif p.is_dir():
            found += sorted(c.parent for c in p.rglob("config.yaml") if (c.parent / "metrics.jsonl").is_file())
        else:
            raise FileNotFoundError(f"{p}: no such run directory")
    if not found:
        raise FileNotFoundError(f"no run directories (with config.yaml and metrics.jsonl) under {', '.join(map(str, paths))}")
    return found


def run(args) -> int:
    from ..engine.report import build_table, load_run, to_csv, to_markdown

    import sys

    runs = []
    for p in find_runs(args.runs):
        try:
            runs.append(load_run(p, args.use, args.scale))
        except ValueError as e:  # still training, no evaluation yet
            print(f"skipping {e}", file=sys.stderr)
    if not runs:
        raise ValueError("none of the runs has an evaluation yet")
    table = build_table(runs, args.scale)
    md = to_markdown(table, args.layout)
    print(md)
    if args.csv:
        Path(args.csv).write_text(to_csv(table))
    if args.markdown:
        Path(args.markdown).write_text(md + "\n")
    return 0
