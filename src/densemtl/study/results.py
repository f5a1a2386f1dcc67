"""The study's results table (CSV, one row per finished run) and its learning-curve files.

Columns: ``KEY`` (what identifies a row), then the run's description and cost, then one
column per metric, ``task/metric`` (``semseg/mIoU``, ``depth/rmse``, ...; empty when the
run has no such task). A row is appended only when its run has finished, in one write under
a lock, after its curve file is in place, so a run killed at any point is either absent
(retrained or resumed next time) or recorded once. A trailing line without its newline (a
write cut short) is ignored when reading and removed before the next append.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

from ..engine.checkpoint import atomic_path
from ..fileio import file_lock

KEY = ("config_hash", "seed", "setting", "method", "tasks")
INFO = ("study_hash", "model", "backbone", "size", "batch_size", "iterations", "images_seen", "train_seconds",
        "sec_per_iter", "threads", "finished", "host")
FIXED = KEY + INFO
INTS = ("seed", "batch_size", "iterations", "images_seen", "threads")
FLOATS = ("train_seconds", "sec_per_iter")


class ResultsError(ValueError):
    """A results file that cannot be read as the study's CSV (the message names it)."""


def row_key(row: dict) -> tuple:
    return tuple(str(row[k]) for k in KEY)


def _parse(row: dict, path: Path, line: int) -> dict:
    out = {}
    for k, v in row.items():
        if k in INTS:
            try:
                out[k] = int(v)
            except (TypeError, ValueError):
                raise ResultsError(f"{path}, line {line}: column {k}: expected an integer, got {v!r}") from None
        elif k in FIXED and k not in FLOATS:
            out[k] = v
        elif v in ("", None):
            continue  # a metric this run does not have
        else:
            try:
                out[k] = float(v)
            except ValueError:
                raise ResultsError(f"{path}, line {line}: column {k}: expected a number, got {v!r}") from None
    return out


def read_rows(path: str | Path) -> list[dict]:
    """Rows of the CSV (``[]`` if it does not exist); numbers parsed, empty metrics left out."""
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # a write cut short: not a row
    if not text:
        return []
    reader = csv.DictReader(io.StringIO(text))
    missing = [k for k in FIXED if k not in (reader.fieldnames or [])]
    if missing:
        raise ResultsError(f"{path}: not a study results file (columns {', '.join(missing)} missing from its header)")
    rows = []
    for i, r in enumerate(reader, start=2):
        if None in r or any(v is None for v in r.values()):
            raise ResultsError(f"{path}, line {i}: {len(reader.fieldnames)} columns expected")
        rows.append(_parse(r, path, i))
    return rows


def unique_rows(rows: list[dict]) -> list[dict]:
    """The first row of each key (a CSV merged from several machines may hold a run twice)."""
    seen, out = set(), []
    for r in rows:
        k = row_key(r)
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


def _locked(path: Path):
    """An exclusive lock on ``path.lock`` (other processes on this machine wait)."""
    return file_lock(path.with_name(path.name + ".lock"))


def _fmt(v) -> str:
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    return "" if v is None else str(v)


def append_row(path: str | Path, row: dict) -> bool:
    """Append ``row`` unless a row with its key is there; returns whether it was written.

    New metric columns (a task the file has not seen) rewrite the file with the wider header
    (atomically: a crash leaves the old file)."""
    path = Path(path)
    missing = [k for k in FIXED if k not in row]
    if missing:
        raise ValueError(f"a results row needs {', '.join(missing)}")
    with _locked(path):
        rows = read_rows(path)
        if any(row_key(r) == row_key(row) for r in rows):
            return False
        header = _header(path)
        metrics = [k for k in row if k not in FIXED]
        wider = header is not None and any(k not in header for k in metrics)
        if header is None or wider:
            cols = list(FIXED) + [k for k in (header or []) if k not in FIXED]
            cols += [k for k in metrics if k not in cols]
            with atomic_path(path) as tmp:
                with open(tmp, "w", newline="") as f:
                    w = csv.writer(f, lineterminator="\n")
                    w.writerow(cols)
                    for r in rows:
                        w.writerow([_fmt(r.get(c)) for c in cols])
            header = cols
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([_fmt(row.get(c)) for c in header])
        with open(path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):  # drop a line cut short
                f.truncate(data.rfind(b"\n") + 1)
            f.seek(0, os.SEEK_END)
            f.write(buf.getvalue().encode())
            f.flush()
            os.fsync(f.fileno())
        return True


def _header(path: Path) -> list[str] | None:
    if not path.is_file() or path.stat().st_size == 0:
        return None
    with open(path, newline="") as f:
        first = f.readline()
    if not first.endswith("\n"):
        return None
    return next(csv.reader([first]))


# --- learning curves ------------------------------------------------------------------------
def curve_path(curves_dir: Path, row: dict) -> Path:
    return Path(curves_dir) / f"{row['config_hash']}_{row['setting']}_{row['method']}_{row['tasks']}_seed{row['seed']}.json"


def write_curve(curves_dir: Path, row: dict, evals: list[dict], batch_size: int) -> Path:
    """``{"key": {...}, "batch_size", "evals": [{"iter", "images", metrics..., "alpha/...": ...}]}``."""
    path = curve_path(curves_dir, row)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"key": {k: row[k] for k in KEY}, "batch_size": batch_size,
           "evals": [{"iter": e["iter"], "images": e["iter"] * batch_size,
                      **{k: v for k, v in e.items() if "/" in k and isinstance(v, (int, float))}} for e in evals]}
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(doc, indent=0) + "\n")
    return path


def read_curve(curves_dir: Path, row: dict) -> dict | None:
    path = curve_path(curves_dir, row)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}: not a curve file ({e})") from None
