"""`densemtl demo` (what `make demo` runs) end to end at a tiny size: the one-seed study from a
shared encoder, its table, CSV, figure and learning-curve plots."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from densemtl.cli.main import main
from densemtl.study import results

TINY = ["--iterations", "2", "--num-images", "16", "--pretrain-iterations", "2", "--size", "48x32", "--batch-size", "2"]


@pytest.mark.slow
def test_demo_trains_every_method_from_one_encoder_and_reports(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *TINY]) == 0  # the default methods: stl, mtl, densemtl
    printed = capsys.readouterr().out
    rows = results.read_rows(out / "demo.csv")
    assert sorted((r["method"], r["tasks"]) for r in rows) == [("densemtl", "SD"), ("mtl", "SD"), ("stl", "D"), ("stl", "S")]
    assert all(r["setting"] == "pretrained" and r["iterations"] == 2 and r["images_seen"] == 4 for r in rows)
    table = (out / "table.md").read_text()
    for label in ("STL", "MTL", "DenseMTL"):
        assert f"| {label} |" in table and f"| {label} |" in printed
    assert "3-ways PAD-Net" not in table  # not asked for
    assert "[demo] Δ S-D vs STL after 4 images" in printed and "from one shared encoder" in printed
    # every method started from the same pretrained encoder (one cached pretraining)
    assert len(list((out / "work" / "pretrain").glob("*/checkpoints/last.pt"))) == 1
    fig = np.asarray(Image.open(out / "figure.png").convert("RGB"))
    assert fig.ndim == 3 and fig.shape[0] > 32 and fig.shape[1] > 48 and fig.std() > 1  # not blank
    assert any((out / "demo_plots").glob("*delta.png"))
    # --reuse: the finished runs are not retrained (their rows stay as they are)
    before = (out / "demo.csv").read_text()
    assert main(["demo", "--out", str(out), "--methods", "stl,mtl,densemtl", "--reuse", *TINY]) == 0
    assert (out / "demo.csv").read_text() == before


def test_demo_refuses_an_unknown_method_in_one_line(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--methods", "stl,nope", *TINY]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'nope'" in err and "Traceback" not in err
