"""Losses: closed forms, exact depth-code conversion, multi-scale supervision, NaN errors."""

import pytest
import torch

from densemtl.losses import (
    berhu, code_to_depth, depth_loss, depth_to_code, edges_loss, normals_loss, semseg_loss, task_losses,
)
from densemtl.tasks import get_task


def test_depth_code_round_trip_exact():
    d = torch.tensor([0.001, 0.5, 1.0, 10.0, 80.0, 300.0], dtype=torch.float64)
    z = depth_to_code(d)
    assert torch.allclose(z, 655.36 / (d + 0.01), rtol=0, atol=0)
    assert torch.allclose(code_to_depth(z), d, rtol=1e-12, atol=1e-12)


def test_berhu_closed_form_both_sides_of_threshold():
    depth = torch.full((1, 1, 2, 3), 2.0)
    code = depth_to_code(depth)
    residuals = torch.tensor([[0.1, -0.5, 1.0], [-2.0, 3.0, -10.0]]).view(1, 1, 2, 3)
    c = 0.2 * 10.0  # threshold = 0.2 * max |r| = 2.0
    expected = []
    for r in residuals.flatten().tolist():
        a = abs(r)
        expected.append(a if a <= c else (r * r + c * c) / (2 * c))
    assert expected[:4] == pytest.approx([0.1, 0.5, 1.0, 2.0]) and expected[4] == pytest.approx((9 + 4) / 4)
    loss = depth_loss(code + residuals, depth)
    assert loss.item() == pytest.approx(sum(expected) / 6, rel=1e-5)
    assert berhu(torch.tensor(3.0), 2.0).item() == pytest.approx(13 / 4)


def test_depth_loss_ignores_invalid_pixels():
    depth = torch.tensor([[[[1.0, 0.0], [2.0, -1.0]]]])
    pred = depth_to_code(depth.clamp_min(0.5))
    pred[0, 0, 0, 1] = 1e6  # invalid pixel, huge error, must not count
    assert depth_loss(pred, depth).item() == pytest.approx(0.0, abs=1e-6)


def test_semseg_normals_edges_losses():
    logits = torch.randn(2, 5, 4, 4)
    labels = torch.randint(0, 5, (2, 4, 4))
    labels[0, 0, 0] = 255
    ref = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255)
    assert semseg_loss(logits, labels).item() == pytest.approx(ref.item())
    n = torch.nn.functional.normalize(torch.randn(1, 3, 4, 4), dim=1)
    assert normals_loss(n * 3.0, n).item() == pytest.approx(0.0, abs=1e-6)
    assert normals_loss(-n, n).item() == pytest.approx(2.0, abs=1e-6)
    gt_zero = n.clone()
    gt_zero[..., :2] = 0  # invalid half: prediction there must not matter
    pred = n.clone()
    pred[..., :2] = -n[..., :2]
    assert normals_loss(pred, gt_zero).item() == pytest.approx(0.0, abs=1e-6)
    logit = torch.tensor([[[[0.0, 0.0]]]])
    edge = torch.tensor([[[[1.0, 0.0]]]])
    ln2 = torch.log(torch.tensor(2.0)).item()
    assert edges_loss(logit, edge).item() == pytest.approx((0.95 * ln2 + 0.05 * ln2) / 2)
    assert edges_loss(logit, torch.tensor([[[[1.0, 255.0]]]])).item() == pytest.approx(0.95 * ln2)


def test_multiscale_mean_over_scales_with_bilinear_upsampling():
    torch.manual_seed(0)
    label = torch.randn(2, 3, 8, 8)
    p0, p1 = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)
    out = task_losses({"normals": {0: p0, 1: p1}}, {"normals": label})
    up = torch.nn.functional.interpolate(p1, size=(8, 8), mode="bilinear", align_corners=False)
    expected = (normals_loss(p0, label) + normals_loss(up, label)) / 2
    assert out["normals"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_nan_raises_with_task_name():
    label = torch.randn(1, 3, 4, 4)
    pred = torch.randn(1, 3, 4, 4)
    pred[0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="task 'normals': prediction at scale 0"):
        task_losses({"normals": {0: pred}}, {"normals": label})
    depth = torch.ones(1, 1, 4, 4)
    depth[0, 0, 1, 1] = float("inf")
    with pytest.raises(FloatingPointError, match="task 'depth': label"):
        task_losses({"depth": {0: torch.ones(1, 1, 4, 4)}}, {"depth": depth})
    with pytest.raises(KeyError, match="no label for task 'semseg'"):
        task_losses({"semseg": {0: torch.randn(1, 2, 4, 4)}}, {"depth": depth})


def test_task_registry_objects():
    s, d, n, e = (get_task(t) for t in ("semseg", "depth", "normals", "edges"))
    assert (s.higher_is_better, d.higher_is_better, n.higher_is_better, e.higher_is_better) == (True, False, False, True)
    assert s.out_channels(13) == 13 and d.out_channels(None) == 1 and n.out_channels(None) == 3
    lab = torch.tensor([[[0, 255], [3, 1]]])
    assert s.valid_mask(lab).tolist() == [[[True, False], [True, True]]]
    assert s.render(lab[0], num_classes=4).shape == (2, 2, 3)
    assert (s.render(lab[0], num_classes=4)[0, 1] == 0).all()  # void is black
    code = depth_to_code(torch.tensor([[[[1.0, 5.0]]]]))
    assert torch.allclose(d.decode(code), torch.tensor([[[[1.0, 5.0]]]]), atol=1e-5)
    img = d.render(torch.tensor([[1.0, 5.0], [0.0, 2.0]]))
    assert img.shape == (2, 2, 3) and (img[1, 0] == 0).all() and img[0, 0].sum() > img[0, 1].sum()
    assert n.render(torch.tensor([[[0.0]], [[0.0]], [[1.0]]])).tolist() == [[[128, 128, 255]]]
    assert e.render(torch.tensor([[0.0, 1.0]]))[0, 1].tolist() == [255, 255, 255]


def test_check_finite_fast_path_is_exact():
    from densemtl.losses import check_finite

    big = torch.full((4, 3), 3.0e38)  # finite elements whose sum overflows to inf
    check_finite("depth", prediction=big)
    check_finite("depth", prediction=big.to(torch.bfloat16), label=torch.ones(2, 2, dtype=torch.float16) * 6e4)
    for bad in (float("nan"), float("inf"), -float("inf")):
        t = torch.zeros(2, 5)
        t[1, 3] = bad
        with pytest.raises(FloatingPointError, match=r"task 'depth': label contains 1 NaN/Inf value\(s\)"):
            check_finite("depth", label=t)
    opposite = torch.tensor([float("inf"), -float("inf")])  # sums to NaN: still two bad values
    with pytest.raises(FloatingPointError, match=r"contains 2 NaN/Inf"):
        check_finite("depth", label=opposite)
