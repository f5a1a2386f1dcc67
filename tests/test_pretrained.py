"""Local pretrained weights (torchvision / timm naming, .pth / .safetensors); no network."""

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from densemtl.models import create_model


def _torchvision_resnet18_sd():
    torch.manual_seed(3)
    return torchvision.models.resnet18(weights=None).state_dict()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_torchvision_weights_load_exactly(tmp_path, fmt):
    sd = _torchvision_resnet18_sd()
    path = tmp_path / f"r18.{fmt}"
    if fmt == "pth":
        torch.save(sd, path)
    else:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    m = create_model("densemtl", "SD", num_classes=3, backbone="resnet18", pretrained=str(path))
    own = m.encoder.body.state_dict()
    assert torch.equal(own["conv1.weight"], sd["conv1.weight"])
    assert torch.equal(own["layer4.1.bn2.running_var"], sd["layer4.1.bn2.running_var"])
    assert all(torch.equal(own[k], sd[k]) for k in own)


def test_timm_naming_with_prefix_and_wrapper(tmp_path):
    torch.manual_seed(4)
    sd = timm.create_model("resnet18").state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "w.pth")
    m = create_model("mtl", "SD", num_classes=3, backbone="resnet18", pretrained=str(tmp_path / "w.pth"))
    assert torch.equal(m.encoder.body.state_dict()["layer3.0.conv1.weight"], sd["layer3.0.conv1.weight"])


@pytest.mark.slow
def test_bad_weight_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        create_model("mtl", "SD", num_classes=3, backbone="resnet18", pretrained=str(tmp_path / "nope.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read weights file .*junk.pth"):
        create_model("mtl", "SD", num_classes=3, backbone="resnet18", pretrained=str(tmp_path / "junk.pth"))
    sd = _torchvision_resnet18_sd()
    torch.save(sd, tmp_path / "r18.pth")
    with pytest.raises(ValueError, match="does not match the backbone.*missing"):
        create_model("mtl", "SD", num_classes=3, backbone="resnet34", pretrained=str(tmp_path / "r18.pth"))


@pytest.mark.slow
def test_torchvision_resnet101_weights_load_into_the_dilated_encoder(tmp_path):
    """The paper presets' backbone: a torchvision-format ResNet-101 state dict (what
    ``resnet101-63fe2227.pth`` holds) fills every parameter and buffer of the dilated timm encoder."""
    with torch.device("meta"):
        names = torchvision.models.resnet101(weights=None).state_dict()
    g = torch.Generator().manual_seed(5)
    sd = {k: (torch.randint(0, 9, v.shape, generator=g) if v.dtype == torch.int64 else torch.randn(v.shape, generator=g))
          for k, v in names.items()}
    torch.save(sd, tmp_path / "resnet101-tv.pth")
    from densemtl.models.encoder import Encoder

    enc = Encoder("resnet101", str(tmp_path / "resnet101-tv.pth"))
    own = enc.body.state_dict()
    assert len(own) == len([k for k in sd if not k.startswith("fc.")])
    assert all(torch.equal(own[k], sd[k]) for k in own)
    # dilation (output stride 16) is a property of the convolutions, not of the weights
    assert enc.body.layer4[0].conv2.stride == (1, 1) and enc.body.layer4[1].conv2.dilation == (2, 2)


def _fake_hub_cache(root, repo, sd):
    """A Hugging Face cache holding ``repo``'s model.safetensors (the layout hf_hub_download reads)."""
    commit = "0" * 40
    d = root / f"models--{repo.replace('/', '--')}"
    (d / "refs").mkdir(parents=True)
    (d / "refs" / "main").write_text(commit)
    snap = d / "snapshots" / commit
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(snap / "model.safetensors"))


@pytest.mark.slow
def test_timm_weights_tag_resolved_by_timm_offline_from_the_cache(tmp_path, monkeypatch):
    """``pretrained: resnet18.tv_in1k`` goes through timm (here from a filled cache, offline); a
    tag of another architecture, an unknown tag and a failed download are one-line errors."""
    import huggingface_hub.constants as hub

    from densemtl.models.encoder import Encoder, resolve_pretrained

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve_pretrained("resnet101.tv_in1k", "resnet101") == ("timm", "resnet101.tv_in1k")
    assert resolve_pretrained(True, "resnet101") == ("timm", "resnet101")
    assert resolve_pretrained(str(tmp_path / "w.pth"), "resnet101") == ("file", str(tmp_path / "w.pth"))
    with pytest.raises(ValueError, match="'resnet50.tv_in1k' are for the architecture resnet50, but the backbone is resnet18"):
        Encoder("resnet18", "resnet50.tv_in1k")
    with pytest.raises(FileNotFoundError, match="'resnet18.nope': no such file, nor a timm weights tag"):
        Encoder("resnet18", "resnet18.nope")
    with pytest.raises(OSError, match="cannot load the timm weights 'resnet18.tv_in1k'.*local copy.*HF_HUB_OFFLINE"):
        Encoder("resnet18", "resnet18.tv_in1k")  # offline, empty cache
    sd = _torchvision_resnet18_sd()
    _fake_hub_cache(tmp_path / "hub", "timm/resnet18.tv_in1k", sd)
    own = Encoder("resnet18", "resnet18.tv_in1k").body.state_dict()
    assert all(torch.equal(own[k], sd[k]) for k in own)
    m = create_model("stl", "S", num_classes=3, backbone="resnet18", pretrained="resnet18.tv_in1k")
    assert torch.equal(m.encoder.body.state_dict()["layer4.1.conv2.weight"], sd["layer4.1.conv2.weight"])
