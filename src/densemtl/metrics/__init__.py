"""Streaming metrics and the multi-task Delta."""

from .base import Meter
from .delta import multitask_delta
from .dense import DepthMeter, NormalsMeter, SegmentationMeter
from .edges import EdgeMeter

__all__ = ["Meter", "SegmentationMeter", "DepthMeter", "NormalsMeter", "EdgeMeter", "multitask_delta"]
