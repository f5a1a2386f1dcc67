"""Common base of every densemtl model: input normalisation, size checks, output contract."""

from __future__ import annotations

import torch
import torch.nn as nn

from .registry import task_out_channels

INPUT_NORMS = {
    # ImageNet per-channel statistics (timm / torchvision pretrained weights)
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # the authors' released encoder: (x - 0.45) / 0.225 for every channel
    "authors": ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225)),
}

ModelOutput = dict[str, dict[int, torch.Tensor]]


class MultiTaskModel(nn.Module):
    """Base class.

    ``forward(images)`` takes ``(B, 3, H, W)`` float RGB in [0, 1] with H and W multiples of
    ``size_divisor`` (16) and returns ``{task: {scale: prediction}}`` with one entry per
    scale in ``supervised_scales``; the prediction at scale ``s`` has shape
    ``(B, channels[task], H / 2^s, W / 2^s)`` (raw head outputs: class logits, inverse-depth
    code, unnormalised normals, edge logit). ``eval_scale`` (0, full resolution) is the one
    used for evaluation; see :meth:`predict`.
    """

    size_divisor = 16
    eval_scale = 0
    supports_activation_checkpointing = False  # models that honour set_activation_checkpointing
    activation_checkpointing = False

    def __init__(self, tasks: tuple[str, ...], num_classes: int | None, supervised_scales, input_norm: str = "imagenet"):
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {list(INPUT_NORMS)}, got '{input_norm}'")
        self.tasks = tuple(tasks)
        self.num_classes = num_classes
        self.channels = task_out_channels(tasks, num_classes)
        self.supervised_scales = tuple(sorted(supervised_scales))
        if self.eval_scale not in self.supervised_scales:
            raise ValueError(f"supervised scales {self.supervised_scales} must include the evaluation scale 0")
        mean, std = INPUT_NORMS[input_norm]
        self.input_norm = input_norm
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def exchange_modules(self) -> nn.Module | None:
        """The cross-task exchange blocks added to the decoders (DenseMTL's mTEB), whose size is
        the paper's Table 3 'Param.' column; ``None`` for a model without such blocks."""
        return None

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Recompute the decoders and exchange blocks in the backward pass instead of keeping
        their activations (less memory, one more decoder forward per step)."""
        if enabled and not self.supports_activation_checkpointing:
            raise ValueError(f"train.activation_checkpointing is not supported by {type(self).__name__} "
                             f"(only the 3-ways decoder models: densemtl, padnet3ways)")
        self.activation_checkpointing = bool(enabled)

    def prediction_layers(self) -> dict[str, list[nn.Module]]:
        """The final 1x1 prediction convolutions of each task (overridden by each model)."""
        return {}

    def init_prediction_biases(self) -> None:
        """Set each task's prediction biases to its ``head_bias`` (e.g. depth: the code of 10 m)."""
        from ..tasks import get_task

        for t, layers in self.prediction_layers().items():
            b = get_task(t).head_bias
            if b is None:
                continue
            for conv in layers:
                if conv.bias is not None and conv.bias.device.type != "meta":
                    with torch.no_grad():
                        conv.bias.fill_(b)

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        d = self.size_divisor
        if h % d or w % d:
            nh, nw = max(d, round(h / d) * d), max(d, round(w / d) * d)
            raise ValueError(
                f"input size {h}x{w} (HxW) is not a multiple of {d}; the nearest valid size is "
                f"{nh}x{nw} (resize or pad the image)"
            )

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.pixel_mean.to(x.dtype)) / self.pixel_std.to(x.dtype)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Evaluation-scale predictions ``{task: (B, C_task, H, W)}`` (raw head outputs)."""
        out = self(x)
        return {t: out[t][self.eval_scale] for t in self.tasks}

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}, supervised_scales={self.supervised_scales}, input_norm={self.input_norm}"
