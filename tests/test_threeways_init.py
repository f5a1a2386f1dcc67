"""Table 5 as the released code ran it: Hoyer et al.'s self-supervised depth model converted
(``densemtl convert threeways``) and loaded into every task decoder, 3x3 disparity convs, the
learning-rate groups, the label subset of semi-supervised studies."""

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers import tiny_config
from torchvision.models.segmentation.deeplabv3 import ASPP

from densemtl.cli.main import main
from densemtl.config import config_from_dict, load_config
from densemtl.data.synth import generate_dataset
from densemtl.engine import CheckpointError, Trainer, load_checkpoint, model_from_checkpoint, save_checkpoint
from densemtl.interop.official import ConversionError
from densemtl.interop.threeways import convert_threeways_folder
from densemtl.models import create_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ENC = (64, 256, 512, 1024, 2048)  # ResNet-50/101 channels: stem, layer1..4
DEC = (64, 128, 128, 256, 256)  # the released decoder's num_ch_dec


# --- files in Hoyer et al.'s layout, written from the description of their modules -------------------
def _hoyer_decoder(seed: int = 0, scales=(0, 1, 2, 3)) -> "OrderedDict[str, torch.Tensor]":
    """depth.pth of their DepthDecoder (n_upconv 4, intermediate ASPP, identity skip projections):
    the modules are listed in creation order, for i = 4..0: upconv (i, 0), skip_proj (i) if i > 0,
    upconv (i, 1); then one 3x3 dispconv per scale. ConvBlock = Conv3x3 (reflection pad + conv) + ELU."""
    g = torch.Generator().manual_seed(seed)
    sd: OrderedDict = OrderedDict()
    idx = 0
    for i in range(4, -1, -1):
        if i == 4:
            aspp = ASPP(ENC[4], [6, 12, 18], DEC[4])
            for k, v in aspp.state_dict().items():
                if k.endswith("running_var"):
                    v.uniform_(0.5, 1.5, generator=g)
                elif v.is_floating_point():
                    v.normal_(0, 0.02, generator=g)
                sd[f"decoder.{idx}.{k}"] = v
        else:
            sd[f"decoder.{idx}.block.0.conv.weight"] = torch.randn(DEC[i], DEC[i + 1], 3, 3, generator=g) * 0.05
            sd[f"decoder.{idx}.block.0.conv.bias"] = torch.randn(DEC[i], generator=g) * 0.05
        idx += 1
        if i > 0:
            idx += 1  # skip_proj (identity: no tensors)
        cin = DEC[i] + (ENC[i - 1] if i > 0 else 0)
        sd[f"decoder.{idx}.block.0.conv.weight"] = torch.randn(DEC[i], cin, 3, 3, generator=g) * 0.05
        sd[f"decoder.{idx}.block.0.conv.bias"] = torch.randn(DEC[i], generator=g) * 0.05
        idx += 1
    for s in scales:
        sd[f"decoder.{idx}.conv.weight"] = torch.randn(1, DEC[s], 3, 3, generator=g) * 0.05
        sd[f"decoder.{idx}.conv.bias"] = torch.randn(1, generator=g) * 0.05
        idx += 1
    return sd


def _resnet_state(net, prefix="encoder."):
    return OrderedDict((prefix + k, v) for k, v in net.state_dict().items() if not k.startswith("fc."))


def _randomise_bn(net, seed):
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1, generator=g)
            m.running_var.uniform_(0.5, 1.5, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.normal_(0, 0.1, generator=g)


def _hoyer_nets():
    torch.manual_seed(0)
    enc = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, False, True]).eval()
    _randomise_bn(enc, 1)
    pose_enc = torchvision.models.resnet18(weights=None).eval()
    pose_enc.conv1 = torch.nn.Conv2d(6, 64, 7, 2, 3, bias=False)
    _randomise_bn(pose_enc, 2)
    g = torch.Generator().manual_seed(3)
    pose = OrderedDict([("net.0.weight", torch.randn(256, 512, 1, 1, generator=g) * 0.05), ("net.0.bias", torch.randn(256, generator=g) * 0.05),
                        ("net.1.weight", torch.randn(256, 256, 3, 3, generator=g) * 0.02), ("net.1.bias", torch.randn(256, generator=g) * 0.05),
                        ("net.2.weight", torch.randn(256, 256, 3, 3, generator=g) * 0.02), ("net.2.bias", torch.randn(256, generator=g) * 0.05),
                        ("net.3.weight", torch.randn(12, 256, 1, 1, generator=g) * 0.05), ("net.3.bias", torch.randn(12, generator=g) * 0.05)])
    return enc, pose_enc, pose


@pytest.fixture(scope="module")
def hoyer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hoyer") / "mono_cityscapes_1024x512_r101dil_aspp_dec6_lr5_fd2_crop512x512bs4"
    folder.mkdir()
    enc, pose_enc, pose = _hoyer_nets()
    dec = _hoyer_decoder()
    torch.save(_resnet_state(enc), folder / "encoder.pth")
    torch.save(dec, folder / "depth.pth")
    torch.save(_resnet_state(pose_enc), folder / "pose_encoder.pth")
    torch.save(pose, folder / "pose.pth")
    return folder, enc, pose_enc, pose, dec


# --- an independent forward of their networks (from their module descriptions) ----------------------
def _conv3x3(x, w, b):
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), w, b)


def _reference_disparities(x, enc, dec):
    x = (x - 0.45) / 0.225
    s0 = enc.relu(enc.bn1(enc.conv1(x)))
    l1 = enc.layer1(enc.maxpool(s0))
    l2 = enc.layer2(l1)
    l3 = enc.layer3(l2)
    l4 = enc.layer4(l3)
    feats = [s0, l1, l2, l3, l4]
    aspp = ASPP(ENC[4], [6, 12, 18], DEC[4]).eval()
    aspp.load_state_dict({k[len("decoder.0."):]: v for k, v in dec.items() if k.startswith("decoder.0.")})
    blocks = sorted({int(k.split(".")[1]) for k in dec if ".block." in k})
    disp = sorted({int(k.split(".")[1]) for k in dec if ".block." not in k and not k.startswith("decoder.0.")})
    it = iter(blocks)
    out, h = {}, feats[-1]
    for i in range(4, -1, -1):
        if i == 4:
            h = aspp(h)
        else:
            j = next(it)
            h = F.elu(_conv3x3(h, dec[f"decoder.{j}.block.0.conv.weight"], dec[f"decoder.{j}.block.0.conv.bias"]))
        if i == 0 or h.shape[-1] < feats[i - 1].shape[-1]:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
        if i > 0:
            h = torch.cat([h, feats[i - 1]], 1)
        j = next(it)
        h = F.elu(_conv3x3(h, dec[f"decoder.{j}.block.0.conv.weight"], dec[f"decoder.{j}.block.0.conv.bias"]))
        if i < len(disp):
            k = disp[i]
            out[i] = torch.sigmoid(_conv3x3(h, dec[f"decoder.{k}.conv.weight"], dec[f"decoder.{k}.conv.bias"]))
    return out


def _reference_pose(a, b, pose_enc, pose):
    x = (torch.cat([a, b], 1) - 0.45) / 0.225
    e = pose_enc
    f = e.layer4(e.layer3(e.layer2(e.layer1(e.maxpool(e.relu(e.bn1(e.conv1(x))))))))
    h = F.relu(F.conv2d(f, pose["net.0.weight"], pose["net.0.bias"]))
    h = F.relu(F.conv2d(h, pose["net.1.weight"], pose["net.1.bias"], padding=1))
    h = F.relu(F.conv2d(h, pose["net.2.weight"], pose["net.2.bias"], padding=1))
    h = F.conv2d(h, pose["net.3.weight"], pose["net.3.bias"]).mean(3).mean(2)
    h = 0.01 * h.view(-1, 2, 1, 6)
    return h[:, 0, 0, :3], h[:, 0, 0, 3:]  # the first predicted frame: what the 'pairs' mode reads


@pytest.mark.slow
def test_convert_threeways_equals_their_networks(hoyer, tmp_path, capsys):
    folder, enc, pose_enc, pose, dec = hoyer
    out = tmp_path / "hoyer.pt"
    assert main(["convert", "threeways", str(folder), "--out", str(out)]) == 0
    log = capsys.readouterr().out
    assert "rows 6..11" in log and "init_decoder_source=disparity" in log
    ck = load_checkpoint(out)
    mc = ck["model_config"]
    assert (mc["name"], mc["tasks"], mc["backbone"]) == ("densemtl", ["disparity"], "resnet50")
    assert mc["options"]["disparity_head"] == "conv3x3" and mc["options"]["input_norm"] == "authors"
    assert mc["options"]["supervised_scales"] == [0, 1, 2, 3] and mc["options"]["mteb_scales"] == []
    assert ck["config"]["data"]["dataset"] == "cityscapes"  # from the released folder's name
    n_tensors = sum(ck["converted_from"]["tensors"].values())
    assert n_tensors == len(dec) + len(_resnet_state(enc)) + len(_resnet_state(pose_enc)) + len(pose)
    model = model_from_checkpoint(ck).eval()
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        ours = model(x)["disparity"]
        ref = _reference_disparities(x, enc, dec)
    assert sorted(ours) == sorted(ref) == [0, 1, 2, 3]
    for s in ref:
        torch.testing.assert_close(torch.sigmoid(ours[s]), ref[s], rtol=1e-4, atol=1e-5)
    from densemtl.selfsup import PoseNet

    net = PoseNet("resnet18", input_norm="authors").eval()
    net.load_state_dict(ck["posenet"])
    a, b = torch.rand(2, 3, 64, 96), torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        got, want = net(a, b), _reference_pose(a, b, pose_enc, pose)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_convert_threeways_is_strict(hoyer, tmp_path):
    folder = hoyer[0]

    def variant(name, **files):
        d = tmp_path / name
        d.mkdir()
        for f in ("encoder.pth", "depth.pth", "pose_encoder.pth", "pose.pth"):
            if files.get(f, True) is not None:
                torch.save(files[f], d / f) if f in files else (d / f).symlink_to(folder / f)
        return d

    with pytest.raises(ConversionError, match="missing pose.pth"):
        convert_threeways_folder(variant("nopose", **{"pose.pth": None}), tmp_path / "x.pt", log=lambda _: None)
    dec = torch.load(folder / "depth.pth")
    extra = OrderedDict(dec, **{"decoder.1.0.weight": torch.zeros(4, 4, 1, 1)})  # a projected skip: another architecture
    with pytest.raises(ConversionError, match=r"(?s)depth.pth: 1 key\(s\) have no place.*decoder.1.0.weight"):
        convert_threeways_folder(variant("extra", **{"depth.pth": extra}), tmp_path / "x.pt", log=lambda _: None)
    narrow = OrderedDict((k, v[:, :8] if k == "decoder.14.conv.weight" else v) for k, v in dec.items())
    with pytest.raises(ConversionError, match=r"decoder.14.conv.weight: file \(1, 8, 3, 3\), model \(1, 64, 3, 3\)"):
        convert_threeways_folder(variant("narrow", **{"depth.pth": narrow}), tmp_path / "x.pt", log=lambda _: None)
    gone = OrderedDict((k, v) for k, v in dec.items() if not k.startswith("decoder.13."))
    with pytest.raises(ConversionError, match=r"missing:\s+decoder.13.block.0.conv"):
        convert_threeways_folder(variant("gone", **{"depth.pth": gone}), tmp_path / "x.pt", log=lambda _: None)
    r18 = _resnet_state(torchvision.models.resnet18(weights=None))
    with pytest.raises(ConversionError, match="basic blocks"):
        convert_threeways_folder(variant("r18", **{"encoder.pth": r18}), tmp_path / "x.pt", log=lambda _: None)
    with pytest.raises(ConversionError, match="not a state dict"):
        convert_threeways_folder(variant("list", **{"pose.pth": [1, 2]}), tmp_path / "x.pt", log=lambda _: None)
    assert not (tmp_path / "x.pt").exists()
    # a pose decoder predicting one frame (6 numbers) is used whole; nothing is dropped
    one = OrderedDict((k, v[:6] if k.startswith("net.3.") else v) for k, v in torch.load(folder / "pose.pth").items())
    ck = convert_threeways_folder(variant("one", **{"pose.pth": one}), tmp_path / "one.pt", log=lambda _: None)
    assert ck["converted_from"]["dropped"] == []
    torch.testing.assert_close(ck["posenet"]["decoder.5.weight"], one["net.3.weight"])
    # the CLI: one line, no traceback
    assert main(["convert", "threeways", str(tmp_path / "nowhere"), "--out", str(tmp_path / "y.pt")]) == 2


@pytest.mark.slow
def test_converted_model_initialises_every_task_decoder(hoyer, tmp_path, capsys):
    """Table 5's start: encoder, pose network and the depth decoder into EVERY decoder (ASPP and
    conv blocks; the 3x3 disparity convs only into the disparity decoder)."""
    folder, enc, pose_enc, pose, dec = hoyer
    ck_path = tmp_path / "hoyer.pt"
    convert_threeways_folder(folder, ck_path, log=lambda _: None)
    root = generate_dataset(tmp_path / "seq", num=4, size=(64, 64), seed=0, workers=1, progress=False, sequences=True)
    over = {"tasks": "SP", "model.backbone": "resnet50", "selfsup.enabled": True, "train.eval_every": 0,
            "model.options": {"supervised_scales": [0, 1, 2, 3], "mteb_scales": [1], "disparity_head": "conv3x3",
                              "input_norm": "authors"},
            "loss.options": {"weights": {"semseg": 1.0, "disparity": 1.0}},
            "train.init_from": str(ck_path), "train.init_parts": ["encoder", "decoders", "posenet"],
            "train.init_decoder_source": "disparity"}
    tr = Trainer(config_from_dict(tiny_config(root, tmp_path / "a", **over)), run_dir=tmp_path / "a/run")
    log = capsys.readouterr().out
    assert "decoders.semseg <- decoders.disparity (ASPP and conv blocks; its prediction heads start afresh)" in log
    sd = tr.model.state_dict()
    torch.testing.assert_close(sd["decoders.semseg.fuse4.conv.weight"], dec["decoder.2.block.0.conv.weight"])
    torch.testing.assert_close(sd["decoders.semseg.fuse0.conv.bias"], dec["decoder.13.block.0.conv.bias"])
    torch.testing.assert_close(sd["decoders.semseg.aspp.project.0.weight"], dec["decoder.0.project.0.weight"])
    torch.testing.assert_close(sd["decoders.disparity.heads.2.conv.weight"], dec["decoder.16.conv.weight"])
    torch.testing.assert_close(sd["encoder.body.layer4.2.conv3.weight"], enc.layer4[2].conv3.weight)
    assert sd["decoders.semseg.heads.0.weight"].shape[1:] == (64, 1, 1)  # fresh 1x1 segmentation heads
    posenet = tr.objective("selfsup").posenet
    torch.testing.assert_close(posenet.state_dict()["squeeze.weight"], pose["net.0.weight"])
    torch.testing.assert_close(posenet.mean[0, :3].flatten(), torch.full((3,), 0.45))  # the model's input_norm


def _tiny_disparity_checkpoint(root, tmp_path, head="conv3x3"):
    over = {"tasks": "P", "selfsup.enabled": True, "train.eval_every": 0,
            "model.options": {"supervised_scales": [0, 1, 2, 3], "mteb_scales": [], "disparity_head": head}}
    src = Trainer(config_from_dict(tiny_config(root, tmp_path / "src", **over)), run_dir=tmp_path / "src/run")
    for p in list(src.model.parameters()) + list(src.objective("selfsup").posenet.parameters()):
        p.data.normal_()  # recognisable weights
    return save_checkpoint({"model": src.model.state_dict(), "posenet": src.objective("selfsup").posenet.state_dict(),
                            "model_config": src.model.model_config}, tmp_path / f"p_{head}.pt"), src.model.state_dict()


@pytest.mark.slow
def test_init_decoder_source_rules(tmp_path):
    root = generate_dataset(tmp_path / "seq", num=4, size=(32, 48), seed=0, workers=1, progress=False, sequences=True)
    ck, src = _tiny_disparity_checkpoint(root, tmp_path)
    over = {"tasks": "SP", "selfsup.enabled": True, "train.eval_every": 0,
            "model.options": {"supervised_scales": [0, 1, 2, 3], "mteb_scales": [1], "disparity_head": "conv3x3"},
            "loss.options": {"weights": {"semseg": 1.0, "disparity": 1.0}}, "train.init_from": str(ck),
            "train.init_parts": ["encoder", "decoders"], "train.init_decoder_source": "disparity"}

    def build(name, **o):
        return Trainer(config_from_dict(tiny_config(root, tmp_path / name, **{**over, **o})), run_dir=tmp_path / name / "run")

    fresh = build("fresh", **{"train.init_from": None, "train.init_parts": None, "train.init_decoder_source": None}).model.state_dict()
    sd = build("a").model.state_dict()
    for k, v in sd.items():
        if k.startswith("decoders.semseg.") and ".heads." not in k:
            assert torch.equal(v, src["decoders.disparity." + k[len("decoders.semseg."):]]), k
        elif k.startswith(("decoders.disparity.", "encoder.")):
            assert torch.equal(v, src[k]), k
        elif k.startswith(("decoders.semseg.heads.", "exchanges.")):
            assert torch.equal(v, fresh[k]), k  # as a run without init_from starts them
    # one decoder only; a part inside a decoder
    sd = build("b", **{"train.init_parts": ["decoders.semseg.aspp"]}).model.state_dict()
    assert torch.equal(sd["decoders.semseg.aspp.project.0.weight"], src["decoders.disparity.aspp.project.0.weight"])
    assert torch.equal(sd["decoders.semseg.fuse4.conv.weight"], fresh["decoders.semseg.fuse4.conv.weight"])
    with pytest.raises(CheckpointError, match="heads of 'semseg' cannot come from the 'disparity' decoder"):
        build("c", **{"train.init_parts": ["decoders.semseg.heads"]})
    with pytest.raises(CheckpointError, match="has no 'semseg' decoder .*its decoders: disparity"):
        build("d", **{"train.init_decoder_source": "semseg"})
    with pytest.raises(CheckpointError, match="needs train.init_parts"):
        build("e", **{"train.init_parts": None})
    # strict over what must match: 1x1 disparity heads cannot take the file's 3x3 convs
    with pytest.raises(CheckpointError, match=r"decoders.disparity.heads: .*missing"):
        build("f", **{"model.options": {**over["model.options"], "disparity_head": "conv1x1"}})


def test_disparity_head_3x3_is_reflection_padded_and_optional():
    torch.manual_seed(0)
    m3 = create_model("densemtl", "SP", 5, "resnet18", mteb_scales=[], supervised_scales=[0, 1], disparity_head="conv3x3").eval()
    m1 = create_model("densemtl", "SP", 5, "resnet18", mteb_scales=[], supervised_scales=[0, 1]).eval()
    head = m3.decoders["disparity"].heads["0"]
    assert head.conv.kernel_size == (3, 3) and m1.decoders["disparity"].heads["0"].kernel_size == (1, 1)
    assert m3.decoders["semseg"].heads["0"].kernel_size == (1, 1)  # other tasks keep 1x1 convs
    assert m3.prediction_layers()["disparity"] == [h.conv for h in m3.decoders["disparity"].heads.values()]
    feats = {}
    m3.decoders["disparity"].heads["0"].register_forward_hook(lambda mod, inp, out: feats.update(x=inp[0], y=out))
    with torch.no_grad():
        out = m3(torch.rand(1, 3, 32, 48))
    x = feats["x"].numpy()[0]
    w, b = head.conv.weight.detach().numpy()[0], head.conv.bias.detach().numpy()[0]
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    ref = b + sum(w[c, i, j] * xp[c, i:i + x.shape[1], j:j + x.shape[2]] for c in range(x.shape[0]) for i in range(3) for j in range(3))
    np.testing.assert_allclose(out["disparity"][0][0, 0].numpy(), ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="disparity_head must be one of conv1x1, conv3x3"):
        create_model("densemtl", "SP", 5, "resnet18", disparity_head="conv5x5")


def test_table5_learning_rate_groups_and_optimizer(tmp_path):
    preset = load_config(CONFIGS / "table5/cityscapes/3ways_mteb.yaml")
    root = generate_dataset(tmp_path / "seq", num=4, size=(32, 48), seed=0, workers=1, progress=False, sequences=True)
    o = preset.optim
    over = {"tasks": "SP", "selfsup.enabled": True, "train.eval_every": 0, "selfsup.lr_pose": preset.selfsup.lr_pose,
            "model.options": {"supervised_scales": [0, 1, 2, 3], "mteb_scales": [1], "disparity_head": "conv3x3"},
            "loss.options": {"weights": {"semseg": 1.0, "disparity": 1.0}},
            "optim": {"name": o.name, "lr_backbone": o.lr_backbone, "lr_decoder": o.lr_decoder, "betas": list(o.betas),
                      "clip_grad_norm": o.clip_grad_norm}}
    tr = Trainer(config_from_dict(tiny_config(root, tmp_path, **over)), run_dir=tmp_path / "run")
    opt = tr.optimizer
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["betas"] == (0.9, 0.999)
    groups = {g["name"]: g for g in opt.param_groups}
    assert {n: g["lr"] for n, g in groups.items()} == {"backbone": 1e-5, "decoders": 5e-5, "pose": 1e-6}
    ids = {n: {id(p) for p in g["params"]} for n, g in groups.items()}
    assert ids["backbone"] == {id(p) for p in tr.model.encoder.parameters()}
    assert ids["pose"] == {id(p) for p in tr.objective("selfsup").posenet.parameters()}
    assert ids["decoders"] == {id(p) for n, p in tr.model.named_parameters() if not n.startswith("encoder.")}
    assert tr.cfg.optim.clip_grad_norm == 10.0


def _cityscapes_with_sequences(root, n=3):
    from PIL import Image

    from data_fixtures import write_cityscapes

    stems = write_cityscapes(root, "train", n=n, h=32, w=64)
    for stem in stems:
        city, name = stem.split("/")
        prefix, frame = name.rsplit("_", 1)
        d = root / "leftImg8bit_sequence/train" / city
        d.mkdir(parents=True, exist_ok=True)
        for k in (-1, 1):
            Image.fromarray(np.full((32, 64, 3), 100 + k, np.uint8)).save(d / f"{prefix}_{int(frame) + k:06d}_leftImg8bit.png")
    return stems


def test_cityscapes_sde_uses_every_labelled_frame_and_label_subsets(tmp_path):
    from densemtl.data import DataError, create_dataset

    stems = _cityscapes_with_sequences(tmp_path)
    full = create_dataset("cityscapes", tmp_path, "train", "SP", size=(32, 64), sequence=True, augment=False)
    # Table 5: every labelled training frame (leftImg8bit/train), each with its two sequence neighbours
    assert sorted(full.records) == sorted(stems)
    assert all(set(full[i]["frames"]) == {-1, 1} for i in range(len(full)))
    labelled = stems[1:2]
    part = create_dataset("cityscapes", tmp_path, "train", "SP", size=(32, 64), sequence=True, augment=False,
                          label_subset=labelled)
    assert len(part) == 3
    for i, rec in enumerate(part.records):
        s, ref = part[i], full[i]
        assert set(s["frames"]) == {-1, 1} and torch.equal(s["labels"]["disparity"], ref["labels"]["disparity"])
        if rec in labelled:
            assert torch.equal(s["labels"]["semseg"], ref["labels"]["semseg"]) and (s["labels"]["semseg"] != 255).any()
        else:
            assert (s["labels"]["semseg"] == 255).all()
    ids = tmp_path / "subset.txt"
    ids.write_text(f"# fixed list\n{labelled[0]}  # the second frame\n\n")
    dropped = create_dataset("cityscapes", tmp_path, "train", "S", size=(32, 64), label_subset=str(ids), label_subset_others="dropped")
    assert dropped.records == labelled
    with pytest.raises(DataError, match=r"label_subset: 1 of its 2 id\(s\) are not samples of cityscapes split 'train'"):
        create_dataset("cityscapes", tmp_path, "train", "S", size=(32, 64), label_subset=[labelled[0], "ulm/ulm_0_0"])
    ids.write_text(f"{labelled[0]}\n{labelled[0]}\n")
    with pytest.raises(DataError, match="listed twice"):
        create_dataset("cityscapes", tmp_path, "train", "S", size=(32, 64), label_subset=str(ids))
    with pytest.raises(ValueError, match="label_subset_others must be one of unlabelled, dropped"):
        create_dataset("cityscapes", tmp_path, "train", "S", size=(32, 64), label_subset=labelled, label_subset_others="x")


@pytest.mark.slow
def test_checkpoint_without_a_newer_option_loads_with_its_default(tmp_path):
    """A checkpoint written before ``disparity_head`` existed records no such option: it had the
    default (conv1x1), so it still loads; one that differs from the config is still refused."""
    m = create_model("densemtl", "SP", 5, "resnet18", mteb_scales=[], supervised_scales=[0, 1])
    mc = {**m.model_config, "options": {k: v for k, v in m.model_config["options"].items() if k != "disparity_head"}}
    ck = load_checkpoint(save_checkpoint({"model": m.state_dict(), "model_config": mc}, tmp_path / "old.pt"))
    assert model_from_checkpoint(ck).model_config["options"]["disparity_head"] == "conv1x1"
    from densemtl.engine.checkpoint import check_model_config

    m3 = create_model("densemtl", "SP", 5, "resnet18", mteb_scales=[], supervised_scales=[0, 1], disparity_head="conv3x3")
    with pytest.raises(CheckpointError, match="model.options.disparity_head: checkpoint has 'conv1x1', the config builds 'conv3x3'"):
        check_model_config(ck, m3.model_config, "checkpoint")
