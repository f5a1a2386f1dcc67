"""Multi-task unsupervised domain adaptation: patch discriminators, alignment maps, schedules."""

from .adversarial import SOURCE_LABEL, TARGET_LABEL, bce_to_label, build_discriminator_optimizer, set_requires_grad
from .alignment import AdversarialAlignment, DomainCritic
from .discriminator import PatchDiscriminator, build_discriminators, discriminator_key, patch_output_size
from .maps import alignment_maps, depth_map, edge_map, map_channels, normals_map, self_information
from .schedule import PolyDecay, build_poly_scheduler, poly_factor, poly_lr

__all__ = [
    "SOURCE_LABEL", "TARGET_LABEL", "bce_to_label", "build_discriminator_optimizer", "set_requires_grad",
    "AdversarialAlignment", "DomainCritic", "PatchDiscriminator", "build_discriminators", "discriminator_key", "patch_output_size",
    "alignment_maps", "depth_map", "edge_map", "map_channels", "normals_map", "self_information", "PolyDecay",
    "build_poly_scheduler", "poly_factor", "poly_lr",
]
