"""``densemtl table``: partial Deltas (Tables 1-2), the exchange-block 'Param.' column (Table 3),
output scales (``--scale``) and runs told apart by their optimiser recipe; hand computations."""

import json

import numpy as np
import pytest
import yaml

from densemtl.cli.main import main
from densemtl.engine.report import build_table, load_run, to_csv, to_markdown
from densemtl.tasks import get_task

STL = {"semseg": 38.70, "depth": 0.635, "normals": 36.90, "edges": 54.90}  # the paper's NYUDv2 STL row
HEAD = {t: get_task(t).headline_metric for t in ("semseg", "depth", "normals", "edges")}
LETTERS = {"S": "semseg", "D": "depth", "N": "normals", "E": "edges"}


def fake_run(root, name, model, tasks, metrics, *, dataset="nyud", options=None, backbone="resnet101",
             lr=(2e-4, 3e-4), scales=None):
    """A run directory with a config and one evaluation record; ``metrics``: {task: headline};
    ``scales``: {k: {task: headline}} recorded as ``s<k>/task/metric``."""
    d = root / name
    d.mkdir(parents=True)
    cfg = {"experiment": name, "tasks": tasks, "data": {"dataset": dataset, "options": {}},
           "model": {"name": model, "backbone": backbone, "pretrained": False, "options": options or {}},
           "optim": {"name": "adam", "lr_backbone": lr[0], "lr_decoder": lr[1]}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    rec = {"type": "eval", "iter": 10, "score": 0.0, "eval_scale": 0}
    rec.update({f"{t}/{HEAD[t]}": v for t, v in metrics.items()})
    for k, m in (scales or {}).items():
        rec.update({f"s{k}/{t}/{HEAD[t]}": v for t, v in m.items()})
    (d / "metrics.jsonl").write_text(json.dumps({"type": "train", "iter": 10, "loss": 1.0}) + "\n" + json.dumps(rec) + "\n")
    return d


def stl_runs(root, values=STL, **kw):
    return [fake_run(root, f"stl_{t}", "stl", t, {t: v}, **kw) for t, v in values.items()]


def by_method(table):
    return {(r["method"], "".join(r["tasks"][i][0].upper() for i in range(len(r["tasks"])))): r for r in table["rows"]}


def test_partial_deltas_of_tables_1_and_2_against_the_same_stl_rows(tmp_path):
    dirs = stl_runs(tmp_path)
    sdn = [{"semseg": 40.28, "depth": 0.598, "normals": 33.72}, {"semseg": 39.80, "depth": 0.601, "normals": 33.90}]
    sdne = {"semseg": 40.84, "depth": 0.593, "normals": 33.38, "edges": 61.12}
    dirs += [fake_run(tmp_path, f"sdn{i}", "densemtl", "SDN", m) for i, m in enumerate(sdn)]
    dirs += [fake_run(tmp_path, "sdne", "densemtl", "SDNE", sdne)]
    dirs += [fake_run(tmp_path, "sd", "densemtl", "SD", {"semseg": 38.93, "depth": 0.604})]
    table = build_table([load_run(d) for d in dirs])
    rows = {tuple(r["tasks"]): r for r in table["rows"] if r["method"] == "DenseMTL"}
    # by hand: Delta_SD(f_SDN) per seed = ((m_S - b_S) / b_S - (m_D - b_D) / b_D) / 2 * 100
    per_seed = [100 * ((m["semseg"] - 38.70) / 38.70 - (m["depth"] - 0.635) / 0.635) / 2 for m in sdn]
    assert per_seed[0] == pytest.approx(4.9547, abs=1e-4)
    sub, (mean, std) = rows[("semseg", "depth", "normals")]["partial"]
    assert sub == ("semseg", "depth") and mean == pytest.approx(np.mean(per_seed)) and std == pytest.approx(np.std(per_seed, ddof=1))
    full = [100 * ((m["semseg"] - 38.70) / 38.70 - (m["depth"] - 0.635) / 0.635 - (m["normals"] - 36.90) / 36.90) / 3 for m in sdn]
    assert rows[("semseg", "depth", "normals")]["delta"][0] == pytest.approx(np.mean(full))
    # Delta_SDN(f_SDNE): S, D and N of the S-D-N-E model against the same STL rows
    sub, (mean, std) = rows[("semseg", "depth", "normals", "edges")]["partial"]
    expected = 100 * ((40.84 - 38.70) / 38.70 - (0.593 - 0.635) / 0.635 - (33.38 - 36.90) / 36.90) / 3
    assert sub == ("semseg", "depth", "normals") and mean == pytest.approx(expected) and std == 0.0
    assert rows[("semseg", "depth")]["partial"] is None
    assert table["partials"] == [("semseg", "depth"), ("semseg", "depth", "normals")]
    md = to_markdown(table)
    assert md.splitlines()[0].startswith("Protocol: standard (")
    header = md.splitlines()[1].split(" | ")
    assert header[-2:] == ["Δ_SD % ↑", "Δ_SDN % ↑ |"]
    line = next(x for x in md.splitlines() if "| DenseMTL | S-D-N-E |" in x)
    assert line.endswith(f"| - | {expected:+.2f} |")
    line = next(x for x in md.splitlines() if "| S-D-N |" in x and "DenseMTL" in x)
    assert f"| {np.mean(per_seed):+.2f} ± {np.std(per_seed, ddof=1):.2f} | - |" in line
    csv = to_csv(table).splitlines()
    cols = csv[0].split(",")
    row = next(x for x in csv if ",DenseMTL,S-D-N-E," in x).split(",")
    assert float(row[cols.index("delta_SDN_mean")]) == pytest.approx(expected) and row[cols.index("delta_SD_mean")] == ""


# the paper's Table 3 'Param.' (M added), S-D and S-D-N, by mTEB placement
TABLE3 = {("SD", ()): "0.00", ("SD", (1,)): "0.77", ("SD", (3,)): "3.09", ("SD", (1, 2, 3, 4)): "7.72",
          ("SDN", ()): "0.00", ("SDN", (1,)): "2.32", ("SDN", (4,)): "9.26", ("SDN", (1, 2, 3, 4)): "23.15"}


@pytest.mark.slow
def test_param_column_for_mteb_placements_only(tmp_path):
    dirs = stl_runs(tmp_path, {t: STL[t] for t in ("semseg", "depth", "normals")}, dataset="vkitti2",
                    options={"input_norm": "authors"})
    for (ts, scales), _ in TABLE3.items():
        name = f"{ts}_{''.join(map(str, scales)) or 'none'}"
        dirs.append(fake_run(tmp_path, name, "densemtl", ts, {LETTERS[c]: STL[LETTERS[c]] + 1 for c in ts},
                             dataset="vkitti2", options={"mteb_scales": list(scales), "input_norm": "authors"}))
    table = build_table([load_run(d) for d in dirs])
    assert table["param"]
    md = to_markdown(table).splitlines()
    head = md[1].split(" | ")
    col = head.index("Param. M ↓")
    for (ts, scales), shown in TABLE3.items():
        label = "DenseMTL" + (f" [mteb_scales={list(scales)}]" if list(scales) != [1] else "")
        line = next(x for x in md if f"| {label} | {'-'.join(ts)} |" in x)
        assert line.split(" | ")[col] == shown, (ts, scales, line)
    assert next(x for x in md if x.startswith("| vkitti2 | STL")).split(" | ")[col] == "-"
    assert "Every row: input_norm=authors." in md  # shared by all rows: said once, not in every label
    # a Table-1 layout (one DenseMTL per task set, other methods) has no Param. column
    t1 = [d for d in dirs if d.name.startswith("stl") or d.name in ("SD_1", "SDN_1")]
    t1.append(fake_run(tmp_path, "mtl", "mtl", "SD", {"semseg": 40.0, "depth": 0.6}, dataset="vkitti2"))
    table = build_table([load_run(d) for d in t1])
    assert not table["param"] and "Param." not in to_markdown(table)


def test_scale_option_reads_s_k_keys_and_marks_runs_without_that_scale(tmp_path, capsys):
    stl_runs(tmp_path, {"semseg": 50.0, "depth": 5.0})
    fake_run(tmp_path, "dense", "densemtl", "SD", {"semseg": 60.0, "depth": 4.0}, scales={1: {"semseg": 55.0, "depth": 4.5}})
    r0, r1 = load_run(tmp_path / "dense"), load_run(tmp_path / "dense", scale=1)
    assert r0["metrics"]["semseg"] == {"mIoU": 60.0} and "s1" not in r0["metrics"] and r0["scale"] == 0
    assert r1["metrics"] == {"semseg": {"mIoU": 55.0}, "depth": {"rmse": 4.5}} and r1["scale"] == 1 and r1["scales"] == [0, 1]
    assert load_run(tmp_path / "stl_semseg", scale=1)["scale"] == 0
    capsys.readouterr()
    assert main(["table", str(tmp_path), "--scale", "1"]) == 0
    out = capsys.readouterr().out
    delta = 100 * ((55.0 - 50.0) / 50.0 - (4.5 - 5.0) / 5.0) / 2
    assert f"| DenseMTL | S-D | 1 | 55.00 | 4.500 | {delta:+.2f} |" in out
    assert "| STL (scale 0) |" in out and "output scale 1" in out
    assert main(["table", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| DenseMTL | S-D | 1 | 60.00 | 4.000 |" in out and "(scale 0)" not in out


def test_runs_of_one_method_with_other_learning_rates_are_separate_rows(tmp_path):
    dirs = stl_runs(tmp_path, {"semseg": 50.0, "depth": 5.0}, dataset="cityscapes")
    dirs.append(fake_run(tmp_path, "paper", "densemtl", "SD", {"semseg": 60.0, "depth": 4.0}, dataset="cityscapes"))
    dirs.append(fake_run(tmp_path, "released", "densemtl", "SD", {"semseg": 58.0, "depth": 4.2}, dataset="cityscapes",
                         lr=(1e-5, 1e-4)))
    rows = {r["method"]: r for r in build_table([load_run(d) for d in dirs])["rows"]}
    assert rows["DenseMTL [adam, lr 0.0002/0.0003]"]["n"] == 1 and rows["DenseMTL [adam, lr 1e-05/0.0001]"]["n"] == 1
    assert rows["STL"]["n"] == 1  # one recipe: no label suffix
