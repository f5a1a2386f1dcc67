"""Domain adaptation building blocks: alignment maps, patch discriminators, schedules, the
8-class VKITTI2 <-> Cityscapes label sets and the VKITTI2 source crop."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn.utils import parametrize

from data_fixtures import VK_COLORS, write_cityscapes, write_vkitti2
from densemtl.config import ConfigError, load_config
from densemtl.data import create_dataset
from densemtl.data.transforms import random_crop
from densemtl.engine.builders import build_dataset, dataset_info
from densemtl.uda import (SOURCE_LABEL, TARGET_LABEL, PatchDiscriminator, alignment_maps, build_discriminator_optimizer,
                          build_discriminators, build_poly_scheduler, depth_map, DomainCritic, map_channels,
                          patch_output_size, poly_lr, self_information, set_requires_grad)

UDA8 = ("road", "building", "pole", "traffic light", "traffic sign", "vegetation", "sky", "vehicle")


# --- self-information and depth maps -------------------------------------------------------
@pytest.mark.parametrize("c", [2, 8, 16])
def test_self_information_uniform_is_one_and_one_hot_is_zero(c):
    uniform = self_information(torch.zeros(2, c, 3, 5))
    assert uniform.shape == (2, c, 3, 5)
    assert torch.allclose(uniform.sum(1), torch.ones(2, 3, 5), atol=1e-6)
    assert torch.allclose(uniform, torch.full_like(uniform, 1 / c), atol=1e-6)
    # exact one-hot (-inf logits): exactly 0, and finite gradients
    logits = torch.full((2, c, 3, 5), float("-inf"))
    logits[:, 1] = 0.0
    logits.requires_grad_(True)
    si = self_information(logits)
    assert torch.equal(si, torch.zeros_like(si))
    si.sum().backward()
    assert torch.isfinite(logits.grad).all()
    # a very confident softmax is ~0 too, never NaN
    big = torch.zeros(1, c, 2, 2)
    big[:, 0] = 200.0
    si = self_information(big)
    assert torch.isfinite(si).all() and si.sum(1).max() < 1e-6


def test_self_information_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (2, 7, 4, 6))
    e = np.exp(logits - logits.max(1, keepdims=True))
    p = e / e.sum(1, keepdims=True)
    expected = -p * np.log(p) / np.log(7)
    ours = self_information(torch.tensor(logits, dtype=torch.float64))
    assert np.allclose(ours.numpy(), expected, atol=1e-12)
    assert ((ours.sum(1) > 0) & (ours.sum(1) <= 1)).all()


def test_depth_map_fixed_bounded_and_differentiable():
    d = torch.tensor([0.5, 1.0, 10.0, 80.0, 1000.0], dtype=torch.float64)
    code = (655.36 / (d + 0.01)).view(1, 1, 1, -1).requires_grad_(True)
    n = depth_map(code, ref_depth=10.0)
    assert n.shape == code.shape
    assert torch.allclose(n.flatten(), (10.01 / (10.0 + d + 0.02)))
    assert n[0, 0, 0, 2].item() == pytest.approx(0.5)
    assert (n.diff(dim=-1) < 0).all() and (n > 0).all() and (n < 1).all()  # near = bright
    n.sum().backward()
    assert torch.isfinite(code.grad).all() and (code.grad > 0).all()
    # codes <= 0 ("infinitely far") -> 0; per pixel, independent of the rest of the batch
    assert depth_map(torch.tensor([[[[-5.0, 0.0]]]])).tolist() == [[[[0.0, 0.0]]]]
    x = torch.rand(3, 1, 4, 4) * 500
    assert torch.equal(depth_map(x)[1:2, :, :2], depth_map(x[1:2, :, :2]))


# --- discriminators -------------------------------------------------------------------------
def _conv_chain(n):
    for _ in range(5):
        n = (n + 2 * 1 - 4) // 2 + 1
        assert n >= 1
    return n


@pytest.mark.parametrize("hw", [(32, 32), (33, 100), (64, 48), (95, 130)])
def test_discriminator_output_shape_follows_formula(hw):
    d = PatchDiscriminator(3)
    out = d(torch.randn(2, 3, *hw))
    assert out.shape == (2, 1, hw[0] // 32, hw[1] // 32) == (2, 1, *patch_output_size(hw))
    assert patch_output_size(hw) == (_conv_chain(hw[0]), _conv_chain(hw[1]))


def test_discriminator_formula_large_and_too_small():
    for n in (32, 63, 64, 320, 511, 512, 1024, 1696):
        assert patch_output_size(n) == n // 32 == _conv_chain(n)
    assert patch_output_size((512, 1024)) == (16, 32)
    with pytest.raises(ValueError, match="too small"):
        PatchDiscriminator(1)(torch.zeros(1, 1, 31, 64))


def test_spectral_norm_is_active():
    torch.manual_seed(0)
    d = PatchDiscriminator(8)
    convs = d.convs()
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert [c.kernel_size + c.stride + c.padding for c in convs] == [(4, 4, 2, 2, 1, 1)] * 5
    assert all(parametrize.is_parametrized(c, "weight") for c in convs)
    assert [m.negative_slope for m in d.layers if isinstance(m, torch.nn.LeakyReLU)] == [0.2] * 4
    # sigma_max of the effective weights ~ 1 (narrow widths: the same layers, a faster test)
    d = PatchDiscriminator(8, widths=(16, 24, 32, 48))
    convs = d.convs()
    d.train()
    for c in convs:  # each access in train mode runs one power iteration
        for _ in range(100):
            c.weight
    d.eval()
    for c in convs:
        w = c.weight.reshape(c.out_channels, -1)
        raw = c.parametrizations.weight.original.reshape(c.out_channels, -1)
        assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, rel=5e-3)
        assert torch.linalg.matrix_norm(raw, ord=2).item() < 0.9  # the raw init is not normalised
    # the effective weight does not depend on the scale of the raw weight
    x = torch.randn(1, 8, 64, 64)
    y = d(x)
    with torch.no_grad():
        convs[1].parametrizations.weight.original.mul_(7.0)
    assert torch.allclose(d(x), y, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_build_discriminators_maps_and_losses():
    tasks, scales = ("semseg", "depth"), (0, 1)
    ch = map_channels(tasks, num_classes=8)
    assert ch == {"semseg": 8, "depth": 1}
    discs = build_discriminators(tasks, scales, ch)
    assert list(discs) == ["semseg/0", "semseg/1", "depth/0", "depth/1"]
    assert discs["semseg/1"].in_channels == 8 and discs["depth/0"].in_channels == 1
    assert list(build_discriminators(tasks, {"semseg": [2, 0], "depth": [0]}, ch)) == ["semseg/0", "semseg/2", "depth/0"]

    # a stand-in "model": one conv per task; maps upsampled to the image size
    torch.manual_seed(0)
    heads = torch.nn.ModuleDict({"semseg": torch.nn.Conv2d(3, 8, 1), "depth": torch.nn.Conv2d(3, 1, 1)})
    torch.nn.init.constant_(heads["depth"].bias, 65.5)  # the depth head starts at 10 m (positive codes)
    img = torch.rand(2, 3, 64, 64)

    def outputs():
        half = torch.nn.functional.avg_pool2d(img, 2)
        return {t: {0: heads[t](img), 1: heads[t](half)} for t in tasks}

    maps = alignment_maps(outputs(), size=(64, 64))
    assert {k: tuple(v.shape) for k, v in maps.items()} == {
        "semseg/0": (2, 8, 64, 64), "semseg/1": (2, 8, 64, 64), "depth/0": (2, 1, 64, 64), "depth/1": (2, 1, 64, 64)}
    assert all(0 <= v.min() and v.max() <= 1 for v in maps.values())

    # generator step (what training runs: the critic over all discriminators): discriminators
    # frozen, only the heads get gradients
    critic = DomainCritic(discs)
    d_before = [p.detach().clone() for p in discs.parameters()]
    set_requires_grad(critic, False)
    losses = critic(maps, SOURCE_LABEL)
    assert set(losses) == set(maps)
    logit = discs["depth/1"](maps["depth/1"])  # each loss is the BCE of its own discriminator's patches
    assert torch.allclose(losses["depth/1"], torch.nn.functional.softplus(logit).mean())
    with pytest.raises(KeyError, match="no discriminator"):
        critic({"normals/0": maps["depth/0"]}, SOURCE_LABEL)
    torch.stack(list(losses.values())).sum().backward()
    assert all(p.grad is None for p in discs.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in heads.parameters())
    # discriminator step on detached maps: no gradient reaches the heads
    heads.zero_grad(set_to_none=True)
    set_requires_grad(critic, True)
    opt = build_discriminator_optimizer(discs)
    assert opt.defaults["lr"] == 1e-4 and opt.defaults["betas"] == (0.9, 0.99)
    src = {k: v.detach() for k, v in alignment_maps(outputs(), size=(64, 64)).items()}
    tgt = {k: v.detach() for k, v in maps.items()}
    loss = sum(critic(src, SOURCE_LABEL).values()) + sum(critic(tgt, TARGET_LABEL).values())
    loss.backward()
    opt.step()
    assert all(p.grad is None for p in heads.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(d_before, discs.parameters()))


def test_poly_schedule():
    assert poly_lr(1e-4, 0, 100) == 1e-4
    assert poly_lr(1e-4, 50, 100) == pytest.approx(1e-4 * 0.5 ** 0.9)
    assert poly_lr(1e-4, 100, 100) == 0.0 and poly_lr(1e-4, 150, 100) == 0.0
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1e-4)
    sched = build_poly_scheduler(opt, 10)
    for _ in range(3):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4 * 0.7 ** 0.9)
    opt2 = torch.optim.Adam([p], lr=1e-4)
    sched2 = build_poly_scheduler(opt2, 999)
    sched2.load_state_dict(sched.state_dict())  # the factor (a callable object) is restored
    sched2.step()
    assert sched2.get_last_lr()[0] == pytest.approx(1e-4 * 0.6 ** 0.9)


# --- 8-class label sets on the datasets' on-disk formats -----------------------------------
def test_cityscapes_uda8_mapping(tmp_path):
    lab = np.concatenate([np.arange(34), [255, 7, 26, 28, 27, 22]]).astype(np.uint8).reshape(5, 8)
    write_cityscapes(tmp_path, "val", n=1, h=5, w=8, label_ids=lab)
    ds = create_dataset("cityscapes", tmp_path, "val", "S", size=(5, 8), label_set="uda8")
    assert ds.num_classes == 8 and ds.class_names == UDA8
    official = {7: "road", 11: "building", 17: "pole", 19: "traffic light", 20: "traffic sign",
                21: "vegetation", 23: "sky", 26: "vehicle", 28: "vehicle"}  # car, bus; truck (27) is void
    expected = np.vectorize(lambda i: UDA8.index(official[i]) if i in official else 255)(lab)
    assert np.array_equal(ds.load(0)["labels"]["semseg"], expected)
    assert sorted(np.unique(expected).tolist()) == [0, 1, 2, 3, 4, 5, 6, 7, 255]
    # the default stays the 16 classes
    assert create_dataset("cityscapes", tmp_path, "val", "S", size=(5, 8)).num_classes == 16
    with pytest.raises(ValueError, match="label sets"):
        create_dataset("cityscapes", tmp_path, "val", "S", label_set="uda7")


def test_vkitti2_uda8_mapping(tmp_path):
    write_vkitti2(tmp_path, scenes=("Scene01",), frames=3, h=12, w=40)
    ds = create_dataset("vkitti2", tmp_path, "all", "S", size=(12, 40), label_set="uda8")
    assert ds.num_classes == 8 and ds.class_names == UDA8
    # independent decoding: colors.txt name -> 8-class name
    to8 = {"Road": "road", "Building": "building", "Pole": "pole", "TrafficLight": "traffic light",
           "TrafficSign": "traffic sign", "Tree": "vegetation", "Vegetation": "vegetation", "Sky": "sky",
           "Truck": "vehicle", "Car": "vehicle", "Van": "vehicle"}
    colour = {}
    for line in VK_COLORS.splitlines()[1:]:
        name, r, g, b = line.split()
        colour[(int(r), int(g), int(b))] = UDA8.index(to8[name]) if name in to8 else 255
    for i, rec in enumerate(ds.records):
        scene, frame = rec.split("/")
        rgb = np.asarray(Image.open(tmp_path / scene / "15-deg-left/frames/classSegmentation/Camera_0" / f"classgt_{frame}.png"))
        expected = np.array([[colour[tuple(int(v) for v in px)] for px in row] for row in rgb])
        assert np.array_equal(ds.load(i)["labels"]["semseg"], expected)
    assert set(np.unique(expected).tolist()) == {0, 1, 2, 3, 4, 5, 6, 7, 255}
    assert create_dataset("vkitti2", tmp_path, "all", "S", size=(12, 40)).num_classes == 14


# --- VKITTI2 source recipe: resize to 1696x512, random crop 1024x512 -------------------------
def test_random_crop_1696_to_1024():
    h, w = 512, 1696
    cols = np.broadcast_to(np.arange(w, dtype=np.float32), (h, w))
    K = np.array([[990.0, 0, 848.0], [0, 990.0, 255.0], [0, 0, 1]])
    sample = {"image": np.stack([cols] * 3, -1), "K": K, "id": "x",
              "labels": {"semseg": (cols % 200).astype(np.uint8), "depth": cols.copy()}}
    lefts = set()
    for seed in range(6):
        c = random_crop(sample, np.random.default_rng(seed), (512, 1024))
        assert c["image"].shape == (512, 1024, 3) and c["labels"]["semseg"].shape == (512, 1024)
        left = int(c["image"][0, 0, 0])
        assert 0 <= left <= w - 1024
        assert np.array_equal(c["labels"]["depth"][0], np.arange(left, left + 1024))
        assert np.array_equal(c["labels"]["semseg"], sample["labels"]["semseg"][:, left:left + 1024])
        assert c["K"][0, 2] == pytest.approx(848.0 - left) and c["K"][1, 2] == 255.0 and c["K"][0, 0] == 990.0
        lefts.add(left)
    assert len(lefts) > 1
    with pytest.raises(ValueError):
        random_crop(sample, np.random.default_rng(0), (600, 1024))


def test_vkitti2_source_recipe_from_config(tmp_path):
    write_vkitti2(tmp_path, scenes=("Scene01",), frames=3, h=15, w=50)
    cfg = load_config(None, ["data.dataset=vkitti2", f"data.root={tmp_path}", "data.size=[512,1696]",
                             "data.crop=[512,1024]", "data.options.label_set=uda8", "data.augment=false", "tasks=SD"])
    assert dataset_info(cfg)["num_classes"] == 8 and dataset_info(cfg)["class_names"] == list(UDA8)
    tr = build_dataset(cfg, "train", train=True)
    assert tr.crop == (512, 1024) and tr.num_classes == 8
    full = tr.load(0)  # resized, not cropped
    assert full["image"].shape == (512, 1696, 3)
    s = tr[0]
    assert s["image"].shape == (3, 512, 1024) and s["labels"]["semseg"].shape == (512, 1024)
    img = s["image"].permute(1, 2, 0).numpy()
    left = int(round(full["K"][0, 2] - s["K"][0, 2].item()))
    assert 0 <= left <= 1696 - 1024
    assert np.array_equal(img, full["image"][:, left:left + 1024])
    assert np.array_equal(s["labels"]["semseg"].numpy(), full["labels"]["semseg"][:, left:left + 1024])
    assert set(s["labels"]["semseg"].unique().tolist()) <= set(range(8)) | {255}
    tr.set_epoch(1)
    assert torch.equal(tr[0]["image"], tr[0]["image"])  # deterministic per (seed, epoch, index)
    # validation sets are not cropped; a bad crop is rejected
    assert build_dataset(cfg, "val", train=False)[0]["image"].shape == (3, 512, 1696)
    with pytest.raises(ConfigError, match="data.crop"):
        load_config(None, ["data.crop=512"])
    with pytest.raises(ValueError, match="crop"):
        create_dataset("vkitti2", tmp_path, "all", "S", size=(64, 128), crop=(64, 256))
