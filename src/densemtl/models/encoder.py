"""Shared image encoder: any timm backbone through the ``features_only`` contract.

The encoder returns 5 feature maps at reductions 2, 4, 8, 16, 16 (scales 1, 2, 3, 4, 4): for a
ResNet the stem, layer1, layer2, layer3 and the dilated layer4 (output stride 16).
Channel counts are read from the backbone (ResNet-101: 64/256/512/1024/2048,
ResNet-18: 64/64/128/256/512).
"""

from __future__ import annotations

import os
from pathlib import Path

import timm
import torch
import torch.nn as nn

from ..fileio import UnreadableFile, torch_load

EXPECTED_REDUCTIONS = (2, 4, 8, 16, 16)
_STRIP_PREFIXES = ("module.", "model.", "backbone.encoder.", "encoder.", "backbone.")


class Encoder(nn.Module):
    """Wraps ``timm.create_model(name, features_only=True, output_stride=16)``.

    Args:
        name: timm model name (e.g. ``resnet101``, ``resnet18``).
        pretrained: ``False``; ``True`` for timm's default pretrained weights of ``name``; a timm
            weights tag of the same architecture (``resnet101.tv_in1k``: torchvision's ImageNet
            V1 weights); both download unless cached (see :func:`resolve_pretrained`); or a path
            to a local ``.pth``/``.pt``/``.safetensors`` state dict in torchvision or timm naming
            (classifier keys are ignored).
    """

    def __init__(self, name: str = "resnet101", pretrained: bool | str | os.PathLike = False):
        super().__init__()
        kind, source = resolve_pretrained(pretrained, name)
        try:
            self.body = create_backbone(source if kind == "timm" else name, kind == "timm")
        except RuntimeError as e:
            if name not in timm.list_models():
                raise ValueError(f"unknown timm backbone '{name}' (see timm.list_models())") from e
            raise
        info = self.body.feature_info
        self.channels: list[int] = list(info.channels())
        self.reductions: list[int] = list(info.reduction())
        if tuple(self.reductions) != EXPECTED_REDUCTIONS:
            raise ValueError(
                f"backbone '{name}' gives feature reductions {self.reductions}; densemtl needs "
                f"{list(EXPECTED_REDUCTIONS)} (5 stages, output stride 16)"
            )
        if kind == "file":
            load_backbone_weights(self.body, source)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, 3, H, W)`` normalised image -> 5 maps ``(B, C_k, H / r_k, W / r_k)``."""
        return self.body(x)


WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


def resolve_pretrained(pretrained, name: str) -> tuple[str, str | None]:
    """What ``pretrained`` asks for: ``("none", None)``, ``("timm", "<arch>.<tag>")`` (timm's
    weights, resolved and downloaded by timm; ``True`` = the default tag of ``name``) or
    ``("file", path)``. A string is a file when it names an existing file or ends with a weights
    suffix, else a timm weights tag, which must be one of ``timm.list_pretrained()`` for the
    architecture ``name``."""
    if pretrained in (False, None, ""):
        return "none", None
    if pretrained is True:
        return "timm", name
    text = str(pretrained)
    if Path(text).is_file() or text.lower().endswith(WEIGHT_SUFFIXES) or os.sep in text or "/" in text:
        return "file", text
    arch, _, tag = text.partition(".")
    if not tag or text not in timm.list_pretrained(f"{arch}.*"):
        raise FileNotFoundError(f"pretrained weights '{text}': no such file, nor a timm weights tag "
                                f"(e.g. {name}.tv_in1k; see timm.list_pretrained('{name}.*'))")
    if arch != name:
        raise ValueError(f"pretrained weights '{text}' are for the architecture {arch}, but the backbone is {name}")
    return "timm", text


def create_backbone(name: str, pretrained: bool) -> nn.Module:
    """The features-only dilated (output stride 16) timm backbone; ``pretrained`` loads timm's
    weights for ``name`` (``arch`` or ``arch.tag``). A failed download is an ``OSError`` that
    says how to work offline."""
    kwargs = dict(features_only=True, output_stride=16, out_indices=(0, 1, 2, 3, 4))
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as e:  # no network, not in the cache: the hub's and HTTP clients' own errors
        if not timm.is_model(name):
            raise
        cfg = timm.models.get_pretrained_cfg(name)
        url = getattr(cfg, "url", None) or (f"https://huggingface.co/{cfg.hf_hub_id}" if getattr(cfg, "hf_hub_id", None) else None)
        why = (str(e).strip().splitlines() or [""])[0]
        raise OSError(f"cannot load the timm weights '{name}' ({type(e).__name__}: {why}); without network, set "
                      f"model.pretrained to a local copy of them" + (f" ({url})" if url else "")
                      + " or fill the Hugging Face cache and set HF_HUB_OFFLINE=1") from None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a weights file (.pth/.pt/.bin via ``torch.load``, or .safetensors)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch_load(path)
    except UnreadableFile as e:
        raise ValueError(f"cannot read weights file {path}: {e.text} ({e.detail})") from None
    except Exception as e:  # corrupt or truncated safetensors file
        raise ValueError(f"cannot read weights file {path}: {e}") from e
    for key in ("state_dict", "model", "model_state"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping from names to tensors)")
    return sd


def load_backbone_weights(body: nn.Module, path: str | os.PathLike) -> None:
    """Load a local state dict into a timm features-only backbone, strictly.

    Common prefixes (``module.``, ``backbone.encoder.`` ...) are stripped and classifier
    weights (``fc.*``, ``head.*``, ``classifier.*``) ignored. Any backbone parameter left
    unfilled, or a shape mismatch, raises with the offending keys.
    """
    load_backbone_state(body, read_state_dict(path), str(path))


def load_backbone_state(body: nn.Module, sd: dict[str, torch.Tensor], source: str = "state dict") -> None:
    """:func:`load_backbone_weights` for a state dict already in memory (``source`` names it in errors)."""
    path = source
    own = body.state_dict()
    cleaned: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        for p in _STRIP_PREFIXES:
            if k.startswith(p) and k[len(p):] in own:
                k = k[len(p):]
                break
        cleaned[k] = v
    used = {k: v for k, v in cleaned.items() if k in own}
    missing = sorted(k for k in set(own) - set(used) if not k.endswith("num_batches_tracked"))
    bad_shape = sorted(k for k, v in used.items() if tuple(v.shape) != tuple(own[k].shape))
    if missing or bad_shape:
        msg = [f"weights file {path} does not match the backbone"]
        if missing:
            msg.append(f"{len(missing)} missing key(s), e.g. {missing[:5]}")
        if bad_shape:
            msg.append(
                "shape mismatch: "
                + ", ".join(f"{k} {tuple(used[k].shape)} vs {tuple(own[k].shape)}" for k in bad_shape[:5])
            )
        raise ValueError("; ".join(msg))
    body.load_state_dict(used, strict=False)
