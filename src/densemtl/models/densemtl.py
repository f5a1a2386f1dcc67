"""DenseMTL: 3-ways decoders with mTEB exchange blocks (paper section 3.2)."""

from __future__ import annotations

from .mteb import MTEB, XTAM_DOWNSCALE
from .registry import register_model
from .threeways import ThreeWayNet


@register_model("densemtl", "3-ways decoders + mTEB (xTAM cross-task attention), the paper's method")
def densemtl(
    tasks,
    num_classes,
    backbone,
    pretrained,
    *,
    mteb_scales=(1,),
    fusion="add",
    attention="spatial",
    self_attention=True,
    correlation_attention=True,
    alpha=True,
    kv_downscale="s",
    supervised_scales=(0, 1),
    input_norm="imagenet",
    disparity_head="conv1x1",
):
    """DenseMTL. ``mteb_scales``: subset of {1, 2, 3, 4} (empty = plain 3-ways decoders);
    ``disparity_head``: ``conv1x1`` or ``conv3x3`` (Monodepth2's) prediction convs of the
    self-supervised ``disparity`` task."""
    scales = sorted(set(int(s) for s in mteb_scales))
    bad = [s for s in scales if s not in XTAM_DOWNSCALE]
    if bad:
        raise ValueError(f"mteb_scales must be a subset of {{1, 2, 3, 4}}, got {list(mteb_scales)}")
    if scales and len(tasks) < 2:
        raise ValueError(f"mTEB needs at least two tasks, got {list(tasks)}; use mteb_scales=[] or model 'stl'")
    net = ThreeWayNet(tasks, num_classes, backbone, pretrained, supervised_scales, input_norm, disparity_head)
    for s in scales:
        net.exchanges[str(s)] = MTEB(
            net.tasks, net.widths[s], XTAM_DOWNSCALE[s], fusion=fusion, attention=attention,
            self_attention=self_attention, correlation_attention=correlation_attention, alpha=alpha,
            kv_downscale=kv_downscale,
        )
    net.mteb_scales = tuple(scales)
    return net
