"""Self-supervised depth geometry on procedural sequences; rotations vs SciPy; SSIM; auto-masking."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.transform import Rotation

from densemtl.data.synth import STYLES, render_sequence
from densemtl.selfsup import (
    SSIM, axis_angle_to_matrix, backproject, invert_pose, min_reprojection_loss, photometric_error,
    pose_from_parameters, project, warp_frame,
)


def test_axis_angle_and_inverse_match_scipy():
    rng = np.random.default_rng(0)
    vec = rng.normal(size=(6, 3)) * 0.7
    ours = axis_angle_to_matrix(torch.from_numpy(vec)).numpy()
    np.testing.assert_allclose(ours, Rotation.from_rotvec(vec).as_matrix(), atol=1e-12)
    t = rng.normal(size=(6, 3))
    T = pose_from_parameters(torch.from_numpy(vec), torch.from_numpy(t))
    Ti = pose_from_parameters(torch.from_numpy(vec), torch.from_numpy(t), invert=True).numpy()
    np.testing.assert_allclose(Ti, np.linalg.inv(T.numpy()), atol=1e-12)
    np.testing.assert_allclose(invert_pose(T).numpy(), Ti, atol=1e-12)


def _frames(q):
    return [torch.from_numpy(v["image"]).permute(2, 0, 1).double()[None] / 255 for v in q["frames"]]


def _visible(q, T, which):
    """Target pixels that land inside the source frame and are not occluded there."""
    t = q["frames"][1]
    depth = torch.from_numpy(t["depth"])[None, None].double()
    K = torch.from_numpy(t["K"])[None]
    T = torch.from_numpy(T)[None]
    grid = project(backproject(depth, K), K, T, depth.shape[-2:])
    z = (T @ backproject(depth, K))[:, 2].view(1, 1, *depth.shape[-2:])
    src_depth = torch.from_numpy(q["frames"][which]["depth"])[None, None].double()
    sampled = F.grid_sample(src_depth, grid, mode="nearest", padding_mode="border", align_corners=True)
    inside = (grid.abs() <= 1).all(-1)[:, None]
    return inside & ((sampled - z).abs() < 0.02 * z)


def test_warping_with_true_depth_and_pose_is_photometrically_consistent():
    style = dataclasses.replace(STYLES["default"], noise=0.0)
    q = render_sequence(0, 5, (96, 128), style=style, max_translation=0.25)
    f = _frames(q)
    depth = torch.from_numpy(q["frames"][1]["depth"])[None, None].double()
    K = torch.from_numpy(q["frames"][1]["K"])[None]
    for which, key in ((0, "T_t_to_prev"), (2, "T_t_to_next")):
        T = torch.from_numpy(q[key])[None]
        vis = _visible(q, q[key], which)
        assert vis.float().mean() > 0.5
        good = photometric_error(warp_frame(f[which], depth, K, T), f[1])[vis]
        bad_depth = photometric_error(warp_frame(f[which], depth * 1.2, K, T), f[1])[vis]
        T_rev = T.clone()
        T_rev[:, :3, 3] *= -1
        bad_pose = photometric_error(warp_frame(f[which], depth, K, T_rev), f[1])[vis]
        # measured (scene 5, 128x96): median 0.001, mean ~0.01 on visible pixels
        assert float(good.median()) < 0.01 and float(good.mean()) < 0.03
        assert float(bad_depth.mean()) > 1.5 * float(good.mean())
        assert float(bad_pose.mean()) > 3 * float(good.mean())


def test_ssim_matches_skimage_on_real_cityscapes(shared_data):
    from PIL import Image
    from skimage.metrics import structural_similarity

    img = np.asarray(Image.open(shared_data / "cityscapes-real-samples/mmseg-pseudo-cityscapes/frankfurt_000000_000294_leftImg8bit.png").convert("L")).astype(np.float64) / 255
    noisy = np.clip(img + np.random.default_rng(0).normal(0, 0.05, img.shape), 0, 1)
    ours = 1 - 2 * SSIM()(torch.from_numpy(img)[None, None], torch.from_numpy(noisy)[None, None])[0, 0].numpy()
    # skimage: uniform 3x3 window, population statistics, the same constants (data_range 1)
    _, full = structural_similarity(img, noisy, win_size=3, data_range=1.0, gaussian_weights=False,
                                    use_sample_covariance=False, full=True, K1=0.01, K2=0.03)
    np.testing.assert_allclose(ours[1:-1, 1:-1], full[1:-1, 1:-1], atol=1e-6)


def test_automask_three_identical_frames_give_zero_loss():
    x = torch.rand(2, 3, 16, 20, generator=torch.Generator().manual_seed(0))
    loss, mask = min_reprojection_loss(x, [x.clone(), x.clone()], [x.clone(), x.clone()], generator=torch.Generator().manual_seed(1))
    # every pixel's minimum is an exact zero error (+- the 1e-5 tie-breaking noise)
    assert abs(float(loss)) < 1e-4
    # a moving target: the warped frames win where the identity does not
    y = torch.roll(x, 1, dims=-1)
    loss2, mask2 = min_reprojection_loss(x, [x.clone()], [y], generator=torch.Generator().manual_seed(1))
    assert mask2.float().mean() > 0.95 and abs(float(loss2)) < 1e-4


def test_procedural_sequences_load_and_flip_consistently(tmp_path):
    from densemtl.data import collate, create_dataset
    from densemtl.data.synth import generate_dataset

    root = generate_dataset(tmp_path / "seq", num=4, size=(64, 80), seed=0, workers=1, progress=False, sequences=True)
    ds = create_dataset("procedural", root, "train", "SD", sequence=True, augment=False)
    s = ds.load(0)
    assert set(s["frames"]) == {-1, 1} and s["frames"][1].shape == s["image"].shape
    from densemtl.data.transforms import crop_sample, hflip_sample, resize_sample, to_tensors

    # the paper's recipe: random crops and flips; intrinsics follow for all three frames
    cropped = crop_sample(resize_sample(s, (96, 120)), 20, 30, (64, 64))
    assert cropped["frames"][-1].shape == (64, 64, 3)
    np.testing.assert_allclose(cropped["K"][:2, 2], s["K"][:2, 2] * 1.5 - [30, 20], atol=1)
    for sample in (s, hflip_sample(s), cropped, hflip_sample(cropped)):
        t = to_tensors(sample)
        img, depth, K = t["image"][None].double(), t["labels"]["depth"][None].double(), t["K"][None].double()
        T = t["poses"][1][None].double()
        good = photometric_error(warp_frame(t["frames"][1][None].double(), depth, K, T), img).median()
        S = torch.diag(torch.tensor([-1.0, 1, 1, 1], dtype=torch.float64))
        wrong = photometric_error(warp_frame(t["frames"][1][None].double(), depth, K, S @ T @ S), img).median()
        assert float(good) < float(wrong)  # the (flipped) pose explains the (flipped) frames
    b = collate([ds[0], ds[1]])
    assert b["frames"][-1].shape == (2, 3, 64, 80) and b["poses"][1].shape == (2, 4, 4)
    with pytest.raises(ValueError, match="sequence=True is not supported"):
        create_dataset("synthia", tmp_path, "all", "S", sequence=True)


def test_posenet_and_disparity_task():
    from densemtl.metrics import DepthMeter
    from densemtl.selfsup import PoseNet
    from densemtl.tasks.disparity import sigmoid_to_depth
    from densemtl.tasks import get_task

    net = PoseNet()
    assert net.encoder.conv1.in_channels == 6
    aa, t = net(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))
    assert aa.shape == t.shape == (2, 3) and float(aa.abs().max()) < 0.1
    T_prev = net.relative_pose(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64), source_is_previous=True)
    assert T_prev.shape == (1, 4, 4)
    d = sigmoid_to_depth(torch.tensor([0.0, 1.0]))
    assert d.tolist() == pytest.approx([100.0, 0.1])
    task = get_task("disparity")
    assert task.letter == "P" and not task.higher_is_better
    gt = torch.rand(2, 1, 8, 8) * 10 + 1
    m = task.meter(max_depth=80.0)
    m.update(gt * 2.5, gt)  # scale-ambiguous prediction: median scaling removes the factor
    r = m.compute()
    assert r["abs_rel"] == pytest.approx(0.0, abs=1e-6) and r["delta1"] == pytest.approx(100.0)
    plain = DepthMeter(1e-3, 80.0)
    plain.update(gt * 2.5, gt)
    assert plain.compute()["abs_rel"] == pytest.approx(1.5, rel=1e-6)


def test_cityscapes_sequence_layout_and_missing_neighbour(tmp_path):
    from PIL import Image

    from data_fixtures import write_cityscapes
    from densemtl.data import DataError, create_dataset

    stems = write_cityscapes(tmp_path, "val", n=1, h=16, w=32)
    city, name = stems[0].split("/")
    seq_dir = tmp_path / "leftImg8bit_sequence/val" / city
    seq_dir.mkdir(parents=True)
    frame = int(name.rsplit("_", 1)[1])
    prefix = name.rsplit("_", 1)[0]
    Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(seq_dir / f"{prefix}_{frame - 1:06d}_leftImg8bit.png") if frame else None
    for k in (-1, 1):
        Image.fromarray(np.full((16, 32, 3), 100 + k, np.uint8)).save(seq_dir / f"{prefix}_{frame + k:06d}_leftImg8bit.png")
    ds = create_dataset("cityscapes", tmp_path, "val", "S", size=(16, 32), sequence=True)
    s = ds[0]
    assert s["frames"][-1].shape == (3, 16, 32) and float(s["frames"][1].mean()) == pytest.approx(101 / 255, abs=1e-3)
    (seq_dir / f"{prefix}_{frame + 1:06d}_leftImg8bit.png").unlink()
    with pytest.raises(DataError, match=r"_000001_leftImg8bit.png: missing neighbour frame \+1"):
        ds[0]


def test_self_supervised_loss_prefers_true_depth(tmp_path):
    from densemtl.selfsup import self_supervised_depth_loss
    from densemtl.tasks.disparity import MAX_DEPTH, MIN_DEPTH

    style = dataclasses.replace(STYLES["default"], noise=0.0)
    q = render_sequence(0, 5, (64, 80), style=style, max_translation=0.25)
    f = [torch.from_numpy(v["image"]).permute(2, 0, 1).float()[None] / 255 for v in q["frames"]]
    depth = torch.from_numpy(q["frames"][1]["depth"])[None, None]
    K = torch.from_numpy(q["frames"][1]["K"]).float()[None]
    poses = {-1: torch.from_numpy(q["T_t_to_prev"]).float()[None], 1: torch.from_numpy(q["T_t_to_next"]).float()[None]}

    def logit_of(d):  # invert depth = 1 / (a + b sigmoid)
        a, b = 1 / MAX_DEPTH, 1 / MIN_DEPTH - 1 / MAX_DEPTH
        sig = ((1 / d) - a) / b
        return torch.logit(sig.clamp(1e-6, 1 - 1e-6))

    frames = {-1: f[0], 1: f[2]}
    true, info = self_supervised_depth_loss({0: logit_of(depth)}, f[1], frames, poses, K)
    wrong, _ = self_supervised_depth_loss({0: logit_of(depth * 1.5)}, f[1], frames, poses, K)
    flat, _ = self_supervised_depth_loss({0: logit_of(torch.full_like(depth, 3.0))}, f[1], frames, poses, K)
    assert float(true) < float(wrong) and float(true) < float(flat)
    assert 0 <= info["automask/0"] <= 1


@pytest.mark.slow
def test_selfsup_training_runs_and_resumes(tmp_path, capsys):
    from helpers import tiny_config
    from densemtl.cli.main import main
    from densemtl.config import config_from_dict
    from densemtl.data.synth import generate_dataset
    from densemtl.engine import Trainer, load_checkpoint

    root = generate_dataset(tmp_path / "seq", num=12, size=(32, 48), seed=0, workers=1, progress=False, sequences=True)
    over = {"tasks": "SP", "model.options": {"supervised_scales": [0, 1, 2, 3]}, "selfsup.enabled": True,
            "loss.options": {"weights": {"semseg": 1.0, "disparity": 1.0}}, "schedule.iterations": 2, "train.eval_every": 2}
    best = Trainer(config_from_dict(tiny_config(root, tmp_path, **over))).train()
    assert 0 < best["metrics"]["disparity"]["abs_rel"] < 10
    ck = load_checkpoint(tmp_path / "t/r/checkpoints/last.pt")
    assert ck["posenet"] and any(k.startswith("encoder.") for k in ck["posenet"])
    assert main(["train", "--resume", str(tmp_path / "t/r"), "schedule.iterations=3"]) == 0
    # Table-5 layout: one column per class, then mIoU and the self-supervised depth's AbsRel
    import json

    names = json.loads((tmp_path / "t/r/env.json").read_text())["dataset"]["class_names"]
    capsys.readouterr()
    assert main(["table", str(tmp_path / "t"), "--csv", str(tmp_path / "t5.csv")]) == 0
    head = capsys.readouterr().out.splitlines()[1]  # after the "Protocol: ..." line
    assert all(f" {n} |" in head for n in names) and "mIoU % ↑" in head and "AbsRel ↓" in head
    assert f"semseg_IoU_{names[0]}_mean" in (tmp_path / "t5.csv").read_text()
    assert main(["table", str(tmp_path / "t"), "--layout", "tasks"]) == 0
    head = capsys.readouterr().out.splitlines()[1]
    assert not any(f" {n} |" in head for n in names) and "AbsRel ↓" in head
    with pytest.raises(ValueError, match="needs the 'disparity' task"):
        Trainer(config_from_dict(tiny_config(root, tmp_path / "x", **{"selfsup.enabled": True})))


@pytest.mark.slow
def test_partial_initialisation_and_local_pose_weights(tmp_path):
    """The paper starts DenseMTL-SDE from a 3-ways self-supervised model: encoder, decoders and
    pose network from its checkpoint, the new mTEB block from scratch."""
    import timm
    from helpers import tiny_config
    from densemtl.config import config_from_dict
    from densemtl.data.synth import generate_dataset
    from densemtl.engine import CheckpointError, Trainer, save_checkpoint

    root = generate_dataset(tmp_path / "seq", num=6, size=(32, 48), seed=0, workers=1, progress=False, sequences=True)
    over = {"tasks": "SP", "model.options": {"supervised_scales": [0, 1, 2, 3], "mteb_scales": []}, "selfsup.enabled": True,
            "loss.options": {"weights": {"semseg": 1.0, "disparity": 1.0}}, "train.eval_every": 0}
    src = Trainer(config_from_dict(tiny_config(root, tmp_path / "a", **over)), run_dir=tmp_path / "a/run")
    for p in list(src.model.parameters()) + list(src.objective("selfsup").posenet.parameters()):  # recognisable weights
        p.data.normal_()
    ck = save_checkpoint({"model": src.model.state_dict(), "posenet": src.objective("selfsup").posenet.state_dict(),
                          "model_config": src.model.model_config}, tmp_path / "three_ways.pt")

    over_b = dict(over, **{"model.options": {"supervised_scales": [0, 1, 2, 3], "mteb_scales": [1]},
                           "train.init_from": str(ck), "train.init_parts": ["encoder", "decoders", "posenet"]})
    dst = Trainer(config_from_dict(tiny_config(root, tmp_path / "b", **over_b)), run_dir=tmp_path / "b/run")
    a, b = src.model.state_dict(), dst.model.state_dict()
    assert all(torch.equal(a[k], v) for k, v in b.items() if k.split(".")[0] in ("encoder", "decoders"))
    assert any(k.startswith("exchanges.") for k in b)  # mTEB exists and was not in the source
    assert all(torch.equal(src.objective("selfsup").posenet.state_dict()[k], v) for k, v in dst.objective("selfsup").posenet.state_dict().items())
    # the whole model cannot be loaded into another architecture; an unknown part is named
    with pytest.raises(CheckpointError, match="different model"):
        Trainer(config_from_dict(tiny_config(root, tmp_path / "c", **dict(over_b, **{"train.init_parts": None}))), run_dir=tmp_path / "c/run")
    with pytest.raises(CheckpointError, match="no part 'heads'"):
        Trainer(config_from_dict(tiny_config(root, tmp_path / "d", **dict(over_b, **{"train.init_parts": ["heads"]}))), run_dir=tmp_path / "d/run")
    with pytest.raises(CheckpointError, match="exchanges: .* missing"):
        Trainer(config_from_dict(tiny_config(root, tmp_path / "e", **dict(over_b, **{"train.init_parts": ["exchanges"]}))), run_dir=tmp_path / "e/run")

    # pose encoder from a local RGB ResNet-18 weights file: first layer duplicated and halved
    rgb = timm.create_model("resnet18", pretrained=False)
    torch.save(rgb.state_dict(), tmp_path / "r18.pth")
    pose = Trainer(config_from_dict(tiny_config(root, tmp_path / "f", **dict(over, **{"selfsup.pose_pretrained": str(tmp_path / "r18.pth")}))),
                   run_dir=tmp_path / "f/run").objective("selfsup").posenet
    w = pose.encoder.state_dict()["conv1.weight"]
    assert w.shape[1] == 6
    torch.testing.assert_close(w, torch.cat([rgb.conv1.weight, rgb.conv1.weight], 1) / 2)
    torch.testing.assert_close(pose.encoder.state_dict()["layer4.1.bn2.running_var"], rgb.layer4[1].bn2.running_var)


@pytest.mark.slow
def test_known_camera_motion_replaces_the_pose_network(tmp_path):
    from helpers import tiny_config
    from densemtl.config import config_from_dict
    from densemtl.data.synth import generate_dataset
    from densemtl.engine import Trainer

    root = generate_dataset(tmp_path / "seq", num=6, size=(32, 48), seed=0, workers=1, progress=False, sequences=True, motion="lateral")
    over = {"tasks": "SP", "model.options": {"supervised_scales": [0, 1, 2, 3]}, "selfsup.enabled": True,
            "selfsup.pose_source": "dataset", "loss.options": {"weights": {"semseg": 1.0, "disparity": 1.0}},
            "schedule.iterations": 1, "train.eval_every": 0}
    tr = Trainer(config_from_dict(tiny_config(root, tmp_path, **over)), run_dir=tmp_path / "run")
    assert tr.objective("selfsup").posenet is None and [g["name"] for g in tr.optimizer.param_groups] == ["backbone", "decoders"]
    logs = tr.step(next(iter(tr.train_loader)))
    assert logs["loss/disparity"] > 0
    batch = next(iter(tr.train_loader))
    del batch["poses"]
    with pytest.raises(ValueError, match="gives no camera poses"):
        tr.step(batch)
    with pytest.raises(ValueError, match="unknown camera motion"):
        generate_dataset(tmp_path / "x", num=2, sequences=True, motion="sideways")
