"""Every supervised output scale is evaluated and recorded (``s<k>/task/metric``), model
selection on ``train.select_scale``, ``densemtl eval`` at every scale."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_config

from densemtl.cli.main import main
from densemtl.config import ConfigError, config_from_dict
from densemtl.engine import Trainer


def _evals(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]


def _miou_numpy(model, loader, scale, num_classes):
    """mIoU (classes present in the labels or the predictions) of ``scale``'s output, upsampled
    bilinearly to the label size, from a NumPy confusion matrix."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    model.eval()
    with torch.no_grad():
        for batch in loader:
            logits = model(batch["image"])["semseg"][scale]
            label = batch["labels"]["semseg"].numpy()
            pred = F.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False).argmax(1).numpy()
            ok = label != 255
            cm += np.bincount(label[ok] * num_classes + pred[ok], minlength=num_classes**2).reshape(num_classes, num_classes)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    return float(np.mean(tp[union > 0] / union[union > 0]) * 100)


def _rmse_numpy(model, loader, scale, min_depth, max_depth):
    """Depth RMSE = sqrt(mean over images of the per-image MSE over valid pixels) of ``scale``'s
    inverse-depth code, upsampled bilinearly and decoded ``655.36 / z - 0.01``."""
    mses = []
    model.eval()
    with torch.no_grad():
        for batch in loader:
            code = F.interpolate(model(batch["image"])["depth"][scale], size=batch["labels"]["depth"].shape[-2:],
                                 mode="bilinear", align_corners=False).numpy()[:, 0].astype(np.float64)
            pred = np.clip(655.36 / np.maximum(code, 1e-3) - 0.01, min_depth, max_depth)
            gt = batch["labels"]["depth"].numpy().reshape(pred.shape).astype(np.float64)
            for p, g in zip(pred, gt):
                ok = (g > min_depth) & (g <= max_depth)
                if ok.any():
                    mses.append(np.mean((p[ok] - g[ok]) ** 2))
    return float(np.sqrt(np.mean(mses)))


@pytest.mark.slow
def test_every_scale_is_recorded_and_selection_uses_select_scale(synth_root, tmp_path, capsys):
    over = {"tasks": "SD", "schedule.iterations": 2, "train.eval_every": 2, "train.select_metric": "semseg/mIoU"}
    tr = Trainer(config_from_dict(tiny_config(synth_root, tmp_path, **over, **{"train.select_scale": 1})))
    tr.train()
    run = tmp_path / "t" / "r"
    (rec,) = _evals(run)
    assert tr.model.supervised_scales == (0, 1) and rec["eval_scale"] == 0 and rec["select_scale"] == 1
    for t, m in (("semseg", "mIoU"), ("depth", "rmse")):
        assert f"{t}/{m}" in rec and f"s1/{t}/{m}" in rec
    assert not any(k.startswith("s0/") for k in rec)
    # scale 0 and scale 1 are the two outputs of the final model, computed independently here
    n = tr.num_classes
    assert rec["semseg/mIoU"] == pytest.approx(_miou_numpy(tr.model, tr.val_loader, 0, n), abs=1e-4)
    assert rec["s1/semseg/mIoU"] == pytest.approx(_miou_numpy(tr.model, tr.val_loader, 1, n), abs=1e-4)
    lo, hi = tr.meter_options["min_depth"], tr.meter_options["max_depth"]
    assert rec["depth/rmse"] == pytest.approx(_rmse_numpy(tr.model, tr.val_loader, 0, lo, hi), rel=1e-5)
    assert rec["s1/depth/rmse"] == pytest.approx(_rmse_numpy(tr.model, tr.val_loader, 1, lo, hi), rel=1e-5)
    assert rec["s1/depth/rmse"] != rec["depth/rmse"]
    assert rec["score"] == rec["s1/semseg/mIoU"]  # selection on scale 1's meter
    # `densemtl eval` reports every scale (the evaluation scale first) and writes them to JSON
    capsys.readouterr()
    assert main(["eval", str(run), "--no-boundary", "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert out.index(" scale 0 (evaluation scale)") < out.index(" scale 1")
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["scales"]["1"]["semseg"]["mIoU"] == pytest.approx(rec["s1/semseg/mIoU"], abs=1e-4)
    assert m["metrics"] == m["scales"]["0"] and m["eval_scale"] == 0


@pytest.mark.slow
def test_selection_stays_on_the_evaluation_scale_and_all_scales_can_be_off(synth_root, tmp_path):
    over = {"tasks": "SD", "schedule.iterations": 2, "train.eval_every": 2, "train.select_metric": "semseg/mIoU"}
    Trainer(config_from_dict(tiny_config(synth_root, tmp_path, **over))).train()
    (rec,) = _evals(tmp_path / "t" / "r")
    assert rec["score"] == rec["semseg/mIoU"] and "s1/semseg/mIoU" in rec and "select_scale" not in rec
    Trainer(config_from_dict(tiny_config(synth_root, tmp_path, **over, **{"run_name": "one", "eval.all_scales": False}))).train()
    (rec,) = _evals(tmp_path / "t" / "one")
    assert "semseg/mIoU" in rec and not any(k.startswith("s1/") for k in rec)


def test_select_scale_must_be_an_output_of_the_model(synth_root, tmp_path):
    cfg = tiny_config(synth_root, tmp_path, **{"model.name": "mtl", "train.select_scale": 1})
    with pytest.raises(ConfigError, match=r"train.select_scale: model mtl has the output scales \[0\]; got 1"):
        Trainer(config_from_dict(cfg))
