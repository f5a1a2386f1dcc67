"""The ``paper`` protocol (the authors' released evaluation, targets and losses) against
independent NumPy implementations written from its definition (docs/fidelity.md), on the real
samples and on synthetic inputs; the switch itself (config, datasets, eval, table)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from densemtl.data.geometry import release_intrinsics, scale_intrinsics
from densemtl.tasks import PAPER, STANDARD, get_protocol, get_task, list_protocols
from densemtl.tasks.depth import ReleaseDepthMeter, release_berhu, release_decode
from densemtl.tasks.edges import ReleaseEdgeMeter, edges_from_labels, release_edges_loss, release_resize_edges
from densemtl.tasks.geometry import normals_from_depth, release_normals, release_normals_mask
from densemtl.tasks.normals import ReleaseNormalsMeter, release_normals_loss

SRC = Path(__file__).resolve().parents[1] / "src" / "densemtl"


# --- NumPy references, written from the protocol's definition ------------------------------

def np_lower_median(x):
    s = np.sort(np.ravel(x))
    return s[(len(s) - 1) // 2]


def np_release_normals_metric(preds, gts, normalize):
    """Per image: (3, H, W) p and g; error = deg(2 atan2(norm over rows of p - g, of p + g)),
    a (3, W) array; mean / lower median / mean square / fractions, averaged over images."""
    rows = []
    for p, g in zip(preds, gts):
        p, g = p.astype(np.float64), g.astype(np.float64)
        if normalize:
            p = p / np.maximum(np.sqrt((p ** 2).sum(0, keepdims=True)), 1e-12)
        a = np.sqrt(((p - g) ** 2).sum(axis=1))
        b = np.sqrt(((p + g) ** 2).sum(axis=1))
        e = np.degrees(2 * np.arctan2(a, b)).ravel()
        assert e.shape == (3 * p.shape[2],)
        rows.append([e.mean(), np_lower_median(e), (e ** 2).mean(), (e < 11.25).mean(), (e < 22.5).mean(), (e < 30).mean()])
    r = np.mean(rows, 0)
    return {"mean_angle": r[0], "median_angle": r[1], "rmse_angle": math.sqrt(r[2]),
            "within_11.25": r[3] * 100, "within_22.5": r[4] * 100, "within_30": r[5] * 100}


def np_release_depth(pred_codes, depths, median_scaling=False):
    """Both decoded with 655.36 / z - 1 (the label first encoded z = 655.36 / (d + 0.01));
    mask valid and 1e-3 < decoded label < 80; prediction (median-scaled, then) clamped;
    per-image MSE, AbsRel, SqRel, deltas averaged over images; RMSE = sqrt(mean MSE)."""
    rows = []
    for z, d in zip(pred_codes, depths):
        z, d = np.asarray(z, np.float64), np.asarray(d, np.float64)
        valid = d > 0
        g = 655.36 / (655.36 / np.where(valid, d + 0.01, 1.0)) - 1
        p = 655.36 / z - 1
        m = valid & (g > 1e-3) & (g < 80)
        if not m.any():
            continue
        p, g = p[m], g[m]
        if median_scaling:
            p = p * np_lower_median(g) / np_lower_median(p)
        p = np.clip(p, 1e-3, 80)
        r = np.maximum(p / g, g / p)
        rows.append([((p - g) ** 2).mean(), (np.abs(p - g) / g).mean(), ((p - g) ** 2 / g).mean(),
                     (r < 1.25).mean(), (r < 1.25 ** 2).mean(), (r < 1.25 ** 3).mean()])
    m = np.mean(rows, 0)
    return {"rmse": math.sqrt(m[0]), "abs_rel": m[1], "sq_rel": m[2], "delta1": m[3] * 100, "delta2": m[4] * 100,
            "delta3": m[5] * 100}


def np_release_edges_f1(probs, labels):
    """Edge = probability > 0.5; one 2x2 confusion over the split; F1 = mean over the two
    classes of 2 TP / (predicted + actual)."""
    cm = np.zeros((2, 2))
    for p, g in zip(probs, labels):
        v = g != 255
        pred, gt = (p[v] > 0.5).astype(int), (g[v] == 1).astype(int)
        for a in (0, 1):
            for b in (0, 1):
                cm[a, b] += ((gt == a) & (pred == b)).sum()
    f1 = [2 * cm[c, c] / (cm[c, :].sum() + cm[:, c].sum()) for c in (0, 1)]
    return float(np.mean(f1) * 100), f1


def np_release_target(code, K):
    """P = code K^-1 (u, v, 1); four bases of (dw, dh) neighbour offsets, taken cyclically;
    sum of the cross products, normalised, z made non-negative."""
    h, w = code.shape
    ys, xs = np.mgrid[0:h, 0:w]
    pix = np.stack([xs, ys, np.ones_like(xs)], 0).reshape(3, -1).astype(np.float64)
    P = (np.linalg.inv(K) @ pix).reshape(3, h, w) * code

    def nb(dw, dh):
        return P[:, (ys + dh) % h, (xs + dw) % w] - P

    n = np.zeros_like(P)
    for (w1, h1), (w0, h0) in [((1, 0), (0, -1)), ((-1, 0), (0, 1)), ((1, 1), (1, -1)), ((-1, -1), (-1, 1))]:
        n += np.cross(nb(w1, h1), nb(w0, h0), axis=0)
    n = n / np.maximum(np.sqrt((n ** 2).sum(0)), 1e-12)
    n[2] = np.abs(n[2])
    return n.transpose(1, 2, 0)


def np_release_mask(valid):
    """1-pixel border removed, then a pixel is kept if its whole 3x3 window (inside the image) is."""
    m = valid.copy()
    m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = False
    h, w = m.shape
    out = np.zeros_like(m)
    for y in range(h):
        for x in range(w):
            out[y, x] = m[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].all()
    return out


def np_bilinear_half_pixel(a, size):
    """Bilinear resize with half-pixel centres (src = (dst + 0.5) * in / out - 0.5, clamped)."""
    def axis(n_in, n_out):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, None)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    y0, y1, fy = axis(a.shape[0], size[0])
    x0, x1, fx = axis(a.shape[1], size[1])
    top = a[y0][:, x0] * (1 - fx) + a[y0][:, x1] * fx
    bot = a[y1][:, x0] * (1 - fx) + a[y1][:, x1] * fx
    return top * (1 - fy[:, None]) + bot * fy[:, None]


# --- real samples -------------------------------------------------------------------------

def _nyud_depths(shared_data):
    files = sorted((shared_data / "nyuv2-real-samples/consolidated/depth/test").glob("*.png"))
    assert len(files) == 6
    return [np.asarray(Image.open(f)).astype(np.float64) / 1000.0 for f in files]


def _nyud_normals_433(shared_data):
    raw = np.asarray(Image.open(shared_data / "nyuv2-real-samples/consolidated/normal/test/00433.png")).astype(np.float64)
    return (raw / 127.5 - 1).transpose(2, 0, 1)  # no invalid value under the paper protocol


def _nyud_seg40(shared_data):
    return [np.asarray(Image.open(f)) for f in sorted((shared_data / "nyuv2-real-samples/consolidated/seg40/test").glob("*.png"))]


# --- the registry --------------------------------------------------------------------------

def test_protocols_are_registered_objects_and_standard_is_the_registered_tasks():
    assert list_protocols()[:2] == ["standard", "paper"]
    assert get_protocol("paper") is PAPER and get_protocol(PAPER) is PAPER
    for t in ("semseg", "depth", "normals", "edges", "disparity"):
        assert STANDARD.task(t) is get_task(t)
    assert sorted(PAPER.variants) == ["depth", "edges", "normals"]
    assert PAPER.task("semseg") is get_task("semseg")  # segmentation: the same definition
    x = torch.randn(2, 3, 5, 7)
    assert torch.equal(STANDARD.resize(x, (10, 14)), F.interpolate(x, (10, 14), mode="bilinear", align_corners=False))
    assert torch.equal(PAPER.resize(x, (10, 14)), F.interpolate(x, (10, 14), mode="bilinear", align_corners=True))
    with pytest.raises(KeyError, match="unknown protocol 'authors'; known protocols: standard, paper"):
        get_protocol("authors")


def test_no_protocol_name_is_compared_in_the_library():
    """The protocol is chosen through its object, never by comparing its name."""
    pattern = re.compile(r"""[=!]=\s*["'](paper|standard)["']|["'](paper|standard)["']\s*[=!]=""")
    hits = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1)
            if pattern.search(line)]
    assert hits == []


# --- metrics -------------------------------------------------------------------------------

def test_release_normals_metric_matches_numpy_on_real_nyuv2(shared_data):
    """NYUDv2 branch: prediction and target unit-normalised; every entry counts (no mask)."""
    g = _nyud_normals_433(shared_data)
    g = g / np.linalg.norm(g, axis=0, keepdims=True)
    rng = np.random.default_rng(0)
    preds = [g * 2.5 + rng.normal(0, 0.4, g.shape), np.roll(g, 7, axis=2) * 0.3 + rng.normal(0, 0.1, g.shape)]
    gts = [g, g]
    meter = ReleaseNormalsMeter(normalize_prediction=True)
    for p, t in zip(preds, gts):
        meter.update(torch.from_numpy(p)[None], torch.from_numpy(t)[None])
    ours, ref = meter.compute(), np_release_normals_metric(preds, gts, normalize=True)
    for k, v in ref.items():
        assert ours[k] == pytest.approx(v, rel=1e-9, abs=1e-9), k
    # the same predictions under the standard (per-pixel angle) definition
    std = get_task("normals").meter()
    for p, t in zip(preds, gts):
        std.update(torch.from_numpy(p)[None], torch.from_numpy(t)[None])
    print({"standard mean_angle": std.compute()["mean_angle"], "paper mean_angle": ours["mean_angle"]})
    assert abs(std.compute()["mean_angle"] - ours["mean_angle"]) > 1


def test_release_normals_metric_raw_prediction_on_synthetic_inputs():
    """Derived-normals branch: the raw (unnormalised) prediction; a batch = images averaged."""
    rng = np.random.default_rng(1)
    g = rng.normal(size=(3, 3, 9, 11))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    p = g * rng.uniform(0.2, 3, (3, 1, 9, 11)) + rng.normal(0, 0.5, g.shape)
    label = np.concatenate([g, np.ones((3, 1, 9, 11))], 1)  # the mask channel is not used
    meter = ReleaseNormalsMeter()
    meter.update(torch.from_numpy(p), torch.from_numpy(label))
    ref = np_release_normals_metric(p, g, normalize=False)
    for k, v in meter.compute().items():
        assert v == pytest.approx(ref[k], rel=1e-9, abs=1e-9), k
    assert ref["mean_angle"] != pytest.approx(np_release_normals_metric(p, g, normalize=True)["mean_angle"], rel=1e-3)
    a, b = ReleaseNormalsMeter(), ReleaseNormalsMeter()
    a.update(torch.from_numpy(p[:1]), torch.from_numpy(g[:1]))
    b.update(torch.from_numpy(p[1:]), torch.from_numpy(g[1:]))
    assert a.merge(b).compute() == pytest.approx(meter.compute())


@pytest.mark.parametrize("median_scaling", [False, True])
def test_release_depth_metric_matches_numpy_on_real_nyuv2(shared_data, median_scaling):
    depths = _nyud_depths(shared_data)
    rng = np.random.default_rng(2)
    codes = []
    meter = ReleaseDepthMeter(median_scaling=median_scaling)
    std = get_task("depth").meter(1e-3, 80.0)
    for d in depths:
        pred_m = np.where(d > 0, d, 3.0) * rng.uniform(0.7, 1.4, d.shape) + rng.normal(0, 0.1, d.shape)
        z = torch.from_numpy(655.36 / (np.abs(pred_m) + 0.01))[None, None].float()
        codes.append(z[0, 0].double().numpy())
        label = torch.from_numpy(d)[None, None].float()
        meter.update(PAPER.task("depth").decode(z), label)
        std.update(get_task("depth").decode(z), label)
    ref = np_release_depth(codes, [d.astype(np.float32) for d in depths], median_scaling)
    ours = meter.compute()
    for k, v in ref.items():
        assert ours[k] == pytest.approx(v, rel=2e-5), k
    if not median_scaling:  # the decoding offset (0.99 m) changes the relative errors, not the RMSE much
        s = std.compute()
        assert ours["abs_rel"] > 1.3 * s["abs_rel"]
        assert ours["rmse"] == pytest.approx(s["rmse"], rel=0.05)


def test_release_depth_decoding_and_clamp():
    z = torch.tensor([[[[65.536, 655.36 / 81.0, 0.0, -5.0]]]])
    assert torch.allclose(release_decode(z), torch.tensor([[[[9.0, 80.0, float("inf"), -132.072]]]]))
    m = ReleaseDepthMeter()
    m.update(release_decode(z), torch.tensor([[[[10.0, 5.0, 5.0, 5.0]]]]))  # inf / negative: clamped to 80 / 1e-3
    p, g = np.array([9.0, 80.0, 80.0, 1e-3]), np.array([9.01, 4.01, 4.01, 4.01])  # labels: d - 0.99
    assert m.compute()["rmse"] == pytest.approx(math.sqrt(np.mean((p - g) ** 2)), rel=1e-5)


def test_release_edge_f1_matches_numpy_on_real_nyuv2_edges(shared_data):
    rng = np.random.default_rng(3)
    labels, probs = [], []
    meter = ReleaseEdgeMeter()
    for seg in _nyud_seg40(shared_data)[:4]:
        e = edges_from_labels(np.where(seg == 0, 255, seg - 1))
        lab = e.astype(np.int64)
        lab[:3] = 255  # an ignored band
        p = np.clip(np.roll(e, 1, axis=1) * 0.8 + rng.uniform(0, 0.45, e.shape), 0, 1)
        p[5, 5] = 0.5  # exactly 0.5 is background (the argmax of two equal logits)
        labels.append(lab), probs.append(p)
        meter.update(torch.from_numpy(p)[None, None], torch.from_numpy(lab)[None, None])
    f1, per_class = np_release_edges_f1(probs, labels)
    ours = meter.compute()
    assert ours["f1"] == pytest.approx(f1, rel=1e-12)
    assert ours["f1_edge"] == pytest.approx(per_class[1] * 100) and ours["f1_background"] == pytest.approx(per_class[0] * 100)
    std = get_task("edges").meter(boundary=False)
    for p, g in zip(probs, labels):
        std.update(torch.from_numpy(p)[None, None], torch.from_numpy(g)[None, None])
    assert std.compute()["f1"] == pytest.approx(ours["f1_edge"], rel=1e-3)  # standard: the edge class alone
    assert ours["f1"] > std.compute()["f1"] + 20  # the background class lifts the released number


def test_paper_segmentation_is_the_release_formula_on_real_nyuv2(shared_data):
    """The released mIoU: one confusion matrix, IoU = TP / (row + column - TP), NaN classes
    (absent from label and prediction) left out; the same meter serves both protocols."""
    labs = _nyud_seg40(shared_data)
    rng = np.random.default_rng(4)
    meter = PAPER.task("semseg").meter(num_classes=40)
    cm = np.zeros((40, 40))
    present = np.unique(np.concatenate([np.unique(s) for s in labs]))
    present = present[present > 0] - 1
    assert len(present) < 40
    for s in labs:
        lab = np.where(s == 0, 255, s.astype(np.int64) - 1)
        pred = np.where(rng.random(s.shape) < 0.7, np.where(lab == 255, 0, lab), rng.choice(present, s.shape))
        meter.update(torch.from_numpy(pred)[None], torch.from_numpy(lab)[None])
        v = lab != 255
        cm += np.bincount(40 * lab[v] + pred[v], minlength=1600).reshape(40, 40)
    with np.errstate(invalid="ignore", divide="ignore"):
        iu = np.diag(cm) / (cm.sum(1) + cm.sum(0) - np.diag(cm))
    assert meter.compute()["mIoU"] == pytest.approx(np.nanmean(iu) * 100, rel=1e-12)
    assert np.isnan(iu).sum() == 40 - len(present)  # classes absent from labels and predictions: left out


# --- losses --------------------------------------------------------------------------------

def test_release_berhu_matches_numpy_on_real_nyuv2(shared_data):
    depths = np.stack([d[:240, :320] for d in _nyud_depths(shared_data)[:4]])[:, None]
    assert (depths == 0).any()  # holes: masked, but counted in the mean
    rng = np.random.default_rng(5)
    pred = 655.36 / (np.where(depths > 0, depths, 2.0) + 0.01) * rng.uniform(0.8, 1.2, depths.shape)
    ours = release_berhu(torch.from_numpy(pred), torch.from_numpy(depths))
    valid = depths > 0
    a = np.abs(np.where(valid, 655.36 / (np.where(valid, depths, 1) + 0.01), 0) - pred) * valid
    c = 0.2 * a.max()
    ref = np.where(a <= c, a, (a ** 2 + c ** 2) / (2 * c)).mean()
    assert float(ours) == pytest.approx(ref, rel=1e-12)
    std = get_task("depth").loss(torch.from_numpy(pred), torch.from_numpy(depths))
    assert float(std) == pytest.approx(ref / valid.mean(), rel=1e-9)  # standard: the mean over valid pixels


def test_release_edge_loss_is_weighted_bce_over_the_weight_sum():
    rng = np.random.default_rng(6)
    logit = rng.normal(0, 2, (2, 1, 6, 7))
    lab = (rng.random((2, 1, 6, 7)) < 0.2).astype(np.int64)
    lab[0, 0, 0, :3] = 255
    ours = float(release_edges_loss(torch.from_numpy(logit), torch.from_numpy(lab)))
    v = lab != 255
    y = (lab == 1).astype(float)
    bce = -(y * np.log(1 / (1 + np.exp(-logit))) + (1 - y) * np.log(1 - 1 / (1 + np.exp(-logit))))
    w = np.where(y > 0, 0.95, 0.05) * v
    assert ours == pytest.approx((bce * w).sum() / w.sum(), rel=1e-9)
    # = the released two-logit cross-entropy with class weights (0.05, 0.95)
    two = torch.cat([torch.zeros(2, 1, 6, 7, dtype=torch.float64), torch.from_numpy(logit)], 1)
    ce = F.cross_entropy(two, torch.from_numpy(np.where(v, lab, -100))[:, 0], weight=torch.tensor([0.05, 0.95], dtype=torch.float64))
    assert ours == pytest.approx(float(ce), rel=1e-9)
    assert float(get_task("edges").loss(torch.from_numpy(logit), torch.from_numpy(lab))) != pytest.approx(ours, rel=1e-2)


def test_release_normals_loss_mask_and_files_branch():
    rng = np.random.default_rng(7)
    p = torch.from_numpy(rng.normal(size=(2, 3, 5, 6)))
    g = F.normalize(torch.from_numpy(rng.normal(size=(2, 3, 5, 6))), dim=1)
    mask = torch.from_numpy(rng.random((2, 1, 5, 6)) < 0.6).double()
    cos = (F.normalize(p, dim=1) * g).sum(1)
    ours = release_normals_loss(p, torch.cat([g, mask], 1))
    assert float(ours) == pytest.approx(float((1 - cos)[mask[:, 0] > 0].mean()), rel=1e-9)
    # normals from files: mask of ones = the cosine loss of the normalised vectors over all pixels
    ones = release_normals_loss(p, torch.cat([g, torch.ones_like(mask)], 1))
    assert float(ones) == pytest.approx(float((1 - cos).mean()), rel=1e-9)


def test_paper_losses_upsample_with_align_corners():
    from densemtl.losses import task_losses

    torch.manual_seed(0)
    out = {"depth": {0: torch.rand(2, 1, 4, 6) * 50 + 10, 1: torch.rand(2, 1, 2, 3) * 50 + 10}}
    depth = torch.rand(2, 1, 8, 12) * 5 + 1
    ours = task_losses(out, {"depth": depth}, protocol="paper")["depth"]
    ref = torch.stack([release_berhu(F.interpolate(p, (8, 12), mode="bilinear", align_corners=True), depth)
                       for p in out["depth"].values()]).mean()
    assert float(ours) == pytest.approx(float(ref), rel=1e-6)
    wrong = torch.stack([release_berhu(F.interpolate(p, (8, 12), mode="bilinear", align_corners=False), depth)
                         for p in out["depth"].values()]).mean()
    assert float(ours) != pytest.approx(float(wrong), rel=1e-4)


# --- the released normals target ------------------------------------------------------------

def test_release_normals_target_matches_numpy_on_synthetic_and_real_depth(shared_data):
    rng = np.random.default_rng(8)
    code = rng.uniform(5, 600, (13, 17))
    K = np.array([[30.0, 0, 9.5], [0, 28.0, 5.0], [0, 0, 1]])
    assert np.allclose(release_normals(code, K), np_release_target(code, K), atol=1e-12)
    d = _nyud_depths(shared_data)[0][::4, ::4]  # a real (in-painted) NYUDv2 depth map, Kinect camera / 4
    K = np.array([[518.86 / 4, 0, 325.58 / 4], [0, 519.47 / 4, 253.74 / 4], [0, 0, 1]])
    code = 655.36 / (np.where(d > 0, d, d.max()) + 0.01)
    ours = release_normals(code, K)
    assert np.allclose(ours, np_release_target(code, K), atol=1e-10)
    assert (ours[..., 2] >= 0).all()
    valid = d > 0
    assert 0 < (~valid).sum() and np.array_equal(release_normals_mask(valid), np_release_mask(valid))


def _plane_depth(K, h, w, n, offset):
    """Metric depth of the plane n . X = offset seen through K."""
    ys, xs = np.mgrid[0:h, 0:w]
    rays = np.stack([xs, ys, np.ones_like(xs)], -1).astype(np.float64) @ np.linalg.inv(K).T
    return offset / (rays @ n)


def _angles(a, b):
    return np.degrees(np.arccos(np.clip((a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1), -1, 1)))


def test_release_target_on_a_plane_departs_from_the_metric_one_and_the_control_matches():
    """A tilted plane seen by the Virtual KITTI 2 camera, images resized 1242x375 -> 400x120.
    Paper target: inverse-depth code + the full-resolution K (not rescaled) -> not the plane's
    normal. Control: metric depth + the rescaled K -> exactly the plane's normal (with z made
    non-negative: the released orientation), i.e. the standard target with z negated."""
    full = np.array([[725.0087, 0, 620.5], [0, 725.0087, 187.0], [0, 0, 1]])
    h, w = 120, 400
    K = scale_intrinsics(full, w / 1242, h / 375)
    n = np.array([0.3, -0.6, -0.75])
    n /= np.linalg.norm(n)  # faces the camera (n . X < 0 in front of it)
    depth = _plane_depth(K, h, w, n, -6.0)
    assert (depth > 0).all()
    inner = (slice(1, -1), slice(1, -1))
    released_orientation = n * np.array([1, 1, -1])
    control = release_normals(depth, K)[inner]
    assert _angles(control, released_orientation).max() < 1e-5
    standard = normals_from_depth(depth, K)[inner]
    assert _angles(standard, n).max() < 0.05  # the standard target (float32): the plane's normal, towards the camera
    assert np.allclose(control * [1, 1, -1], standard, atol=1e-4)
    code = 655.36 / (depth + 0.01)
    paper = release_normals(code, release_intrinsics({"fx": 725.0087, "fy": 725.0087, "u0": 620.5, "v0": 187.0,
                                                      "width": 1242, "height": 375}, 0, 0, False))[inner]
    code_only = release_normals(code, K)[inner]
    k_only = release_normals(depth, full)[inner]
    dev = {name: _angles(a, released_orientation) for name, a in
           (("paper", paper), ("code", code_only), ("unscaled K", k_only))}
    assert dev["paper"].mean() > 20 and dev["code"].mean() > 20 and dev["unscaled K"].mean() > 1
    print({k: (round(float(v.mean()), 2), round(float(v.max()), 2)) for k, v in dev.items()})


def test_release_intrinsics_flip_and_crop():
    cam = {"fx": 10.0, "fy": 11.0, "u0": 6.0, "v0": 4.0, "width": 20, "height": 10}
    assert np.allclose(release_intrinsics(cam, 3, 2, False), [[10, 0, 3], [0, 11, 2], [0, 0, 1]])
    assert np.allclose(release_intrinsics(cam, 3, 2, True), [[10, 0, 20 - 6 - 3], [0, 11, 10 - 4 - 2], [0, 0, 1]])


VK = {"fx": 725.0087, "fy": 725.0087, "u0": 620.5, "v0": 187.0, "width": 1242, "height": 375}


@pytest.fixture(scope="module")
def vkitti_plane(tmp_path_factory):
    """Virtual KITTI 2 files whose depth is a tilted plane (centimetres)."""
    import cv2
    from data_fixtures import write_vkitti2

    root = tmp_path_factory.mktemp("vk")
    write_vkitti2(root, scenes=("Scene01",), frames=5, h=75, w=248)
    K = scale_intrinsics(np.array([[VK["fx"], 0, VK["u0"]], [0, VK["fy"], VK["v0"]], [0, 0, 1]]), 248 / 1242, 75 / 375)
    n = np.array([0.1, -0.9, -0.4]) / np.linalg.norm([0.1, -0.9, -0.4])
    d = _plane_depth(K, 75, 248, n, -1.5)
    cm = np.clip(np.round(d * 100), 1, 65535).astype(np.uint16)
    cm[40:45, 100:110] = 65535  # a far patch (sky)
    for f in range(5):
        cv2.imwrite(str(root / "Scene01/15-deg-left/frames/depth/Camera_0" / f"depth_{f:05d}.png"), cm)
    return root


def test_vkitti2_paper_normals_labels_follow_the_release_camera_through_flip_and_crop(vkitti_plane):
    from densemtl.data import create_dataset
    from densemtl.data.transforms import crop_sample, hflip_sample

    ds = create_dataset("vkitti2", vkitti_plane, "all", "DN", size=(60, 200), augment=False, protocol="paper")
    s = ds.load(0)
    lab, depth = s["labels"]["normals"], s["labels"]["depth"]
    assert lab.shape == (60, 200, 4)
    K0 = release_intrinsics(VK, 0, 0, False)
    assert np.allclose(K0, [[725.0087, 0, 620.5], [0, 725.0087, 187], [0, 0, 1]])
    code = 655.36 / (depth.astype(np.float64) + 0.01)
    assert np.allclose(lab[..., :3], np_release_target(code, K0), atol=2e-6)
    assert np.array_equal(lab[..., 3] > 0.5, np_release_mask(depth > 0))
    # crop (top 5, left 20, 40x150) then flip = the released order: flip, then crop at x1 = 200 - 20 - 150
    raw = ds._guarded(ds._load, 0)
    aug = ds._finish(hflip_sample(crop_sample(raw, 5, 20, (40, 150)), ds.protocol.task), 0)["labels"]["normals"]
    released_depth = depth[:, ::-1][5:45, 30:180]
    K1 = np.array([[725.0087, 0, (1242 - 620.5) - 30], [0, 725.0087, (375 - 187.0) - 5], [0, 0, 1]])
    assert np.allclose(release_intrinsics(VK, 30, 5, True), K1)
    expected = np_release_target(655.36 / (released_depth.astype(np.float64) + 0.01), K1)
    assert np.allclose(aug[..., :3], expected, atol=2e-6)
    assert np.array_equal(aug[..., 3] > 0.5, np_release_mask(released_depth > 0))
    # deriving before the flip and mirroring the result (x negated) is not what the release computes
    before = np_release_target(655.36 / (depth[5:45, 20:170].astype(np.float64) + 0.01), release_intrinsics(VK, 20, 5, False))
    mirrored = before[:, ::-1] * [-1, 1, 1]
    assert _angles(aug[1:-1, 1:-1, :3], mirrored[1:-1, 1:-1]).mean() > 0.01
    # the batch tensors: 4 channels, and the standard labels of the same images beside them
    both = create_dataset("vkitti2", vkitti_plane, "all", "N", size=(60, 200), augment=False, protocol="paper",
                          extra_protocols=("standard",))
    item = both[0]
    assert item["labels"]["normals"].shape == (4, 60, 200) and item["protocol_labels"]["standard"]["normals"].shape == (3, 60, 200)


@pytest.mark.slow
def test_paper_training_on_derived_normals_with_crop_and_flip(vkitti_plane, tmp_path):
    from helpers import tiny_config

    from densemtl.config import config_from_dict
    from densemtl.engine import Trainer

    cfg = config_from_dict(tiny_config(vkitti_plane, tmp_path, tasks="DN", protocol="paper", **{
        "model.name": "mtl", "data.dataset": "vkitti2", "data.size": [32, 96], "data.crop": [32, 80], "data.augment": True,
        "schedule.iterations": 1, "train.eval_every": 1, "loss.options": {"weights": {"depth": 1.0, "normals": 1.0}}}))
    tr = Trainer(cfg)
    batch = next(iter(tr.train_loader))
    assert batch["labels"]["normals"].shape == (2, 4, 32, 80)
    best = tr.train()
    assert set(best["metrics"]["normals"]) == {"mean_angle", "median_angle", "rmse_angle", "within_11.25", "within_22.5",
                                               "within_30"}
    assert all(math.isfinite(v) for v in best["metrics"]["depth"].values())


def test_paper_targets_refuse_a_scale_crop(vkitti_plane):
    from densemtl.data import create_dataset

    with pytest.raises(ValueError, match="protocol 'paper': the normals target .* scale_crop"):
        create_dataset("vkitti2", vkitti_plane, "all", "N", size=(60, 200), protocol="paper", scale_crop=(1.0, 1.2))
    create_dataset("vkitti2", vkitti_plane, "all", "N", size=(60, 200), protocol="standard", scale_crop=(1.0, 1.2))


@pytest.mark.slow
def test_nyud_paper_labels_from_files(tmp_path, shared_data):
    """Normals from the files unit-normalised (no invalid pixel, mask of ones); edges resized
    linearly then > 0 (the released cv2 call), on real NYUDv2 edges at the paper's 448x576."""
    import cv2

    from data_fixtures import write_nyud
    from densemtl.data import create_dataset

    root = write_nyud(tmp_path / "nyud", h=480, w=640, ids_train=("00001",), ids_val=("00002",))
    seg = _nyud_seg40(shared_data)[0]
    edges = edges_from_labels(np.where(seg == 0, 255, seg - 1))
    Image.fromarray(edges * 255).save(root / "edge" / "00001.png")
    png = np.asarray(Image.open(root / "normals" / "00001.png")).copy()
    png[:4, :4] = 0  # black pixels: invalid for the standard protocol
    Image.fromarray(png).save(root / "normals" / "00001.png")
    paper = create_dataset("nyud", root, "train", "NE", augment=False, protocol="paper", extra_protocols=("standard",))
    s = paper.load(0)
    n = s["labels"]["normals"]
    assert n.shape == (448, 576, 4) and (n[..., 3] == 1).all()
    assert np.allclose(np.linalg.norm(n[..., :3], axis=-1), 1, atol=1e-5)
    ref = png.astype(np.float64) * 2 / 255 - 1
    ref = ref / np.linalg.norm(ref, axis=-1, keepdims=True)
    ys = ((np.arange(448) + 0.5) * 480 / 448).astype(int)  # nearest neighbour at pixel centres
    xs = ((np.arange(576) + 0.5) * 640 / 576).astype(int)
    assert np.allclose(n[..., :3], ref[ys][:, xs], atol=1e-6)
    assert (s["protocol_labels"]["standard"]["normals"][:3, :3] == 0).all()  # standard: zero = invalid
    e = s["labels"]["edges"]
    released = cv2.resize(edges.astype(np.float32), (576, 448), interpolation=cv2.INTER_LINEAR) > 0
    assert np.array_equal(e == 1, released)
    assert np.array_equal(e == 1, np_bilinear_half_pixel(edges.astype(np.float64), (448, 576)) > 0)
    standard_edges = s["protocol_labels"]["standard"]["edges"]
    assert (e == 1).sum() > 1.3 * (standard_edges == 1).sum()  # linear + "> 0" thickens the edges
    # the ASTMT / MTI-Net files: normals as float .npy
    np.save(root / "normals" / "00001.npy", ref.astype(np.float32) * 0.8)
    (root / "normals" / "00001.png").unlink()
    n2 = create_dataset("nyud", root, "train", "N", augment=False, protocol="paper").load(0)["labels"]["normals"]
    assert np.allclose(n2[..., :3], n[..., :3], atol=1e-5)
    n3 = create_dataset("nyud", root, "train", "N", augment=False).load(0)["labels"]["normals"]
    assert n3.shape == (448, 576, 3) and np.allclose(n3, n[..., :3] * 0.8, atol=1e-5)


# --- the switch: config, run records, eval, table -------------------------------------------

@pytest.fixture(scope="module")
def paper_run(synth_root, tmp_path_factory):
    from helpers import tiny_config

    from densemtl.config import config_from_dict
    from densemtl.engine import Trainer

    out = tmp_path_factory.mktemp("runs")
    cfg = config_from_dict(tiny_config(synth_root, out, tasks="SDNE", protocol="paper", run_name="paper",
                                       **{"schedule.iterations": 2}))
    Trainer(cfg).train()
    return out / "t" / "paper"


@pytest.mark.slow
def test_run_records_its_protocol(paper_run):
    from omegaconf import OmegaConf

    assert OmegaConf.load(paper_run / "config.yaml").protocol == "paper"
    assert json.loads((paper_run / "env.json").read_text())["protocol"] == "paper"
    evals = [json.loads(line) for line in (paper_run / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert evals and all(r["protocol"] == "paper" for r in evals)
    assert "edges/f1_background" in evals[-1] and "depth/rmse_pixel" not in evals[-1]  # the released meters
    assert "s1/edges/f1_background" in evals[-1] and "s1/depth/rmse_pixel" not in evals[-1]  # at every scale
    ck = torch.load(paper_run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert ck["protocol"] == "paper" and ck["config"]["protocol"] == "paper"


@pytest.mark.slow
def test_eval_protocol_both_prints_both_columns_in_one_pass(paper_run, tmp_path, capsys):
    from densemtl.cli.main import main

    assert main(["eval", str(paper_run), "--protocol", "both", "--no-boundary", "--json", str(tmp_path / "both.json")]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.strip().startswith("metric"))
    assert header.split() == ["metric", "standard", "paper"]
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:] if "/" in line.split()[0]}
    assert len(rows["normals/mean_angle"]) == 2 and rows["depth/rmse_pixel"][1] == "-" and rows["edges/f1_edge"][0] == "-"
    both_json = json.loads((tmp_path / "both.json").read_text())
    both, both_scales = both_json["metrics_by_protocol"], both_json["scales_by_protocol"]
    for p in ("standard", "paper"):  # one pass over both = each protocol on its own
        assert main(["eval", str(paper_run), "--protocol", p, "--no-boundary", "--json", str(tmp_path / f"{p}.json")]) == 0
        alone = json.loads((tmp_path / f"{p}.json").read_text())
        assert alone["protocol"] == p
        column = ["standard", "paper"].index(p)
        for t, metrics in alone["metrics"].items():
            assert both[p][t] == pytest.approx(metrics, nan_ok=True), (p, t)
            key, value = next(iter(metrics.items()))
            assert rows[f"{t}/{key}"][column] == f"{value:.4f}"
        # every supervised scale, under each protocol: scale 1 (before the mTEB) as s1/ rows
        assert alone["eval_scale"] == 0 and sorted(alone["scales"]) == ["0", "1"]
        for t, metrics in alone["scales"]["1"].items():
            assert both_scales[p]["1"][t] == pytest.approx(metrics, nan_ok=True), (p, t)
            key, value = next(iter(metrics.items()))
            assert rows[f"s1/{t}/{key}"][column] == f"{value:.4f}"
    assert both["standard"]["normals"]["mean_angle"] != pytest.approx(both["paper"]["normals"]["mean_angle"])
    assert main(["eval", str(paper_run), "--no-boundary"]) == 0  # default: the run's protocol
    assert "protocol: paper" in capsys.readouterr().out


def _fake_run(path: Path, protocol: str | None, rmse: float):
    from densemtl.config import config_from_dict, save_config

    path.mkdir(parents=True)
    cfg = {"tasks": "D", "model": {"name": "stl", "backbone": "resnet18"}, "data": {"dataset": "procedural", "root": "x"}}
    if protocol:
        cfg["protocol"] = protocol
    save_config(config_from_dict(cfg), path / "config.yaml")
    rec = {"type": "eval", "iter": 10, "score": -rmse, "depth/rmse": rmse}
    if protocol:
        rec["protocol"] = protocol
    (path / "metrics.jsonl").write_text(json.dumps(rec) + "\n")


def test_table_shows_the_protocol_and_refuses_to_mix_them(tmp_path, capsys):
    from densemtl.cli.main import main

    _fake_run(tmp_path / "a" / "s0", "paper", 1.0)
    _fake_run(tmp_path / "a" / "s1", "paper", 1.2)
    assert main(["table", str(tmp_path / "a"), "--csv", str(tmp_path / "a.csv")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("Protocol: paper (") and "1.100 ± 0.141" in out
    assert (tmp_path / "a.csv").read_text().splitlines()[1].startswith("paper,")
    _fake_run(tmp_path / "b" / "s0", "standard", 1.0)
    _fake_run(tmp_path / "b" / "s1", "paper", 1.0)
    assert main(["table", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{tmp_path / 'b' / 's0'} (standard) and {tmp_path / 'b' / 's1'} (paper)" in err
    _fake_run(tmp_path / "c" / "old", None, 1.0)  # recorded before the switch: standard
    assert main(["table", str(tmp_path / "c")]) == 0
    assert capsys.readouterr().out.startswith("Protocol: standard (")


def test_config_protocol_key_and_metric_check():
    from densemtl.config import ConfigError, load_config

    assert load_config(None, []).protocol == "standard"
    with pytest.raises(ConfigError, match="protocol"):
        load_config(None, ["protocol=authors"])
    load_config(None, ["tasks=SDNE", "protocol=paper", "train.select_metric=edges/f1_edge"])
    with pytest.raises(ConfigError, match="train.select_metric: edges reports f1, odsF"):
        load_config(None, ["tasks=SDNE", "train.select_metric=edges/f1_edge", "eval.edge_boundary=true"])
