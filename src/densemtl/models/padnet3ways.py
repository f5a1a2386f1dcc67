"""3-ways PAD-Net (Hoyer et al. 2021): 3-ways decoders + PAD-Net distillation at scale 2."""

from __future__ import annotations

from .blocks import CrossTaskDistillation
from .registry import register_model
from .threeways import ThreeWayNet


@register_model("padnet3ways", "3-ways decoders + PAD-Net distillation after the scale-2 block")
def padnet3ways(tasks, num_classes, backbone, pretrained, *, distill_scale=2, supervised_scales=(0, 2), input_norm="imagenet",
                disparity_head="conv1x1"):
    """3-ways PAD-Net; intermediate predictions at ``distill_scale`` are taken before distillation;
    ``disparity_head`` as in ``densemtl``."""
    if int(distill_scale) not in range(1, 5):
        raise ValueError(f"distill_scale must be in 1..4, got {distill_scale}")
    net = ThreeWayNet(tasks, num_classes, backbone, pretrained, supervised_scales, input_norm, disparity_head)
    if len(net.tasks) > 1:
        net.exchanges[str(distill_scale)] = CrossTaskDistillation(net.tasks, net.widths[int(distill_scale)])
    return net
