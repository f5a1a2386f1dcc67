"""Metrics against independent computations, on real NYUv2 samples where available."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from densemtl.metrics import DepthMeter, EdgeMeter, NormalsMeter, SegmentationMeter, multitask_delta
from densemtl.tasks import directions, headlines


def test_delta_reproduces_paper():
    # Synthia S-D (Table 1): STL vs DenseMTL
    d = multitask_delta({"semseg": 80.53, "depth": 4.161}, {"semseg": 67.43, "depth": 5.379}, directions("SD"))
    assert d == pytest.approx(21.04, abs=0.02)
    # VKITTI2 S-D-N (Table 3): the paper prints +33.00 (mean over seeds)
    d = multitask_delta(
        {"semseg": {"mIoU": 97.53}, "depth": {"rmse": 3.089}, "normals": {"mean_angle": 14.44}},
        {"semseg": {"mIoU": 84.53}, "depth": {"rmse": 5.720}, "normals": {"mean_angle": 23.14}},
        directions("SDN"), headline=headlines("SDN"),
    )
    assert d == pytest.approx(32.99, abs=0.02)
    assert multitask_delta({"edges": 60.0}, {"edges": 50.0}, {"edges": True}) == pytest.approx(20.0)
    # the directions are the caller's: reversing one flips the sign of its term
    assert multitask_delta({"edges": 60.0}, {"edges": 50.0}, {"edges": False}) == pytest.approx(-20.0)
    with pytest.raises(KeyError, match="direction"):
        multitask_delta({"edges": 60.0}, {"edges": 50.0}, {"semseg": True}, tasks=["edges"])


def _perturb_labels(lab, seed):
    rng = np.random.default_rng(seed)
    out = np.roll(lab, shift=(3, -5), axis=(0, 1)).copy()
    noise = rng.random(lab.shape) < 0.1
    out[noise] = rng.integers(0, 40, noise.sum())
    return out


def _seg40(shared_data):
    files = sorted((shared_data / "nyuv2-real-samples/consolidated/seg40/test").glob("*.png"))
    assert len(files) >= 5
    labs = []
    for f in files:
        s = np.asarray(Image.open(f)).astype(np.int64)
        labs.append(np.where(s == 0, 255, s - 1))  # 1..40 -> 0..39, void -> 255
    return labs


@pytest.mark.slow
def test_miou_and_accuracy_match_torchmetrics_on_real_nyuv2(shared_data):
    tm = pytest.importorskip("torchmetrics.classification")
    labs = _seg40(shared_data)
    meter = SegmentationMeter(40)
    jac = tm.MulticlassJaccardIndex(num_classes=40, average=None, ignore_index=255, validate_args=False)
    acc = tm.MulticlassAccuracy(num_classes=40, average="micro", ignore_index=255, validate_args=False)
    present = np.zeros(40, bool)
    for i, lab in enumerate(labs):
        pred = _perturb_labels(np.where(lab == 255, 0, lab), i)
        p, g = torch.from_numpy(pred)[None], torch.from_numpy(lab)[None]
        meter.update(p, g)
        jac.update(p, g)
        acc.update(p, g)
        valid = lab != 255
        present[np.unique(lab[valid])] = True
        present[np.unique(pred[valid])] = True
    ours = meter.compute()
    ref_iou = jac.compute().numpy() * 100
    assert np.allclose([ours[f"IoU_{c}"] for c in np.flatnonzero(present)], ref_iou[present], atol=1e-4)
    assert ours["mIoU"] == pytest.approx(float(ref_iou[present].mean()), abs=1e-4)
    assert ours["pixel_acc"] == pytest.approx(float(acc.compute()) * 100, abs=1e-4)
    assert 10 < ours["mIoU"] < 95


def test_segmentation_meter_errors_and_merge():
    m = SegmentationMeter(3)
    with pytest.raises(ValueError, match=r"class id\(s\) \[7\]"):
        m.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([[[0, 7], [1, 2]]]))
    a, b, both = SegmentationMeter(3), SegmentationMeter(3), SegmentationMeter(3)
    x1, y1 = torch.tensor([[[0, 1], [2, 2]]]), torch.tensor([[[0, 1], [1, 2]]])
    x2, y2 = torch.tensor([[[1, 1], [0, 2]]]), torch.tensor([[[1, 0], [0, 255]]])
    a.update(x1, y1), b.update(x2, y2), both.update(x1, y1), both.update(x2, y2)
    assert a.merge(b).compute() == both.compute()


def _read_depth(path):
    return np.asarray(Image.open(path)).astype(np.float64) / 1000.0


def test_depth_metrics_match_numpy_on_real_nyuv2(shared_data):
    files = sorted((shared_data / "nyuv2-real-samples/consolidated/depth/test").glob("*.png"))
    assert len(files) == 6
    rng = np.random.default_rng(0)
    meter = DepthMeter(1e-3, 10.0)
    per_image_mse, pooled = [], {"sq": [], "abs_rel": [], "sq_rel": [], "log": [], "r": []}
    for f in files:
        gt = _read_depth(f)
        pred = gt * rng.uniform(0.8, 1.25, gt.shape) + rng.normal(0, 0.05, gt.shape)
        pred[gt == 0] = rng.uniform(0, 20, (gt == 0).sum())  # holes: anything
        meter.update(torch.from_numpy(pred)[None, None].float(), torch.from_numpy(gt)[None, None].float())
        p, g = np.clip(pred.astype(np.float32).astype(np.float64), 1e-3, 10.0), gt.astype(np.float32).astype(np.float64)
        v = (g > 1e-3) & (g <= 10.0)
        p, g = p[v], g[v]
        per_image_mse.append(np.mean((p - g) ** 2))
        pooled["sq"].append((p - g) ** 2)
        pooled["abs_rel"].append(np.abs(p - g) / g)
        pooled["sq_rel"].append((p - g) ** 2 / g)
        pooled["log"].append((np.log(p) - np.log(g)) ** 2)
        pooled["r"].append(np.maximum(p / g, g / p))
    cat = {k: np.concatenate(v) for k, v in pooled.items()}
    ours = meter.compute()
    assert ours["rmse"] == pytest.approx(math.sqrt(np.mean(per_image_mse)), rel=1e-6)
    assert ours["rmse_pixel"] == pytest.approx(math.sqrt(cat["sq"].mean()), rel=1e-6)
    assert ours["rmse"] != pytest.approx(ours["rmse_pixel"], rel=1e-4)  # the two protocols differ
    assert ours["abs_rel"] == pytest.approx(cat["abs_rel"].mean(), rel=1e-6)
    assert ours["sq_rel"] == pytest.approx(cat["sq_rel"].mean(), rel=1e-6)
    assert ours["rmse_log"] == pytest.approx(math.sqrt(cat["log"].mean()), rel=1e-6)
    for k in (1, 2, 3):
        assert ours[f"delta{k}"] == pytest.approx((cat["r"] < 1.25**k).mean() * 100, rel=1e-6)


def _read_normals(path):
    raw = np.asarray(Image.open(path)).astype(np.float64)
    n = raw / 127.5 - 1
    n[(raw == 127).all(-1)] = 0  # invalid border
    return n.transpose(2, 0, 1)


def test_depth_meter_names_images_predicted_out_of_range_and_evaluation_warns():
    """A blown-up depth map (whole image far outside the range) is clamped into the range, so
    the metrics stay finite; diagnostics() and the evaluation loop must say so."""
    from densemtl.engine.evaluate import evaluate_all
    from densemtl.tasks.depth import depth_to_code

    gt = torch.full((3, 1, 4, 4), 2.0)
    gt[2, 0, 0, 0] = 0.0  # one invalid pixel: 15 valid in image 2
    pred = torch.full((3, 1, 4, 4), 2.0)
    pred[1] = 50.0  # every pixel of image 1 beyond max_depth
    pred[2, 0, :2] = 50.0  # 7 of image 2's 15 valid pixels: less than half
    meter = DepthMeter(1e-3, 10.0)
    meter.update(pred[:2], gt[:2])
    other = DepthMeter(1e-3, 10.0)
    other.update(pred[2:], gt[2:])
    meter.merge(other)
    lines = meter.diagnostics()
    assert len(lines) == 1 and "1 of 3 images has more than half" in lines[0]
    assert "[0.001, 10] m" in lines[0] and "(23 pixels in all" in lines[0]
    # the metrics themselves are the clamped ones (independent numpy computation)
    p = np.clip(pred.numpy(), 1e-3, 10.0)
    g = gt.numpy()
    mse = [np.mean((p[b][g[b] > 0] - g[b][g[b] > 0]) ** 2) for b in range(3)]
    assert math.isclose(meter.compute()["rmse"], math.sqrt(np.mean(mse)), rel_tol=1e-9)
    clean = DepthMeter(1e-3, 10.0)
    clean.update(pred[2:], gt[2:])
    assert clean.diagnostics() == []

    class Net(torch.nn.Module):  # outputs the code of `pred` for each image of the batch
        eval_scale, supervised_scales = 0, (0,)

        def forward(self, x):
            return {"depth": {0: depth_to_code(pred[x[:, 0, 0, 0].long()])}}

    batches = [{"image": torch.arange(3.0).view(3, 1, 1, 1).expand(3, 3, 4, 4), "labels": {"depth": gt}, "id": ["a", "b", "c"]}]
    with pytest.warns(UserWarning, match=r"evaluation: depth: 1 of 3 images has more than half"):
        out = evaluate_all(Net(), batches, ["depth"], {"min_depth": 1e-3, "max_depth": 10.0}, torch.device("cpu"))
    assert math.isclose(out["standard"][0]["depth"]["rmse"], math.sqrt(np.mean(mse)), rel_tol=1e-6)


def test_normal_metrics_match_numpy_on_real_nyuv2(shared_data):
    gt = _read_normals(shared_data / "nyuv2-real-samples/consolidated/normal/test/00433.png")
    rng = np.random.default_rng(1)
    pred = gt + rng.normal(0, 0.3, gt.shape)
    meter = NormalsMeter()
    meter.update(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None])
    valid = np.linalg.norm(gt, axis=0) > 0
    assert 0.5 < valid.mean() < 1.0
    a = pred / np.linalg.norm(pred, axis=0, keepdims=True)
    b = gt / np.maximum(np.linalg.norm(gt, axis=0, keepdims=True), 1e-12)
    ang = np.degrees(np.arccos(np.clip((a * b).sum(0), -1, 1)))[valid]
    ours = meter.compute()
    assert ours["mean_angle"] == pytest.approx(ang.mean(), rel=1e-9)
    assert ours["median_angle"] == pytest.approx(np.median(ang), abs=0.011)
    assert ours["rmse_angle"] == pytest.approx(np.sqrt((ang**2).mean()), rel=1e-9)
    for t in (11.25, 22.5, 30):
        assert ours[f"within_{t:g}"] == pytest.approx((ang < t).mean() * 100, rel=1e-9)


def test_nan_in_metrics_raises_naming_task():
    p = torch.ones(1, 1, 4, 4)
    p[0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="task 'depth'"):
        DepthMeter().update(p, torch.ones(1, 1, 4, 4))
    with pytest.raises(FloatingPointError, match="task 'normals'"):
        NormalsMeter().update(torch.full((1, 3, 2, 2), float("inf")), torch.ones(1, 3, 2, 2))
    with pytest.raises(FloatingPointError, match="task 'edges'"):
        EdgeMeter(boundary=False).update(p, torch.ones(1, 1, 4, 4))


def _square_edges(h=64, w=80, top=16, left=20, size=30):
    e = np.zeros((h, w), np.float32)
    e[top, left:left + size] = e[top + size, left:left + size + 1] = 1
    e[top:top + size, left] = e[top:top + size, left + size] = 1
    return e


def test_ods_ois_perfect_shifted_and_empty():
    gt = torch.from_numpy(_square_edges())[None, None]
    perfect = EdgeMeter()
    perfect.update(gt.clone(), gt)
    r = perfect.compute()
    assert r["odsF"] == pytest.approx(100.0) and r["oisF"] == pytest.approx(100.0) and r["f1"] == pytest.approx(100.0)
    shifted = EdgeMeter()
    shifted.update(torch.roll(gt, 1, dims=-1), gt)
    r = shifted.compute()
    assert r["odsF"] > 99.0 and r["oisF"] > 99.0
    assert r["f1"] < 60  # pixel-exact F1 has no tolerance
    far = EdgeMeter()
    far.update(torch.roll(gt, 8, dims=-1), gt)  # 8 px > 0.011 * diag (1.13 px)
    assert far.compute()["odsF"] < 60
    empty = EdgeMeter()
    empty.update(torch.zeros_like(gt), gt)
    r = empty.compute()
    assert r["odsF"] == 0.0 and r["oisF"] == 0.0 and r["f1"] == 0.0


def test_boundary_matching_is_one_to_one():
    from densemtl.tasks.boundary import match_count

    gt = np.zeros((10, 10), bool)
    gt[5, 5] = True
    pred = np.zeros((10, 10), bool)
    pred[5, 4] = pred[5, 6] = True  # two predictions, one GT pixel: one match only
    assert match_count(pred, gt, 1.5) == 1
    assert match_count(pred, gt, 0.5) == 0
