"""Table 6 as the released code ran it: the adversarial loss as lambda x the mean over the
(task, scale) pairs, the min-max depth map from the source batch's labels, the unit normals
map, the discriminators' random horizontal flip, median-scaled depth metrics."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_config

from densemtl.config import config_from_dict
from densemtl.data.synth import generate_dataset
from densemtl.engine import Trainer
from densemtl.engine.report import domain_setting
from densemtl.tasks import get_task
from densemtl.uda import AdversarialAlignment, PatchDiscriminator


def _codes(depth: np.ndarray) -> np.ndarray:
    return 655.36 / (depth + 0.01)


def _median(x: np.ndarray) -> float:
    """The lower median (torch.median's convention for an even count)."""
    return float(np.sort(x)[(len(x) - 1) // 2])


def test_minmax_depth_map_matches_numpy():
    g = torch.Generator().manual_seed(0)
    label = torch.rand(2, 1, 8, 8, generator=g) * 50 + 0.5
    label[0, 0, 0, :3] = 0  # invalid pixels take no part in the range
    label[1, 0, 5, 5] = 0.2  # the nearest valid pixel: the largest code
    code = torch.randn(2, 1, 8, 8, generator=g) * 100 + 60  # some codes < 0 (relu -> 0)
    depth = get_task("depth")
    opts = depth.alignment_options(label, mode="minmax")
    got = depth.alignment_map(code, mode="minmax", **opts)
    d = label.numpy()
    lo, hi = _codes(d[d > 0]).min(), _codes(d[d > 0]).max()
    assert hi == pytest.approx(_codes(np.float32(0.2)))
    ref = (np.maximum(code.numpy(), 0) - lo) / (hi - lo)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-6)
    assert got.min() < 0  # not clamped: a prediction farther than the farthest label maps below 0
    # the ratio map takes nothing from the labels; minmax without a range is refused
    assert depth.alignment_options(label) == {}
    with pytest.raises(ValueError, match="code range"):
        depth.alignment_map(code, mode="minmax")
    with pytest.raises(ValueError, match="unknown depth map 'nope'"):
        depth.alignment_map(code, mode="nope")
    # a batch without valid depth: the codes of the dataset's depth range
    lo2, hi2 = depth.alignment_options(torch.zeros(1, 1, 4, 4), mode="minmax", min_depth=1.0, max_depth=80.0)["code_range"]
    assert (float(lo2), float(hi2)) == pytest.approx((655.36 / 80.01, 655.36 / 1.01))


def test_unit_normals_map():
    pred = torch.randn(2, 3, 5, 6)
    n = pred.numpy() / np.linalg.norm(pred.numpy(), axis=1, keepdims=True)
    task = get_task("normals")
    np.testing.assert_allclose(task.alignment_map(pred, mode="unit").numpy(), n, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(task.alignment_map(pred).numpy(), (n + 1) / 2, rtol=1e-5, atol=1e-6)  # default: shifted


def _outputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"semseg": {0: torch.randn(2, 5, 64, 64, generator=g), 1: torch.randn(2, 5, 32, 32, generator=g)},
            "depth": {0: torch.randn(2, 1, 64, 64, generator=g) * 30 + 60, 1: torch.randn(2, 1, 32, 32, generator=g) * 30 + 60}}


def _alignment(**kw):
    torch.manual_seed(0)
    al = AdversarialAlignment(("semseg", "depth"), (0, 1), 5, weight=0.005, **kw)
    al.critic.eval()  # spectral norm without its power iteration: the same logits at every call
    return al


@pytest.mark.slow
def test_adversarial_loss_is_weight_times_mean_over_pairs_with_source_depth_range():
    outputs = _outputs()
    label = torch.rand(2, 1, 64, 64) * 40 + 2.0
    al_mean = _alignment(reduction="mean", depth_map="minmax")
    al_sum = _alignment(reduction="sum", depth_map="minmax")
    al_sum.critic.load_state_dict(al_mean.critic.state_dict())
    opts = al_mean.source_options({"depth": label, "semseg": torch.zeros(2, 64, 64, dtype=torch.long)})
    assert set(opts) == {"depth"}  # only the depth map takes statistics of the source labels
    total_mean, info = al_mean.generator_loss(outputs, (64, 64), opts)
    total_sum, _ = al_sum.generator_loss(outputs, (64, 64), opts)
    # independent computation: upsample, map, discriminate, BCE against "source" (0) = mean softplus
    lo, hi = _codes(label.numpy()).min(), _codes(label.numpy()).max()
    ref = []
    for key, disc in al_mean.critic.discriminators.items():
        t, s = key.split("/")
        p = F.interpolate(outputs[t][int(s)], size=(64, 64), mode="bilinear", align_corners=False)
        if t == "semseg":
            prob = p.softmax(1)
            m = -prob * prob.log() / np.log(5)
        else:
            m = (p.clamp_min(0) - float(lo)) / float(hi - lo)
        with torch.no_grad():
            ref.append(float(F.softplus(disc(m)).mean()))
    assert len(ref) == 4
    assert float(total_mean) == pytest.approx(0.005 * np.mean(ref), rel=1e-5)
    assert float(total_sum) == pytest.approx(0.005 * np.sum(ref), rel=1e-5)
    assert sorted(info.values()) == pytest.approx(sorted(ref), rel=1e-5)
    with pytest.raises(ValueError, match="uda.reduction"):
        AdversarialAlignment(("depth",), (0,), None, reduction="median")


@pytest.mark.slow
def test_discriminator_flips_its_input_half_of_the_time_in_training():
    torch.manual_seed(0)
    disc = PatchDiscriminator(3, spectral=False, flip=True).train()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        plain, mirrored = disc.layers(x), disc.layers(x.flip(-1))
    assert not torch.allclose(plain, mirrored)
    flips = []
    with torch.no_grad():
        for _ in range(40):
            y = disc(x)
            assert torch.allclose(y, plain) or torch.allclose(y, mirrored)
            flips.append(not torch.allclose(y, plain))
    assert 10 <= sum(flips) <= 30  # p = 0.5 per call (whole batch)
    disc.eval()
    with torch.no_grad():
        assert all(torch.allclose(disc(x), plain) for _ in range(8))
    plain_disc = PatchDiscriminator(3, spectral=False).train()
    plain_disc.load_state_dict(disc.state_dict())
    with torch.no_grad():
        assert all(torch.allclose(plain_disc(x), plain) for _ in range(8))
    # the model's gradient flows through the mirroring
    xg = x.clone().requires_grad_(True)
    disc.train()
    for _ in range(4):
        disc(xg).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    assert all(d.flip for d in AdversarialAlignment(("depth",), (0, 1), None, flip=True).critic.discriminators.values())
    assert not any(d.flip for d in AdversarialAlignment(("depth",), (0, 1), None).critic.discriminators.values())


def test_depth_meter_median_scaling_matches_numpy():
    g = torch.Generator().manual_seed(1)
    gt = torch.rand(3, 1, 6, 7, generator=g) * 30 + 1
    gt[0, 0, 0] = 0  # invalid
    pred = gt * torch.tensor([2.0, 0.5, 3.0]).view(3, 1, 1, 1) + torch.rand(3, 1, 6, 7, generator=g)
    m = get_task("depth").meter(median_scaling=True)
    m.update(pred, gt)
    got = m.compute()
    p, d = pred.numpy().reshape(3, -1).astype(np.float64), gt.numpy().reshape(3, -1).astype(np.float64)
    mse = []
    for b in range(3):
        v = (d[b] > 1e-3) & (d[b] <= 80)
        q = np.clip(p[b][v] * _median(d[b][v]) / _median(p[b][v]), 1e-3, 80)
        mse.append(np.mean((q - d[b][v]) ** 2))
    assert got["rmse"] == pytest.approx(np.sqrt(np.mean(mse)), rel=1e-6)
    plain = get_task("depth").meter()
    plain.update(pred, gt)
    assert plain.compute()["rmse"] > 5 * got["rmse"]  # without scaling the 2x / 3x scale errors dominate


def test_median_scaled_runs_are_their_own_protocol_in_tables():
    cfg = {"data": {"dataset": "synthia"}, "uda": {"target": {"dataset": "cityscapes"}, "adversarial": True}}
    assert domain_setting(cfg) == ("synthia→cityscapes", "UDA")
    assert domain_setting({**cfg, "eval": {"depth_median_scaling": True}}) == ("synthia→cityscapes [depth median-scaled]", "UDA")


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    root = tmp_path_factory.mktemp("uda_recipe")
    src = generate_dataset(root / "src", num=8, size=(64, 64), seed=0, workers=1, progress=False)
    tgt = generate_dataset(root / "tgt", num=8, size=(64, 64), seed=1, style="shifted", workers=1, progress=False)
    return src, tgt


@pytest.mark.slow
def test_released_recipe_trains_and_evaluates_median_scaled(domains, tmp_path):
    src, tgt = domains
    cfg = tiny_config(src, tmp_path, **{
        "uda.target": {"dataset": "procedural", "root": str(tgt), "limit_val": 4}, "uda.adversarial": True,
        "uda.reduction": "mean", "uda.depth_map": "minmax", "uda.normals_map": "unit", "uda.flip": True,
        "eval.depth_median_scaling": True, "train.eval_every": 2, "schedule.iterations": 2, "data.train_split": "all"})
    tr = Trainer(config_from_dict(cfg), run_dir=tmp_path / "run")
    assert len(tr.train_set) == 8  # the source's whole set
    tr.train()
    logs = [json.loads(s) for s in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    train = [r for r in logs if r["type"] == "train"]
    assert len(train) == 2
    for r in train:  # the logged adversarial loss is 0.005 x the mean of the four (task, scale) losses
        pairs = [v for k, v in r.items() if k.startswith("adv/")]
        assert len(pairs) == 4 and r["loss/adversarial"] == pytest.approx(0.005 * np.mean(pairs), rel=1e-5)
    # evaluation (on the target) median-scales the depth: compare with NumPy on the model's predictions
    assert tr.meter_options["median_scaling"] is True
    got = tr.evaluate()["depth"]["rmse"]
    tr.model.eval()
    mse = []
    with torch.no_grad():
        for batch in tr.val_loader:
            pred = get_task("depth").decode(tr.model.predict(batch["image"])["depth"]).numpy().astype(np.float64)
            gt = batch["labels"]["depth"].numpy().astype(np.float64)
            for p, d in zip(pred.reshape(len(pred), -1), gt.reshape(len(gt), -1)):
                v = (d > 1e-3) & (d <= 80)
                q = np.clip(p[v] * _median(d[v]) / _median(p[v]), 1e-3, 80)
                mse.append(np.mean((q - d[v]) ** 2))
    assert got == pytest.approx(np.sqrt(np.mean(mse)), rel=1e-5)
