"""``densemtl figure``: the paper's qualitative figure (Figure 4) from runs, checkpoints and
converted released checkpoints, on procedural data."""

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_config
from test_threeways_init import hoyer  # noqa: F401  (fixture: files in Hoyer et al.'s layout)

from densemtl.cli.main import main
from densemtl.config import config_from_dict
from densemtl.data import create_dataset
from densemtl.engine import Trainer, load_checkpoint, model_from_checkpoint
from densemtl.tasks import get_task
from densemtl.tasks.render import CITYSCAPES_COLOURS, class_palette, dataset_palette
from densemtl.viz import qualitative_panels, spread_indices


@pytest.fixture(scope="module")
def runs(synth_root, tmp_path_factory):
    """Two finished tiny runs: DenseMTL on S-D-N-E and MTL on S-D."""
    out = tmp_path_factory.mktemp("fig_runs")
    common = {"schedule.iterations": 1, "train.eval_every": 0, "train.checkpoint_every": 1, "data.size": [32, 48]}
    Trainer(config_from_dict(tiny_config(synth_root, out, tasks="SDNE", run_name="dense", **common))).train()
    Trainer(config_from_dict(tiny_config(synth_root, out, tasks="SD", run_name="mtl", **{"model.name": "mtl", **common}))).train()
    return out / "t" / "dense", out / "t" / "mtl"


def _reference(model, image, size):
    """The decoded prediction, computed here: eval-scale output, bilinear upsampling, decoding."""
    with torch.no_grad():
        out = model.eval()(image[None])
    res = {}
    for t in model.tasks:
        p = F.interpolate(out[t][model.eval_scale].float(), size=size, mode="bilinear", align_corners=False)
        res[t] = {"semseg": lambda q: q.argmax(1), "normals": lambda q: F.normalize(q, dim=1),
                  "edges": torch.sigmoid, "depth": lambda q: get_task("depth").decode(q)}[t](p)[0]
    return res


@pytest.mark.slow
def test_figure_panels_are_the_decoded_predictions_rendered_with_shared_ranges(runs, synth_root):
    dense = model_from_checkpoint(load_checkpoint(runs[0]))
    mtl = model_from_checkpoint(load_checkpoint(runs[1]))
    ds = create_dataset("procedural", synth_root, "val", ["semseg", "depth", "normals", "edges"], size=(32, 48), augment=False)
    panels = qualitative_panels([("DenseMTL", dense), ("MTL", mtl)], ds, [0, 3])
    tasks = ["semseg", "depth", "normals", "edges"]
    # the MTL run predicts no normals or edges: no column of it there
    who = {"semseg": ("GT", "DenseMTL", "MTL"), "depth": ("GT", "DenseMTL", "MTL"), "normals": ("GT", "DenseMTL"), "edges": ("GT", "DenseMTL")}
    assert panels["columns"] == ["input"] + [f"{t}\n{w}" for t in tasks for w in who[t]]
    assert len(panels["rows"]) == 2 and all(len(r) == 1 + 3 + 3 + 2 + 2 for r in panels["rows"])
    assert panels["ids"] == [str(ds[0]["id"]), str(ds[3]["id"])]
    pal = dataset_palette(ds.class_names)
    for row, i in zip(panels["rows"], (0, 3)):
        sample = ds[i]
        np.testing.assert_array_equal(row[0], (sample["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        refs = {"DenseMTL": _reference(dense, sample["image"], (32, 48)), "MTL": _reference(mtl, sample["image"], (32, 48))}
        # depth: one range for GT and both predictions, the 1st..99th percentile of the valid GT
        gt = sample["labels"]["depth"].numpy()
        lo, hi = np.percentile(gt[gt > 0], [1, 99])
        for k, (t, who) in enumerate(panels["cells"]):
            if t == "input":
                continue
            panel = row[k]
            value = sample["labels"][t] if who == "GT" else refs[who][t]
            opts = {"num_classes": 8, "palette": pal, **({"vmin": lo, "vmax": hi} if t == "depth" else {})}
            np.testing.assert_array_equal(panel, get_task(t).render(value, **opts), err_msg=f"{t} {who}")
        # the shared range matters: with each map's own range the prediction would look different
        k = panels["cells"].index(("depth", "DenseMTL"))
        assert not np.array_equal(row[k], get_task("depth").render(refs["DenseMTL"]["depth"]))
    # two models of one name: each keeps its own predictions (semseg: GT, first, second)
    same = qualitative_panels([("M", mtl), ("M", dense)], ds, [3])
    ref = {"M1": _reference(mtl, ds[3]["image"], (32, 48)), "M2": _reference(dense, ds[3]["image"], (32, 48))}
    assert [c for c in same["cells"] if c[0] == "normals"] == [("normals", "GT"), ("normals", "M")]
    for k, key in ((2, "M1"), (3, "M2")):
        np.testing.assert_array_equal(same["rows"][0][k], get_task("semseg").render(ref[key]["semseg"], num_classes=8, palette=pal))


@pytest.mark.slow
def test_figure_command_writes_the_grid_from_runs_and_a_converted_checkpoint(runs, synth_root, hoyer, tmp_path, capsys):  # noqa: F811
    folder = hoyer[0]
    conv = tmp_path / "hoyer.pt"
    assert main(["convert", "threeways", str(folder), "--out", str(conv)]) == 0
    out = tmp_path / "fig.png"
    assert main(["figure", str(runs[0]), str(runs[1]), str(conv), "--data", str(synth_root), "--images", "3",
                 "--size", "32x64", "--out", str(out)]) == 0
    msg = capsys.readouterr().out
    assert "3 image(s) of procedural/val" in msg and "models DenseMTL, MTL, DenseMTL (released)" in msg
    assert "tasks semseg, depth, normals, edges, disparity" in msg
    png = mpimg.imread(out)
    one = tmp_path / "one.png"
    assert main(["figure", str(runs[1]), "--data", str(synth_root), "--images", "1", "--size", "32x64", "--out", str(one)]) == 0
    png1 = mpimg.imread(one)
    # 3 rows of 1 + 4 x (GT + 2 or 1 models) + (GT + released) = 13 columns vs 1 row of 1 + 2 x 2 columns
    assert png.shape[0] > 2 * png1.shape[0] and png.shape[1] > 2 * png1.shape[1]
    assert png.std() > 0.05  # drawn panels, not an empty canvas


@pytest.mark.slow
def test_figure_errors_are_one_line(runs, synth_root, tmp_path, capsys):
    out = tmp_path / "f.png"
    assert main(["figure", str(runs[1]), "--data", str(synth_root), "--names", "a,b", "--out", str(out)]) == 2
    assert "--names: expected 1 non-empty comma-separated names" in capsys.readouterr().err
    assert main(["figure", str(runs[1]), "--data", str(synth_root), "--images", "0", "--out", str(out)]) == 2
    assert "the number of images must be >= 1, got 0" in capsys.readouterr().err
    assert main(["figure", str(runs[1]), "--data", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()


def test_figure_names_are_made_distinct_only_where_they_share_columns():
    from densemtl.cli.figure import unique_names

    paths = ["r/stl_s/checkpoints/best.pt", "r/stl_d/checkpoints/last.pt", "x/other.pt"]
    assert unique_names(["STL", "STL", "MTL"], paths, [["semseg"], ["depth"], ["semseg", "depth"]]) == ["STL", "STL", "MTL"]
    assert unique_names(["STL", "STL", "STL"], paths, [["semseg"], ["depth"], ["depth"]]) == ["STL", "STL (stl_d)", "STL (other)"]


def test_spread_indices_and_dataset_palette():
    assert spread_indices(10, 4) == [0, 3, 6, 9] and spread_indices(3, 8) == [0, 1, 2] and spread_indices(5, 1) == [0]
    pal = dataset_palette(["road", "floor", "sky", "vehicle"])
    assert pal.shape == (5, 3) and tuple(pal[0]) == (128, 64, 128) and tuple(pal[2]) == (70, 130, 180)
    assert tuple(pal[3]) == CITYSCAPES_COLOURS["car"] and tuple(pal[4]) == (0, 0, 0)
    assert tuple(pal[1]) == tuple(class_palette(4)[1])  # a class Cityscapes does not name
    ids = np.array([[0, 2], [255, 3]])
    np.testing.assert_array_equal(get_task("semseg").render(ids, num_classes=4, palette=pal), pal[[[0, 2], [4, 3]]])
    with pytest.raises(ValueError, match=r"a palette for 4 classes must be \(5, 3\)"):
        get_task("semseg").render(ids, num_classes=4, palette=pal[:4])
