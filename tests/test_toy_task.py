"""A fifth task added from outside the package: one registered object, then train, evaluate
and tabulate it with the existing models, trainer and report (docs/architecture.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from densemtl.cli.main import main
from densemtl.config import config_from_dict
from densemtl.engine import Trainer
from densemtl.tasks import Meter, Task, get_task, register_task, unregister_task
from helpers import tiny_config


class PSNRMeter(Meter):
    """PSNR over the split (pooled squared error), for images in [0, 1]."""

    task = "gray"

    def _init_state(self):
        return {"sq": torch.zeros((), dtype=torch.float64), "n": torch.zeros((), dtype=torch.float64)}

    def update(self, pred, label):
        self._check(prediction=pred, label=label)
        self.state["sq"] += (pred.double() - label.double()).square().sum().cpu()
        self.state["n"] += float(label.numel())

    def compute(self):
        mse = float(self.state["sq"] / self.state["n"])
        return {"psnr": 10 * math.log10(1 / mse) if mse > 0 else float("inf"), "mse": mse}


class Grayscale(Task):
    """Reconstruct the luminance of the input: derived from the image, L1 loss, PSNR."""

    name, letter = "gray", "G"
    channels = 1
    higher_is_better, headline_metric = True, "psnr"
    lower_is_better = frozenset({"mse"})
    column = "PSNR dB"
    label_format = "(B, 1, H, W) float luminance in [0, 1]"

    def derive(self, labels, image, K, **_):
        return (image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.float32)

    def loss(self, pred, label):
        return (pred - label).abs().mean()

    def valid_mask(self, label):
        return torch.ones(label.shape[0], *label.shape[-2:], dtype=torch.bool, device=label.device)

    def decode(self, pred):
        return pred.clamp(0, 1)

    def meter(self, **_):
        return PSNRMeter()

    def render(self, value, **_):
        g = np.asarray(value, dtype=np.float64).squeeze()
        return np.repeat((np.clip(g, 0, 1) * 255).round().astype(np.uint8)[..., None], 3, -1)


@pytest.fixture
def gray_task():
    task = register_task(Grayscale())
    yield task
    unregister_task("gray")


@pytest.mark.slow
def test_a_registered_task_trains_evaluates_and_shows_in_the_table(gray_task, synth_root, tmp_path, capsys):
    assert get_task("gray") is gray_task
    runs = []
    for model in ("mtl", "densemtl", "stl"):
        tasks = "G" if model == "stl" else "SG"
        cfg = tiny_config(synth_root, tmp_path / "runs", **{
            "experiment": "toy", "run_name": model, "tasks": tasks, "model.name": model, "schedule.iterations": 2,
            "train.eval_every": 2, "loss.options": {"weights": {"semseg": 1.0, "gray": 1.0} if tasks == "SG" else {"gray": 1.0}}})
        best = Trainer(config_from_dict(cfg)).train()
        runs.append(best)
        assert math.isfinite(best["metrics"]["gray"]["psnr"]) and best["metrics"]["gray"]["mse"] > 0
    # the label is the image's luminance: check one against an independent computation
    from densemtl.data import create_dataset

    ds = create_dataset("procedural", synth_root, "val", "G", augment=False)
    s = ds[0]
    rgb = s["image"].numpy()
    assert np.allclose(s["labels"]["gray"][0].numpy(), 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2], atol=1e-6)
    # the report: a PSNR column with its direction, and Delta of the multi-task rows vs the STL row
    capsys.readouterr()
    assert main(["table", str(tmp_path / "runs"), "--csv", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert "gray PSNR dB ↑" in out and "| MTL (resnet18) |" in out and "| DenseMTL (resnet18) |" in out
    header = (tmp_path / "t.csv").read_text().splitlines()[0].split(",")
    assert "gray_psnr_mean" in header
