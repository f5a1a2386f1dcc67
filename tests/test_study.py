"""The study (densemtl.study): spec checks, the results CSV, resumability of the runner, and
the statistics against hand computations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from densemtl.config import ConfigError
from densemtl.study import analysis, report, results, runner
from densemtl.study.spec import Run, StudySpec, load_study

T975 = {2: 4.302652729749464, 1: 12.706204736174698}  # Student t 0.975 quantiles (tables), df -> value


def spec_dict(tmp_path, **over):
    d = {
        "name": "t", "csv": str(tmp_path / "res" / "t.csv"), "work_dir": str(tmp_path / "work"),
        "data": {"num_images": 20, "size": [32, 48]},
        "pretrain": {"num_images": 12, "run": {"schedule": {"iterations": 2, "milestones": [1]}}},
        "seeds": [0], "settings": ["scratch"], "task_sets": ["SD"],
        "methods": {"stl": {"model": "stl", "label": "STL"}, "mtl": {"model": "mtl", "label": "MTL"}},
        "run": {"model": {"backbone": "resnet18"}, "data": {"batch_size": 2, "val_batch_size": 4, "num_workers": 0},
                "schedule": {"iterations": 4, "milestones": [3]},
                "train": {"log_every": 1, "eval_every": 2, "checkpoint_every": 1, "progress": False, "deterministic": True}},
    }
    d.update(over)
    return d


# --- spec ----------------------------------------------------------------------------------
def test_plan_single_task_methods_once_per_task_and_seed_major(tmp_path):
    spec = StudySpec(spec_dict(tmp_path, seeds=[0, 1], task_sets=["SD", "SDN"], settings=["pretrained", "scratch"]))
    plan = spec.plan()
    # per seed and setting: STL S, D, N + MTL SD, SDN
    assert len(plan) == 2 * 2 * (3 + 2)
    assert [r.seed for r in plan[:10]] == [0] * 10 and plan[10].seed == 1
    assert [(r.method, r.tasks) for r in plan[:5]] == [("stl", "S"), ("stl", "D"), ("stl", "N"), ("mtl", "SD"), ("mtl", "SDN")]
    # the hash ignores seeds and setting names' order but not the recipe or the method
    a = spec.config_hash(Run("scratch", "mtl", "SD", 0))
    assert a == spec.config_hash(Run("scratch", "mtl", "SDN", 1))
    assert a != spec.config_hash(Run("pretrained", "mtl", "SD", 0))
    other = StudySpec(spec_dict(tmp_path, run={**spec_dict(tmp_path)["run"], "optim": {"lr_decoder": 1e-4}}))
    assert other.config_hash(Run("scratch", "mtl", "SD", 0)) != a
    assert StudySpec(spec_dict(tmp_path, csv=str(tmp_path / "elsewhere.csv"))).config_hash(Run("scratch", "mtl", "SD", 0)) == a


def test_study_runs_are_eager_fp32_whatever_the_machine(tmp_path, monkeypatch):
    """A row must not depend on the CPU that trained it: on a CPU with native bf16 (where `auto`
    picks bf16 autocast and channels-last) a study's runs and its shared encoder still train in
    eager fp32, unless the study's run section names a precision, which then enters the hash."""
    from densemtl.config import config_from_dict
    from densemtl.engine import fastpath
    import torch
    monkeypatch.setattr(fastpath, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    cpu = torch.device("cpu")
    spec = StudySpec(spec_dict(tmp_path, settings=["pretrained"]))
    run = Run("pretrained", "mtl", "SD", 0)
    for cfg in (spec.run_config(run, tmp_path / "d", tmp_path / "o", tmp_path / "enc.pt"),
                spec.pretrain_config(tmp_path / "d", tmp_path / "o")):
        fast = fastpath.resolve(config_from_dict(cfg), cpu)
        assert (fast.amp, fast.channels_last, fast.compile, fast.fused) == (None, False, False, False)
    # the same config outside a study takes the machine's fast path (so the pin above is what holds)
    assert fastpath.resolve(config_from_dict({"train": {}}), cpu).amp == "bf16"
    # naming the pinned values changes nothing, not even the hash; another precision is another study
    h, ph = spec.config_hash(run), spec.pretrain_hash()
    base = spec_dict(tmp_path)["run"]
    pinned = {**base, "train": {**base["train"], "amp": None, "channels_last": False}, "optim": {"fused": False}}
    same = StudySpec(spec_dict(tmp_path, settings=["pretrained"], run=pinned))
    assert (same.config_hash(run), same.pretrain_hash()) == (h, ph)
    enc = {**spec_dict(tmp_path)["pretrain"]}
    enc["run"] = {**enc["run"], "train": {"amp": None, "compile": False}}
    same_enc = StudySpec(spec_dict(tmp_path, settings=["pretrained"], pretrain=enc))
    assert (same_enc.config_hash(run), same_enc.pretrain_hash()) == (h, ph)
    bf16 = StudySpec(spec_dict(tmp_path, settings=["pretrained"], run={**base, "train": {**base["train"], "amp": "bf16"}}))
    assert bf16.config_hash(run) != h and bf16.pretrain_hash() != ph
    assert fastpath.resolve(config_from_dict(bf16.run_config(run, tmp_path / "d", tmp_path / "o", None)), cpu).amp == "bf16"


def test_a_bad_run_value_is_refused_when_the_study_is_read(tmp_path):
    base = spec_dict(tmp_path, settings=["pretrained"])
    bad = {**base["run"], "train": {**base["run"]["train"], "amp": "fp64"}}
    with pytest.raises(ConfigError, match=r"^run in .*train\.amp.*fp64"):
        StudySpec(spec_dict(tmp_path, run=bad))
    enc = {**base["pretrain"], "run": {"schedule": {"gamma": -3}}}
    with pytest.raises(ConfigError, match=r"^pretrain\.run in .*schedule\.gamma"):
        StudySpec(spec_dict(tmp_path, settings=["pretrained"], pretrain=enc))


def test_pretrain_hash_follows_the_encoders_effective_recipe(tmp_path):
    base = spec_dict(tmp_path, settings=["pretrained"])
    h = StudySpec(base).pretrain_hash()
    # a study that only trains its methods longer (keys pretrain.run overrides) shares the encoder
    longer = {**base["run"], "schedule": {"iterations": 40, "milestones": [32]}}
    assert StudySpec(spec_dict(tmp_path, settings=["pretrained"], run=longer, name="other")).pretrain_hash() == h
    # anything the pretraining does see gives another encoder
    lr = {**base["run"], "optim": {"lr_decoder": 1e-4}}
    assert StudySpec(spec_dict(tmp_path, settings=["pretrained"], run=lr)).pretrain_hash() != h
    styled = {**base["data"], "style": "shifted"}
    assert StudySpec(spec_dict(tmp_path, settings=["pretrained"], data=styled)).pretrain_hash() != h
    assert StudySpec(spec_dict(tmp_path, settings=["pretrained"], pretrain={**base["pretrain"], "seed": 5})).pretrain_hash() != h
    # the scenes of the study's own data are not the encoder's
    assert StudySpec(spec_dict(tmp_path, settings=["pretrained"], data={**base["data"], "num_images": 30})).pretrain_hash() == h


def test_run_config_pretrained_setting_starts_from_the_encoder(tmp_path):
    spec = StudySpec(spec_dict(tmp_path, settings=["pretrained"]))
    cfg = spec.run_config(Run("pretrained", "mtl", "SD", 3), tmp_path / "data", tmp_path / "out", tmp_path / "enc.pt")
    assert cfg["train"]["init_from"] == str(tmp_path / "enc.pt") and cfg["train"]["init_parts"] == ["encoder"]
    assert cfg["seed"] == 3 and cfg["tasks"] == "SD" and cfg["model"]["name"] == "mtl"
    assert cfg["train"]["eval_every"] == 2  # the common run section is kept
    assert "init_from" not in spec.run_config(Run("scratch", "mtl", "SD", 3), tmp_path, tmp_path, None)["train"]


@pytest.mark.parametrize("change, message", [
    ({"bogus": 1}, "unknown key 'bogus'"),
    ({"data": {"size": [30, 48]}}, "data.size"),
    ({"methods": {"stl": {"model": "stl"}, "x": {"model": "densemtl", "options": {"nope": 1}}}}, "methods.x.options.nope"),
    ({"methods": {"stl": {"model": "stl"}, "x": {"options": {}}}}, "methods.x"),
    ({"reference": "mtl"}, "reference"),
    ({"run": {"seed": 3}}, "run.seed"),
    ({"run": {"data": {"root": "/x"}}}, "run.data.root"),
    ({"compare": [["mtl", "stl"]]}, "compare item 0"),
    ({"task_sets": ["SX"]}, "task_sets item 0"),
    ({"csv": "out.txt"}, "csv"),
])
def test_spec_errors_name_the_key(tmp_path, change, message):
    with pytest.raises(ConfigError) as e:
        StudySpec(spec_dict(tmp_path, **change), "study.yaml")
    assert message in str(e.value) and "\n" not in str(e.value) and "study.yaml" in str(e.value)


# --- the results CSV --------------------------------------------------------------------------
def make_row(**over):
    row = {"config_hash": "abc", "seed": 0, "setting": "scratch", "method": "mtl", "tasks": "SD", "study_hash": "s1",
           "model": "mtl", "backbone": "resnet18", "size": "48x32", "batch_size": 2, "iterations": 4, "images_seen": 8,
           "train_seconds": 1.5, "sec_per_iter": 0.25, "threads": 1, "finished": "2026-01-01T00:00:00Z", "host": "h",
           "semseg/mIoU": 40.0, "depth/rmse": 0.5}
    row.update(over)
    return row


def test_csv_append_skip_widen_and_read_back(tmp_path):
    path = tmp_path / "r.csv"
    assert results.append_row(path, make_row())
    assert not results.append_row(path, make_row(**{"semseg/mIoU": 99.0}))  # same key: not twice
    # a run with a task the file has not seen widens the header; the old row keeps its values
    assert results.append_row(path, make_row(seed=1, tasks="SDN", **{"normals/mean_angle": 20.0}))
    header = path.read_text().splitlines()[0].split(",")
    assert header[: len(results.FIXED)] == list(results.FIXED)
    assert header[len(results.FIXED):] == ["semseg/mIoU", "depth/rmse", "normals/mean_angle"]
    rows = results.read_rows(path)
    assert len(rows) == 2 and rows[0]["semseg/mIoU"] == 40.0 and "normals/mean_angle" not in rows[0]
    assert rows[1]["normals/mean_angle"] == 20.0 and rows[1]["seed"] == 1 and isinstance(rows[1]["images_seen"], int)
    assert not list(tmp_path.glob(".r.csv.tmp-*"))


def test_csv_line_cut_short_is_ignored_then_replaced(tmp_path):
    path = tmp_path / "r.csv"
    results.append_row(path, make_row())
    with open(path, "a") as f:
        f.write("abc,1,scratch,mt")  # a write killed half-way
    assert len(results.read_rows(path)) == 1
    assert results.append_row(path, make_row(seed=2))
    text = path.read_text()
    assert "scratch,mt\n" not in text and "abc,1," not in text
    assert [r["seed"] for r in results.read_rows(path)] == [0, 2]


def test_csv_errors_are_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(results.ResultsError, match="bad.csv: not a study results file"):
        results.read_rows(bad)
    path = tmp_path / "r.csv"
    results.append_row(path, make_row())
    path.write_text(path.read_text().replace(",0,scratch,", ",zero,scratch,"))
    with pytest.raises(results.ResultsError, match=r"r.csv, line 2: column seed"):
        results.read_rows(path)


def test_unique_rows_keeps_the_first_of_a_key():
    rows = [make_row(), make_row(**{"semseg/mIoU": 1.0}), make_row(seed=1)]
    assert [r["semseg/mIoU"] for r in results.unique_rows(rows)] == [40.0, 40.0]


# --- statistics ---------------------------------------------------------------------------------
def stats_spec(tmp_path, **over):
    return StudySpec(spec_dict(tmp_path, seeds=[0, 1, 2], task_sets=["SD", "SDN"], methods={
        "stl": {"model": "stl", "label": "STL"}, "mtl": {"model": "mtl", "label": "MTL"},
        "padnet3ways": {"model": "padnet3ways", "label": "3-ways PAD-Net"},
        "densemtl": {"model": "densemtl", "label": "DenseMTL", "options": {"mteb_scales": [1]}}},
        compare=[["densemtl", "padnet3ways"], ["densemtl", "mtl"]], **over))


STL = {0: (50.0, 1.0, 20.0), 1: (52.0, 0.9, 21.0), 2: (48.0, 1.1, 19.0)}  # seed -> mIoU, RMSE, mErr
MT = {  # (method, tasks) -> seed -> metrics
    ("mtl", "SD"): {0: (51.0, 0.95), 1: (52.0, 0.99), 2: (47.0, 1.0)},
    ("padnet3ways", "SD"): {0: (53.0, 0.9), 1: (54.0, 0.88), 2: (50.0, 1.05)},
    ("densemtl", "SD"): {0: (55.0, 0.85), 1: (56.0, 0.8), 2: (52.0, 0.95)},
    ("mtl", "SDN"): {0: (50.5, 0.97, 21.0), 1: (51.0, 0.95, 22.0), 2: (47.5, 1.0, 19.5)},
    ("padnet3ways", "SDN"): {0: (52.0, 0.92, 20.5), 1: (53.5, 0.9, 21.0), 2: (49.0, 1.0, 19.0)},
    ("densemtl", "SDN"): {0: (56.0, 0.83, 19.0), 1: (57.0, 0.82, 20.0), 2: (53.0, 0.9, 18.0)},
}
KEYS = ("semseg/mIoU", "depth/rmse", "normals/mean_angle")


def stats_rows(spec):
    rows = []
    for seed, (s, d, n) in STL.items():
        for t, v in zip("SDN", (s, d, n)):
            run = Run("scratch", "stl", t, seed)
            metrics = {"semseg/mIoU": None, "depth/rmse": None, KEYS["SDN".index(t)]: v}
            rows.append(make_row(config_hash=spec.config_hash(run), seed=seed, method="stl", tasks=t, model="stl",
                                 study_hash=spec.study_hash("scratch"), **metrics))
    for (m, ts), per in MT.items():
        for seed, vals in per.items():
            run = Run("scratch", m, ts, seed)
            rows.append(make_row(config_hash=spec.config_hash(run), seed=seed, method=m, tasks=ts, model=m,
                                 study_hash=spec.study_hash("scratch"), **dict(zip(KEYS, vals))))
    for r in rows:
        for k in [k for k, v in r.items() if v is None]:
            del r[k]
    return rows


def hand_delta(vals, seed, tasks="SD"):
    """Delta written out from its definition: + for mIoU (higher is better), - for RMSE and mErr."""
    s, d, n = STL[seed]
    terms = [(vals[0] - s) / s, -(vals[1] - d) / d] + ([-(vals[2] - n) / n] if tasks == "SDN" else [])
    return 100 * sum(terms) / len(terms)


def test_delta_mean_std_interval_by_hand(tmp_path):
    spec = stats_spec(tmp_path)
    rows = stats_rows(spec)
    gs = {(g.tasks, g.method): g for g in analysis.groups(spec, rows)}
    for (m, ts), per in MT.items():
        hand = np.array([hand_delta(per[s], s, ts) for s in (0, 1, 2)])
        g = gs[(ts, m)]
        assert g.delta.n == 3
        assert g.delta.mean == pytest.approx(hand.mean(), rel=1e-12)
        assert g.delta.std == pytest.approx(hand.std(ddof=1), rel=1e-12)
        assert g.delta.half == pytest.approx(T975[2] * hand.std(ddof=1) / math.sqrt(3), rel=1e-9)
        miou = np.array([per[s][0] for s in (0, 1, 2)])
        assert g.metrics["semseg/mIoU"].mean == pytest.approx(miou.mean())
        assert g.metrics["semseg/mIoU"].low == pytest.approx(miou.mean() - T975[2] * miou.std(ddof=1) / math.sqrt(3))
    ref = gs[("SDN", "stl")]
    assert ref.delta.mean == 0 and ref.metrics["normals/mean_angle"].mean == pytest.approx(20.0)


def test_paired_differences_by_hand(tmp_path):
    spec = stats_spec(tmp_path)
    pairs = {(p.tasks, p.a, p.b, p.quantity): p for p in analysis.paired_differences(spec, stats_rows(spec))}
    for ts in ("SD", "SDN"):
        for b in ("padnet3ways", "mtl"):
            diff = np.array([hand_delta(MT[("densemtl", ts)][s], s, ts) - hand_delta(MT[(b, ts)][s], s, ts) for s in (0, 1, 2)])
            p = pairs[(ts, "densemtl", b, "Delta")]
            assert p.est.mean == pytest.approx(diff.mean(), rel=1e-12)
            assert p.est.half == pytest.approx(T975[2] * diff.std(ddof=1) / math.sqrt(3), rel=1e-9)
        rmse = np.array([MT[("densemtl", ts)][s][1] - MT[("mtl", ts)][s][1] for s in (0, 1, 2)])
        assert pairs[(ts, "densemtl", "mtl", "depth/rmse")].est.mean == pytest.approx(rmse.mean())


def test_partial_delta_sd_of_sdn_models_by_hand(tmp_path):
    spec = stats_spec(tmp_path)
    part = {p.method: p for p in analysis.partial_deltas(spec, stats_rows(spec))}
    assert set(part) == {"mtl", "padnet3ways", "densemtl"}
    for m, p in part.items():
        sup = np.array([hand_delta(MT[(m, "SDN")][s][:2], s, "SD") for s in (0, 1, 2)])
        sub = np.array([hand_delta(MT[(m, "SD")][s], s, "SD") for s in (0, 1, 2)])
        assert (p.subset, p.superset) == ("SD", "SDN")
        assert p.sup.mean == pytest.approx(sup.mean()) and p.sub.mean == pytest.approx(sub.mean())
        assert p.diff.mean == pytest.approx((sup - sub).mean())
        assert p.diff.half == pytest.approx(T975[2] * (sup - sub).std(ddof=1) / math.sqrt(3), rel=1e-9)


def test_missing_reference_row_gives_no_delta_for_that_seed(tmp_path):
    spec = stats_spec(tmp_path)
    rows = [r for r in stats_rows(spec) if not (r["method"] == "stl" and r["seed"] == 2 and r["tasks"] == "D")]
    g = next(g for g in analysis.groups(spec, rows) if g.method == "densemtl" and g.tasks == "SD")
    assert sorted(g.deltas) == [0, 1] and g.delta.n == 2
    assert g.delta.half == pytest.approx(T975[1] * np.std([g.deltas[0], g.deltas[1]], ddof=1) / math.sqrt(2))


def test_levelled_compares_last_fifth_movement_with_seed_spread():
    xs = [0, 20, 40, 60, 80, 100]
    flat = {0: (xs, [0, 5, 8, 9.0, 9.5, 9.6]), 1: (xs, [0, 4, 7, 8.0, 8.6, 8.8])}
    lev = analysis.levelled(flat, final_spread=0.5)
    assert lev["from"] == 80 and lev["to"] == 100
    assert lev["movement"] == pytest.approx((9.6 + 8.8) / 2 - (9.5 + 8.6) / 2) and lev["levelled"] is True
    climbing = {0: (xs, [0, 2, 4, 6, 8, 10.0])}
    assert analysis.levelled(climbing, final_spread=0.5)["levelled"] is False
    assert analysis.levelled(climbing, final_spread=None)["levelled"] is None
    assert math.isnan(lev["after_step"])  # no rate step given


def test_levelled_reports_the_move_after_a_rate_step_inside_the_last_fifth():
    # the rate steps at 80 (the window's start): the jump 80 -> 90 is in the last-fifth move, the
    # move after the step is 90 -> 100 only
    xs = [0, 40, 80, 90, 100]
    jump = {0: (xs, [0, 5, 6.0, 9.0, 9.2]), 1: (xs, [0, 4, 5.0, 8.0, 8.4])}
    lev = analysis.levelled(jump, final_spread=0.5, last_step=80)
    assert lev["movement"] == pytest.approx((9.2 + 8.4) / 2 - (6.0 + 5.0) / 2) and lev["levelled"] is False
    assert lev["after_step"] == pytest.approx((9.2 + 8.4) / 2 - (9.0 + 8.0) / 2)
    # a step before the window, or one with fewer than two evaluations after it: no such move
    assert math.isnan(analysis.levelled(jump, final_spread=0.5, last_step=40)["after_step"])
    assert math.isnan(analysis.levelled(jump, final_spread=0.5, last_step=90)["after_step"])


def test_delta_curve_ends_at_the_rows_delta(tmp_path):
    spec = stats_spec(tmp_path)
    rows = stats_rows(spec)
    curves = {}
    for r in rows:
        final = {k: r[k] for k in KEYS if k in r}
        start = {k: v * (0.5 if k == "semseg/mIoU" else 2.0) for k, v in final.items()}
        curves[results.row_key(r)] = {"evals": [{"iter": 1, "images": 2, **start}, {"iter": 2, "images": 4, **final}]}
    deltas = analysis.curve_deltas(spec, rows, curves)
    xs, ys = deltas[("scratch", "SD", "densemtl")][1]
    assert xs == [2, 4] and ys[-1] == pytest.approx(hand_delta(MT[("densemtl", "SD")][1], 1))
    xs, ys = deltas[("scratch", "SDN", "stl")][0]  # the reference ends at 0 and starts below it
    assert ys[-1] == pytest.approx(0.0) and ys[0] == pytest.approx(100 * (-0.5 - 1.0 - 1.0) / 3)


def test_report_section_is_replaced_not_duplicated(tmp_path):
    md = tmp_path / "results.md"
    md.write_text("# Results\n\nintro\n")
    report.write_section(md, "a", "first")
    report.write_section(md, "b", "other")
    report.write_section(md, "a", "second")
    text = md.read_text()
    assert text.count("<!-- study:a begin -->") == 1 and "second" in text and "first" not in text
    assert "intro" in text and "other" in text and text.index("second") < text.index("other")


def test_report_tables_from_rows(tmp_path):
    spec = stats_spec(tmp_path)
    body = report.build_report(spec, stats_rows(spec), {})
    assert "### S-D, scratch" in body and "### S-D-N, scratch" in body
    g = hand_delta(MT[("densemtl", "SD")][0], 0)
    assert "DenseMTL − 3-ways PAD-Net" in body and "Partial Δ" in body
    hand = np.array([hand_delta(MT[("densemtl", "SD")][s], s) for s in (0, 1, 2)])
    assert f"| DenseMTL | 3 | " in body and f"{hand.mean():.2f} ± {hand.std(ddof=1):.2f}" in body
    assert g == pytest.approx(hand[0])


def test_report_shows_the_move_after_the_rate_step_when_the_last_fifth_holds_it(tmp_path):
    spec = stats_spec(tmp_path)  # milestone 3 x batch 2: the rate steps at 6 of 8 images
    assert spec.last_rate_step() == 6
    rows = stats_rows(spec)
    scale = {4: (0.5, 2.0), 6: (0.6, 1.8), 7: (0.95, 1.05), 8: (1.0, 1.0)}  # images -> (mIoU, error) factors
    curves = {}
    for r in rows:
        evals = []
        for x, (up, down) in scale.items():
            e = {"images": x}
            for k in KEYS:
                if r.get(k) is not None:
                    e[k] = r[k] * (up if k == "semseg/mIoU" else down)
            evals.append(e)
        curves[results.row_key(r)] = {"evals": evals}
    body = report.build_report(spec, rows, curves)
    assert "move after the rate step" in body and "steps at 6 images" in body
    line = next(l for l in body.splitlines() if l.startswith("| DenseMTL | 3 |"))  # the S-D table comes first
    m = MT[("densemtl", "SD")]
    hand = np.mean([hand_delta(m[s], s) - hand_delta((m[s][0] * 0.95, m[s][1] * 1.05), s) for s in (0, 1, 2)])
    assert line.endswith(f"| {hand:.2f} |") and abs(hand) > 0.5
    # without a rate step inside the last fifth the column is left out
    later = stats_spec(tmp_path, run={**spec_dict(tmp_path)["run"], "schedule": {"iterations": 4, "milestones": [2]}})
    assert "move after the rate step" not in report.build_report(later, rows, curves)


# --- resumability -------------------------------------------------------------------------------
@pytest.mark.slow
def test_study_runs_records_and_skips(tmp_path, capsys):
    spec = StudySpec(spec_dict(tmp_path))
    new = runner.run_study(spec)
    assert [(r["method"], r["tasks"]) for r in new] == [("stl", "S"), ("stl", "D"), ("mtl", "SD")]
    rows = results.read_rows(spec.csv)
    assert len(rows) == 3 and all(r["images_seen"] == 8 and r["iterations"] == 4 for r in rows)
    assert "semseg/mIoU" in rows[2] and "depth/rmse" in rows[2] and "depth/rmse" not in rows[0]
    curve = json.loads(results.curve_path(spec.curves_dir, rows[2]).read_text())
    assert [e["images"] for e in curve["evals"]] == [4, 8]
    assert curve["evals"][-1]["semseg/mIoU"] == rows[2]["semseg/mIoU"]
    before = spec.csv.read_text()
    assert runner.run_study(spec) == [] and spec.csv.read_text() == before
    assert "0 to do" in capsys.readouterr().out


@pytest.mark.slow
def test_killed_run_resumes_and_is_recorded_once(tmp_path, monkeypatch, capsys):
    from densemtl.engine import HookBase

    spec = StudySpec(spec_dict(tmp_path, methods={"stl": {"model": "stl"}, "mtl": {"model": "mtl"}}))

    class Kill(HookBase):
        def after_step(self, trainer, logs):
            if trainer.iter == 3 and trainer.cfg.model.name == "mtl":
                raise KeyboardInterrupt

    real = runner.default_hooks
    monkeypatch.setattr(runner, "default_hooks", lambda cfg: real(cfg) + [Kill()])
    with pytest.raises(SystemExit):
        runner.run_study(spec)
    assert [r["method"] for r in results.read_rows(spec.csv)] == ["stl", "stl"]  # the killed run has no row
    monkeypatch.setattr(runner, "default_hooks", real)
    new = runner.run_study(spec)
    assert [(r["method"], r["iterations"]) for r in new] == [("mtl", 4)]
    assert "resumed" in capsys.readouterr().out  # continued from its checkpoint at iteration 3
    rows = results.read_rows(spec.csv)
    assert len(rows) == 3 and len({results.row_key(r) for r in rows}) == 3


@pytest.mark.slow
def test_finished_run_without_row_is_recorded_without_training(tmp_path, monkeypatch):
    spec = StudySpec(spec_dict(tmp_path, methods={"stl": {"model": "stl"}}, task_sets=["S"]))
    runner.run_study(spec)
    row = results.read_rows(spec.csv)[0]
    spec.csv.write_text(spec.csv.read_text().splitlines()[0] + "\n")  # killed after training, before the row

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(runner, "Trainer", no_training)
    new = runner.run_study(spec)
    assert len(new) == 1 and new[0]["semseg/mIoU"] == row["semseg/mIoU"]


def test_file_lock_refuses_or_waits_for_a_holder(tmp_path):
    import threading

    from densemtl.fileio import file_lock

    lock = tmp_path / "sub" / "x.lock"
    with file_lock(lock) as held:
        assert held and lock.is_file()
        with file_lock(lock, wait=False) as second:  # another open file: another holder
            assert second is False
        waited, order = [], []

        def other():
            with file_lock(lock, on_wait=lambda: waited.append(1)) as got:
                order.append(("other", got))

        t = threading.Thread(target=other)
        t.start()
        t.join(0.3)
        assert t.is_alive() and waited == [1] and order == []  # blocked while we hold it
        order.append(("me", True))
    t.join(5)
    assert order == [("me", True), ("other", True)]
    with file_lock(lock, wait=False) as again:
        assert again


def _concurrency_probe(real, pause=0.3):
    """Wrap ``real``: count calls and the most calls in progress at once."""
    import threading
    import time

    state = {"calls": 0, "now": 0, "most": 0}
    guard = threading.Lock()

    def wrapped(*a, **k):
        with guard:
            state["calls"] += 1
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        try:
            time.sleep(pause)
            return real(*a, **k)
        finally:
            with guard:
                state["now"] -= 1

    return wrapped, state


def test_two_shards_starting_together_generate_the_data_once(tmp_path, monkeypatch):
    import threading

    spec = StudySpec(spec_dict(tmp_path))
    gen, state = _concurrency_probe(runner.generate_dataset)
    monkeypatch.setattr(runner, "generate_dataset", gen)
    logs, roots = [], []
    threads = [threading.Thread(target=lambda: roots.append(runner.ensure_dataset(spec, 0, 20, logs.append)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert state == {"calls": 1, "now": 0, "most": 1}  # without the lock both generate, at once
    assert len(roots) == 2 and roots[0] == roots[1] and (roots[0] / "dataset.json").is_file()
    assert any(line.startswith("[study] waiting for another process to generate") for line in logs)


def test_two_shards_starting_together_pretrain_the_encoder_once(tmp_path, monkeypatch):
    import threading

    spec = StudySpec(spec_dict(tmp_path))
    runner.ensure_dataset(spec, spec.pretrain["generator_seed"], spec.pretrain["num_images"])

    def fake_train(cfg, run_dir, log=print):  # the real one's contract: a finished run returns at once
        done = run_dir / "done"
        if not done.is_file():
            trained.append(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            done.write_text("1")

    trained = []
    probe, state = _concurrency_probe(fake_train)
    monkeypatch.setattr(runner, "train", probe)
    logs, ckpts = [], []
    threads = [threading.Thread(target=lambda: ckpts.append(runner.ensure_pretrained(spec, logs.append))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(ckpts) == 2 and ckpts[0] == ckpts[1] and len(trained) == 1
    assert state["most"] == 1  # never two trainings of the encoder's folder at once
    assert any(line.startswith("[study] waiting for another process to pretrain") for line in logs)


@pytest.mark.slow
def test_a_run_another_process_is_training_is_skipped_then_trained(tmp_path, capsys):
    from densemtl.fileio import file_lock

    spec = StudySpec(spec_dict(tmp_path, methods={"stl": {"model": "stl"}}, task_sets=["S"]))
    run = spec.plan()[0]
    folder = runner.run_dir(spec, run)
    with file_lock(runner._lock_path(folder)):  # "another process" is training it
        assert runner.run_study(spec) == []
        assert "being trained by another process; skipped here" in capsys.readouterr().out
        assert not folder.exists() and not spec.csv.is_file()
    new = runner.run_study(spec)
    assert [(r["method"], r["tasks"]) for r in new] == [("stl", "S")]


def test_shards_split_the_plan_and_cover_it(tmp_path):
    spec = StudySpec(spec_dict(tmp_path, seeds=[0, 1, 2]))
    a, b = runner.pending_runs(spec, (1, 2)), runner.pending_runs(spec, (2, 2))
    assert not set(a) & set(b) and set(a) | set(b) == set(spec.plan())


def test_cli_dry_run_and_bad_arguments(tmp_path, capsys):
    import yaml

    from densemtl.cli.main import main

    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump(spec_dict(tmp_path)))
    assert main(["study", str(cfg), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "3 of 3 runs to do, 8 images each" in out and "scratch/mtl_SD/seed0" in out
    with pytest.raises(SystemExit):
        main(["study", str(cfg), "--shard", "3/2"])
    assert "expected I/N" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(spec_dict(tmp_path, seeds=[-1])))
    assert main(["study", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "seeds in" in err and "bad.yaml" in err and len(err.strip().splitlines()) == 1


def test_cli_restricts_the_plan_without_changing_the_rows(tmp_path, capsys):
    import yaml

    from densemtl.cli.main import main

    d = spec_dict(tmp_path, seeds=[0, 1], settings=["pretrained", "scratch"], task_sets=["SD", "SDN"])
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    full = StudySpec(d)
    assert main(["study", str(path), "--dry-run", "--seeds", "1", "--settings", "scratch", "--task-sets", "SD"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert listed == ["scratch/stl_S/seed1", "scratch/stl_D/seed1", "scratch/mtl_SD/seed1"]
    # the narrowed runs are runs of the full plan with the same hashes
    assert set(listed) <= {r.name for r in full.plan()}
    assert main(["study", str(path), "--dry-run", "--task-sets", "SD,XY"]) == 2
    err = capsys.readouterr().err
    assert "--task-sets: 'XY' is not in the study's task_sets" in err and "Traceback" not in err


# --- the repository's study descriptions ---------------------------------------------------
def test_the_repositorys_study_configs_load_and_share_the_encoder_and_the_probes_runs():
    root = Path(__file__).resolve().parents[1] / "configs" / "study"
    specs = {p.stem: load_study(p) for p in sorted(root.glob("*.yaml"))}
    assert {"procedural_r18", "procedural_r18_budget", "procedural_r18_short"} <= set(specs)
    assert all(s.plan() for s in specs.values())
    study, probe, short = specs["procedural_r18"], specs["procedural_r18_budget"], specs["procedural_r18_short"]
    # all three train from the very same shared encoder and data
    for other in (probe, short):
        assert other.pretrain_hash() == study.pretrain_hash() and other.work_dir == study.work_dir
        assert other.data == study.data and other.methods == study.methods
    # the probe's runs ARE the study's seed-0 pretrained S-D runs (recorded, not retrained)
    hashes = {r.name: study.config_hash(r) for r in study.plan()}
    assert {r.name: probe.config_hash(r) for r in probe.plan()}.items() <= hashes.items()
    assert probe.iterations() == study.iterations() == 4 * short.iterations()
    # the short study's 21 recorded rows keep their hashes: its plan is the study's pretrained
    # S-D block at 600 steps
    assert len(short.plan()) == 21 and {r.name for r in short.plan()} <= set(hashes)
    rows = results.read_rows(short.csv if short.csv.is_absolute() else root.parents[1] / short.csv)
    assert {(r["config_hash"], r["seed"], r["method"]) for r in rows} == {
        (short.config_hash(r), r.seed, r.method) for r in short.plan()}
