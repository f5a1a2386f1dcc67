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
